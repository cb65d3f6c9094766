"""Merging fine-tunes (scripts/merge.py, recipes/merges/): bad input refused with one line before
any work; every shipped merge recipe run for real with mergekit on two tiny fine-tunes and the
tiny base; the linear merge checked tensor by tensor; a merge converted, served by llama.cpp
and compared beside its parents."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, evaluate_gguf, run

RECIPE_DIR = ROOT / "recipes" / "merges"
MERGES = sorted(p.stem for p in RECIPE_DIR.glob("*.yml"))
SCRIPT = ROOT / "scripts" / "merge.py"
# the projections LoRA trains: where the parents differ from each other
TRAINED = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight", "gate_proj.weight",
           "up_proj.weight", "down_proj.weight")
BF16_REL = 2.0 ** -7  # bfloat16 keeps 8 significant bits: a rounding error below scale / 128


def merge(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True, cwd=cwd)


def merge_fakes(tmp_path: Path, outputs: Path, recipe: Path, out: Path | None = None) -> subprocess.CompletedProcess:
    """scripts/merge.py on the fake runs of `outputs` and the fake base, into tmp_path/m (or `out`)."""
    return merge(recipe, "--outputs", outputs, "--base-dir", tmp_path / "base", "--out", out or tmp_path / "m")


def refused(p: subprocess.CompletedProcess, *words: str) -> None:
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1 and lines[0].startswith("merge: error: "), p.stderr
    for w in words:
        assert w in lines[0], lines[0]


# ---------------------------------------------------------------------------- bad input (fast)


def fake_model(folder: Path, *, hidden: int = 256, vocab: dict | None = None, arch: str = "Qwen2ForCausalLM") -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"architectures": [arch], "hidden_size": hidden,
                                                    "num_hidden_layers": 2, "vocab_size": 151936}))
    tok = {"model": {"type": "BPE", "vocab": vocab or {"a": 0, "b": 1}, "merges": []}, "added_tokens": []}
    (folder / "tokenizer.json").write_text(json.dumps(tok))
    return folder


@pytest.fixture
def outputs(tmp_path):
    """Two finished runs (full weights in <run>/merged) and a local base, all fake: the checks
    come before mergekit is started."""
    out = tmp_path / "outputs"
    fake_model(out / "qwen3b-physics-qa" / "merged")
    fake_model(out / "qwen3b-physics-fulltext" / "merged")
    fake_model(tmp_path / "base")
    return out


def recipe_with(tmp_path: Path, name: str, change) -> Path:
    cfg = yaml.safe_load((RECIPE_DIR / f"{name}.yml").read_text())
    change(cfg)
    path = tmp_path / f"{name}-changed.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("name", MERGES)
def test_merge_recipe_header_names_purpose_parents_and_commands(name):
    text = (RECIPE_DIR / f"{name}.yml").read_text()
    header = text.split("\nmerge_method:")[0]
    for field in ("Purpose:", "Parents:", "Command:", "Then:", "Compare:"):
        assert f"# {field}" in header, (name, field)
    assert f"scripts/merge.py recipes/merges/{name}.yml" in header
    assert f"scripts/convert.py outputs/merges/{name}" in header
    cfg = yaml.safe_load(text)
    assert cfg["merge_method"] in ("linear", "slerp", "ties", "dare_ties") and cfg["dtype"] == "bfloat16"


def test_a_missing_parent_is_named_and_nothing_is_written(tmp_path, outputs):
    shutil.rmtree(outputs / "qwen3b-physics-qa")
    p = merge_fakes(tmp_path, outputs, RECIPE_DIR / "qa-instruct-linear.yml")
    refused(p, "outputs/qwen3b-physics-qa/merged", "does not exist")
    assert not (tmp_path / "m").exists()


def test_parents_of_different_shapes_or_architectures_are_refused(tmp_path, outputs):
    shutil.rmtree(outputs / "qwen3b-physics-qa")
    fake_model(outputs / "qwen3b-physics-qa" / "merged", hidden=512)
    p = merge_fakes(tmp_path, outputs, RECIPE_DIR / "fulltext-qa-ties.yml")
    refused(p, "hidden_size", "256", "512")
    shutil.rmtree(outputs / "qwen3b-physics-qa")
    fake_model(outputs / "qwen3b-physics-qa" / "merged", arch="LlamaForCausalLM")
    p = merge_fakes(tmp_path, outputs, RECIPE_DIR / "fulltext-qa-ties.yml")
    refused(p, "architectures", "LlamaForCausalLM")
    assert not (tmp_path / "m").exists()


def test_parents_with_different_tokenizers_are_refused(tmp_path, outputs):
    shutil.rmtree(outputs / "qwen3b-physics-qa")
    fake_model(outputs / "qwen3b-physics-qa" / "merged", vocab={"a": 0, "c": 1})
    p = merge_fakes(tmp_path, outputs, RECIPE_DIR / "qa-instruct-linear.yml")
    refused(p, "different tokenizers")


@pytest.mark.parametrize("name,change,words", [
    ("qa-instruct-linear", lambda c: c["models"][0]["parameters"].update(weight=0.65), ["sum to 0.9", "not 1"]),
    ("qa-instruct-linear", lambda c: c["models"][1].pop("parameters"), ["weight"]),
    ("qa-instruct-slerp", lambda c: c["parameters"].update(t=1.5), ["parameters.t"]),
    ("qa-instruct-slerp", lambda c: c.pop("base_model"), ["exactly two"]),
    ("fulltext-qa-ties", lambda c: c["models"][0]["parameters"].update(density=0.0), ["density"]),
    ("fulltext-qa-dare-ties", lambda c: c.pop("base_model"), ["needs base_model"]),
    ("fulltext-qa-ties", lambda c: c.update(merge_method="task_magic"), ["not one of"]),
])
def test_weights_the_method_cannot_use_are_refused(tmp_path, outputs, name, change, words):
    p = merge_fakes(tmp_path, outputs, recipe_with(tmp_path, name, change))
    refused(p, *words)
    assert not (tmp_path / "m").exists()


def test_a_training_recipe_or_a_folder_of_user_files_is_refused(tmp_path, outputs):
    refused(merge(ROOT / "recipes" / "qwen3b-physics.yml"), "not a merge recipe")
    refused(merge(tmp_path / "nope.yml"), "does not exist")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    p = merge_fakes(tmp_path, outputs, RECIPE_DIR / "qa-instruct-linear.yml", out=mine)
    refused(p, "notes.txt")
    assert (mine / "notes.txt").read_text() == "keep me" and len(list(mine.iterdir())) == 1


# ---------------------------------------------------------------------------- real merges (slow)


def tensor_report(train_python: Path, out: Path, a: Path, b: Path) -> dict:
    """Per tensor: |out - (0.75 a + 0.25 b)|, the scale, and |out - a|, |out - b| (max over elements)."""
    code = r"""
import json, sys
from pathlib import Path
from safetensors.torch import load_file
def load(d):
    t = {}
    for f in sorted(Path(d).glob("*.safetensors")):
        t.update(load_file(str(f)))
    return t
out, a, b = (load(d) for d in sys.argv[1:4])
res = {}
for k in out:
    if k in a and k in b:
        o, x, y = out[k].float(), a[k].float(), b[k].float()
        e = 0.75 * x + 0.25 * y
        res[k] = {"err": (o - e).abs().max().item(), "scale": e.abs().max().item(),
                  "from_a": (o - x).abs().max().item(), "from_b": (o - y).abs().max().item()}
print(json.dumps(res))
"""
    p = run([train_python, "-c", code, out, a, b])
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def merge_parents(tmp_path_factory, converted, trained_run, completion_run):
    """An outputs folder as the merge recipes expect it: qwen3b-physics-qa = the abstracts-chat
    run (merged weights present), qwen3b-physics-fulltext = the completion run's adapter and
    recipe only (merged by scripts/merge.py first)."""
    outputs = tmp_path_factory.mktemp("merge-outputs")
    _, chat_work = trained_run
    comp_recipe, comp_work = completion_run
    (outputs / "qwen3b-physics-qa").symlink_to(chat_work / "out")
    ft = outputs / "qwen3b-physics-fulltext"
    ft.mkdir()
    for f in (comp_work / "out").glob("adapter_*"):
        shutil.copy2(f, ft / f.name)
    shutil.copy2(comp_recipe, ft / "recipe.yml")
    return outputs


@pytest.fixture(scope="session")
def merges(merge_parents, tiny_model_dir, tmp_path_factory):
    """Every shipped merge recipe, run: name -> (output folder, the CompletedProcess)."""
    root = tmp_path_factory.mktemp("merges")
    done = {}
    for name in MERGES:
        p = run([sys.executable, SCRIPT, RECIPE_DIR / f"{name}.yml", "--outputs", merge_parents,
                 "--base-dir", tiny_model_dir, "--out", root / name])
        done[name] = (root / name, p)
    return done


@pytest.mark.slow
@pytest.mark.parametrize("name", MERGES)
def test_each_merge_recipe_runs_on_the_tiny_fine_tunes(merges, merge_parents, tiny_model_dir, train_python, name):
    out, proc = merges[name]
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    rec = json.loads((out / "merge.json").read_text())
    assert rec["recipe_name"] == name and rec["merge_method"] in name.replace("-", "_")
    assert (out / "merge-recipe.yml").read_text() == (RECIPE_DIR / f"{name}.yml").read_text()
    runs = {p.get("run") for p in rec["parents"]} - {None}
    expected = {"qwen3b-physics-qa"} if name.startswith("qa-") else {"qwen3b-physics-qa", "qwen3b-physics-fulltext"}
    assert runs == expected
    assert all(p.get("weights_sha256") for p in rec["parents"])
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "staging folders left behind"
    qa = merge_parents / "qwen3b-physics-qa" / "merged"
    other = tiny_model_dir if name.startswith("qa-") else merge_parents / "qwen3b-physics-fulltext" / "merged"
    report = {k: v for k, v in tensor_report(train_python, out, qa, other).items() if k.endswith(TRAINED)}
    assert len(report) == 14  # 7 projections x 2 layers
    for k, r in report.items():
        tol = r["scale"] * BF16_REL
        if name == "qa-instruct-linear":  # exactly 0.75 fine-tune + 0.25 Instruct, to bfloat16 rounding
            assert r["err"] <= tol, (k, r)
            assert min(r["from_a"], r["from_b"]) > 4 * tol, (k, r)  # and that differs from both
        else:
            assert min(r["from_a"], r["from_b"]) > 2 * tol, (k, r)


@pytest.mark.slow
def test_the_unmerged_parent_was_merged_into_full_weights_first(merges, merge_parents):
    _, proc = merges["fulltext-qa-ties"]
    assert (merge_parents / "qwen3b-physics-fulltext" / "merged" / "config.json").is_file()
    assert "merging the adapter of" in merges["fulltext-qa-dare-ties"][1].stderr + proc.stderr


@pytest.mark.slow
def test_rerun_replaces_only_its_own_output(merges, merge_parents, tiny_model_dir):
    out, _ = merges["qa-instruct-linear"]
    before = json.loads((out / "merge.json").read_text())
    run([sys.executable, SCRIPT, RECIPE_DIR / "qa-instruct-linear.yml", "--outputs", merge_parents,
         "--base-dir", tiny_model_dir, "--out", out])
    after = json.loads((out / "merge.json").read_text())
    assert after["parents"] == before["parents"]


@pytest.mark.slow
def test_a_merge_converts_serves_and_sits_beside_its_parents_in_the_report(merges, converted, trained_run, tiny_gguf,
                                                                          tmp_path):
    from tests.test_convert_verify import gguf_fields, llama

    out, _ = merges["qa-instruct-linear"]
    run([sys.executable, ROOT / "scripts" / "convert.py", out, "--out", tmp_path / "models", "--quants", "Q4_K_M"],
        env={"CUDA_VISIBLE_DEVICES": ""})
    models = tmp_path / "models" / "qa-instruct-linear"
    assert {p.name for p in models.glob("*.gguf")} == {"qa-instruct-linear-F16.gguf", "qa-instruct-linear-Q4_K_M.gguf"}
    meta = gguf_fields(models / "qa-instruct-linear-Q4_K_M.gguf")
    tags = meta["general.tags"]
    assert "recipe:qa-instruct-linear" in tags and "merge-method:linear" in tags
    assert "parent:qwen3b-physics-qa" in tags and "parent:Qwen/Qwen2.5-3B-Instruct" in tags
    assert "linear merge" in meta["general.description"] and '{"weight": 0.75}' in meta["general.description"]
    assert "A linear merge" in (models / "README.md").read_text()
    m = llama(models / "qa-instruct-linear-Q4_K_M.gguf")
    r = m.create_completion("The speed of light is", max_tokens=6, temperature=0.0,
                            logit_bias={151645: -100.0, 151643: -100.0})
    assert r["usage"]["completion_tokens"] == 6 and r["choices"][0]["text"]

    chat_models, _ = converted
    _, chat_work = trained_run
    data = chat_work / "data" / "abstracts-chat"
    results = [evaluate_gguf("base", tiny_gguf, data, tmp_path),
               evaluate_gguf("qwen3b-physics-qa", chat_models / "recipe-Q4_K_M.gguf", data, tmp_path),
               evaluate_gguf("qa-instruct-linear", models / "qa-instruct-linear-Q4_K_M.gguf", data, tmp_path)]
    run([sys.executable, ROOT / "scripts" / "compare.py", *results, "--base", "base", "--out", tmp_path / "report"])
    report = (tmp_path / "report" / "report.md").read_text()
    for name in ("base", "qwen3b-physics-qa", "qa-instruct-linear"):
        assert f"| {name} |" in report
