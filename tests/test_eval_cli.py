"""evaluate.py: aggregation and one-line errors (exit 2) for bad input."""

import subprocess
import sys
from pathlib import Path

import pytest

from qwenphysics.evaluation import runner

ROOT = Path(__file__).resolve().parent.parent


def test_aggregate_counts_by_category_and_language():
    recs = [
        {"category": "quantum", "language": "en", "score": 1},
        {"category": "quantum", "language": "es", "score": 0},
        {"category": "relativity", "language": "en", "score": 1},
        {"category": "relativity", "language": "en", "score": 1},
    ]
    agg = runner.aggregate(recs)
    assert (agg["correct"], agg["total"], agg["accuracy"]) == (3, 4, 0.75)
    assert agg["by_category"]["quantum"] == {"correct": 1, "total": 2, "accuracy": 0.5}
    assert agg["by_category"]["relativity"]["accuracy"] == 1.0
    assert agg["by_language"]["es"] == {"correct": 0, "total": 1, "accuracy": 0.0}
    assert runner.aggregate([])["accuracy"] is None


def _run(*args):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def fake_gguf(tmp_path):
    p = tmp_path / "m.gguf"
    p.write_bytes(b"GGUF" + b"\0" * 60)
    return p


@pytest.mark.parametrize("args,fragment", [
    ([], "--base-url URL"),
    (["--gguf", "/nonexistent.gguf"], "no such file"),
    (["--base-url", "localhost:8080"], "must start with http"),
    (["--gguf", "{gguf}", "--data", "/nonexistent-dir"], "no test.jsonl"),
    (["--gguf", "{gguf}", "--max-tokens", "100000"], "--max-tokens"),
    (["--gguf", "{gguf}", "--limit", "0"], "--limit"),
    (["--gguf", "{gguf}", "--lm-eval-tasks", "hellaswag"], "unknown task"),
    (["--gguf", "{gguf}", "--categories", "cooking"], "--categories"),
    (["--gguf", "{notgguf}"], "not a GGUF file"),
    (["--base-url", "http://127.0.0.1:9/v1"], "cannot reach"),
])
def test_bad_input_gives_one_line_and_exit_2(tmp_path, fake_gguf, capsys, args, fragment):
    notgguf = tmp_path / "x.gguf"
    notgguf.write_text("hello")
    args = [a.format(gguf=fake_gguf, notgguf=notgguf) for a in args]
    assert runner.main([*args, "--out", str(tmp_path / "r.json")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evaluate: ") and fragment in lines[0], lines
    assert not (tmp_path / "r.json").exists()


def test_script_reports_bad_input_with_exit_2(tmp_path):
    p = _run("--gguf", str(tmp_path / "missing.gguf"))
    assert p.returncode == 2
    assert p.stderr.strip() == f"evaluate: --gguf {tmp_path / 'missing.gguf'}: no such file"


def test_usage_docstring_is_runnable_help():
    p = _run("--help")
    assert p.returncode == 0 and "--ppl-max-tokens" in p.stdout
    assert "Usage:" in (ROOT / "scripts" / "evaluate.py").read_text()
