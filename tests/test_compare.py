"""compare.py: report.md with deltas and valid PNGs from hand-written results and trainer states."""

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from qwenphysics.evaluation import compare
from qwenphysics.evaluation.exceptions import EvalError

ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _results(name, acc_by_cat, ppl, recipe=None, lm=None):
    by_cat = {c: {"correct": k, "total": n, "accuracy": k / n} for c, (k, n) in acc_by_cat.items()}
    correct = sum(k for k, _ in acc_by_cat.values())
    total = sum(n for _, n in acc_by_cat.values())
    return {
        "schema_version": 1, "name": name, "created": "2025-01-01T00:00:00+00:00",
        "model": {"backend": "endpoint", "model": name, "gguf": {"sha256": "ab" * 32}},
        "recipe": {"name": recipe} if recipe else None,
        "dataset_manifest": {"path": "m.json", "sha256": "cd" * 32} if recipe else None,
        "settings": {"question_set": {"sha256": "q" * 64}},
        "qa": {"questions": [], "correct": correct, "total": total, "accuracy": correct / total,
               "by_category": by_cat},
        "perplexity": {"ppl": ppl, "ci95": [ppl * 0.9, ppl * 1.1], "tokens": 4096, "documents": 12,
                       "test_sha256": "t", "n_ctx": 512, "max_tokens": 4096},
        "lm_eval": lm or {"sciq": {"skipped": "skipped: lm_eval not installed"}},
        "timings": {"total_s": 1.0},
    }


def _state(path, losses, evals, step):
    path.parent.mkdir(parents=True, exist_ok=True)
    hist = [{"loss": v, "step": s, "epoch": s / 100} for s, v in losses]
    hist += [{"eval_loss": v, "step": s} for s, v in evals]
    path.write_text(json.dumps({"global_step": step, "log_history": hist}))


@pytest.fixture
def inputs(tmp_path):
    base = _results("base", {"quantum": (2, 4), "relativity": (1, 4)}, 20.0,
                    lm={"sciq": {"metrics": {"acc": 0.50, "acc_norm": 0.40}}})
    tuned = _results("qlora-a", {"quantum": (3, 4), "relativity": (1, 4)}, 15.0, recipe="qlora-a",
                     lm={"sciq": {"metrics": {"acc": 0.55, "acc_norm": 0.45}}})
    paths = []
    for r in (base, tuned):
        p = tmp_path / f"{r['name']}.json"
        p.write_text(json.dumps(r))
        paths.append(p)
    run = tmp_path / "outputs" / "qlora-a"
    # an older checkpoint and a newer one: the newer (step 20) must be read
    _state(run / "checkpoint-10" / "trainer_state.json", [(5, 3.0), (10, 2.5)], [(10, 2.8)], 10)
    _state(run / "checkpoint-20" / "trainer_state.json",
           [(5, 3.0), (10, 2.5), (15, 2.1), (20, 1.9)], [(10, 2.8), (20, 2.2)], 20)
    other = tmp_path / "outputs" / "base-run"
    _state(other / "trainer_state.json", [(1, 4.0), (2, 3.5)], [], 2)
    return paths, run, other


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_report_tables_deltas_and_plots(tmp_path, inputs):
    paths, run, other = inputs
    out = tmp_path / "report"
    runs = compare.collect_runs(paths, "base", [f"qlora-a={run}", f"base={other}"])
    text = compare.build_report(runs, out)
    assert (out / "report.md").read_text() == text
    # overall QA: 3/8 -> 4/8 is +12.5 points
    assert "| base | 3/8 | 37.5% | base |" in text
    assert "| qlora-a | 4/8 | 50.0% | +12.5 pp |" in text
    # per category with deltas
    assert "| quantum | 50.0% | 75.0% (+25.0 pp) |" in text
    assert "| relativity | 25.0% | 25.0% (+0.0 pp) |" in text
    # perplexity 20 -> 15
    assert "| qlora-a | 15.000 | 13.500–16.500 | -5.000 (-25.0%) | 4096 | 12 | interval apart from the base's |" in text
    assert "| base | 20.000 | 18.000–22.000 | base | 4096 | 12 |  |" in text
    # lm-eval: acc_norm preferred, delta against base
    assert "| sciq | 0.400 (acc_norm) | 0.450 (+0.050) |" in text
    # training: newest checkpoint's final losses
    assert "| qlora-a | 20 | 1.9000 | 2.2000 | 2.2000 |" in text
    assert "checkpoint-20" in text and "checkpoint-10" not in text
    for name in ("qa_by_category.png", "perplexity.png", "loss_curves.png"):
        assert f"]({name})" in text
        w, h = _png_size(out / name)
        assert w > 100 and h > 100
    from PIL import Image

    with Image.open(out / "loss_curves.png") as im:
        im.verify()


def test_base_is_first_and_missing_parts_are_reported(tmp_path, inputs):
    paths, _, _ = inputs
    data = json.loads(paths[1].read_text())
    data["perplexity"] = {"skipped": "skipped: no --data given"}
    paths[1].write_text(json.dumps(data))
    runs = compare.collect_runs(list(reversed(paths)), "base", [])
    assert [r.name for r in runs] == ["base", "qlora-a"]
    text = compare.build_report(runs, tmp_path / "r")
    assert "| qlora-a | — | — | — | — | — | skipped: no --data given |" in text
    assert "No training output dir was given" in text
    assert not (tmp_path / "r" / "loss_curves.png").exists()


def test_trainer_state_in_dir_itself(tmp_path):
    _state(tmp_path / "trainer_state.json", [(1, 2.0), (2, 1.0)], [(2, 1.5)], 2)
    hist = compare.read_loss_history(tmp_path)
    assert hist["train"] == [(1, 2.0), (2, 1.0)] and hist["eval"] == [(2, 1.5)]


@pytest.mark.parametrize("setup,args,fragment", [
    ("none", ["{a}", "--out", "{out}", "--base", "nope"], "--base 'nope'"),
    ("none", ["{a}", "--out", "{out}", "--train-dir", "base"], "expected NAME=DIR"),
    ("none", ["{a}", "--out", "{out}", "--train-dir", "ghost={tmp}"], "no run named 'ghost'"),
    ("none", ["{a}", "--out", "{out}", "--train-dir", "base={tmp}/empty"], "no trainer_state.json"),
    ("bad", ["{bad}", "--out", "{out}"], "not JSON"),
    ("none", ["{a}", "{a}", "--out", "{out}"], "two results are named"),
    ("none", ["{tmp}/missing.json", "--out", "{out}"], "cannot read"),
])
def test_cli_errors_are_one_line_exit_2(tmp_path, inputs, capsys, setup, args, fragment):
    paths, _, _ = inputs
    (tmp_path / "empty").mkdir()
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    args = [x.format(a=paths[0], out=tmp_path / "o", tmp=tmp_path, bad=bad) for x in args]
    assert compare.main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("compare: ") and fragment in lines[0], lines


def test_subset_warning_when_runs_answered_different_questions(tmp_path, inputs):
    paths, _, _ = inputs
    data = json.loads(paths[1].read_text())
    data["qa"]["questions"] = [{"id": "qm-pauli-exclusion"}]
    paths[1].write_text(json.dumps(data))
    text = compare.build_report(compare.collect_runs(paths, None, []), tmp_path / "r")
    assert "answered different subsets of the questions" in text
    data["settings"]["question_set"]["sha256"] = "other"
    paths[1].write_text(json.dumps(data))
    text = compare.build_report(compare.collect_runs(paths, None, []), tmp_path / "r")
    assert "asked different question sets" in text


def test_cli_writes_report(tmp_path, inputs):
    paths, run, _ = inputs
    out = tmp_path / "cmp"
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare.py"), *map(str, paths),
                        "--train-dir", f"qlora-a={run}", "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "+12.5 pp" in (out / "report.md").read_text()
    assert _png_size(out / "loss_curves.png")[0] > 100


def test_load_results_rejects_other_json(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"hello": 1}))
    with pytest.raises(EvalError, match="not a results JSON"):
        compare.load_results(p)
