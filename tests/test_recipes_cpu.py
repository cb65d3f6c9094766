"""Every recipe really trains on CPU, rewritten mechanically (slow tier).

Each recipe goes through `qwenphysics.recipes.cpu_variant` (tiny random Qwen2.5 with the real
tokenizer, fp32, sdpa, no fused kernels, no DeepSpeed/FSDP/Ray, a few 512-token steps) with
data the builders make from the project's sample, and trains through its header's launch
command, `accelerate launch -m axolotl.cli.train` (what `axolotl train` runs). The default
recipe goes further: `axolotl preprocess` and a token-level label check, a resumed second
run, then `axolotl merge-lora` and generation from the merged model. The full-text and mixed
recipes are merged and generate too. A context whose builder spec is missing fails its test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from qwenphysics.recipes import (
    RECIPES_DIR,
    checkpoints,
    cpu_signature,
    cpu_variant,
    dataset_entries,
    load_recipe,
    parse_data_path,
    trainer_state,
    write_recipe,
)
from tests.conftest import ROOT, run
from tests.recipe_checks import all_finite, expected_spans, logged_losses, read_header, recipe_paths, trained_spans

pytestmark = pytest.mark.slow

RECIPES = recipe_paths()
IDS = [str(p.relative_to(RECIPES_DIR)) for p in RECIPES]
DEFAULT = "qwen3b-physics.yml"
# Merged and generated from, besides the default: one per kind of data.
MERGED = {"qwen3b-physics-fulltext.yml", "qwen3b-physics-mixed.yml"}
TRAIN_BIN = ROOT / ".venv-train" / "bin"
# Few, short steps: the tiny model's 151,936-row vocabulary dominates the CPU time.
SMOKE = dict(max_steps=2, save_steps=2, sequence_len=512, gradient_accumulation_steps=1)


class CpuData:
    """Training contexts built on demand from the sample with the builders' own CLI."""

    def __init__(self, root: Path, sample: Path, teacher_built=None):
        self.root, self.sample = root, sample
        self.teacher_built = teacher_built  # () -> a physics-qa build (tests.conftest.qa_build)

    def ensure(self, cfg: dict) -> Path:
        from dataset_builders import spec as spec_mod

        for context in sorted({parse_data_path(e["path"])["context"]
                               for _, e in dataset_entries(cfg)}):
            out = self.root / context
            if (out / "manifest.json").exists():
                continue
            spec = spec_mod.load(context)  # a missing spec fails here, naming itself
            if spec.options.get("generator") == "teacher":  # built once, with the tiny teacher
                shutil.copytree(self.teacher_built().out, out)
                continue
            inputs = ["--input", self.sample / "arxiv-metadata-sample.jsonl"]
            if spec.source != "metadata":  # full text and mixtures read the LaTeX sources
                inputs += ["--input", self.sample / "src"]
            run([ROOT / ".venv" / "bin" / "python", "-m", "dataset_builders", "build",
                 "--spec", context, *inputs, "--out", out, "--no-progress"])
        return self.root


@pytest.fixture(scope="session")
def cpu_data(sample_dir, tmp_path_factory, request) -> CpuData:
    return CpuData(tmp_path_factory.mktemp("cpu-data"), sample_dir,
                   teacher_built=lambda: request.getfixturevalue("qa_build"))


@pytest.fixture(scope="session")
def shared_prepared(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("prepared")


def train_env() -> dict:
    # `axolotl train` execs `accelerate` from PATH; PYTHONPATH lets Axolotl import the
    # plugin the CPU rewrite adds (qwenphysics.recipes.CpuQLoRAPlugin).
    return {"PATH": f"{TRAIN_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}


def axolotl(*args, log: Path):
    p = run(list(args), env=train_env(), timeout=1200)
    log.write_text(p.stdout + "\n--- stderr ---\n" + p.stderr, encoding="utf-8")
    return p.stdout + p.stderr


def cpu_recipe(rel: str, work: Path, data: CpuData, model: Path, prepared: Path | None,
               **overrides) -> tuple[Path, dict]:
    cfg = load_recipe(RECIPES_DIR / rel)
    cpu = cpu_variant(cfg, model_dir=model, data_root=data.ensure(cfg),
                      output_dir=work / "out", prepared_path=prepared, **{**SMOKE, **overrides})
    empty = [e["path"] for _, e in dataset_entries(cpu) if not Path(e["path"]).stat().st_size]
    if empty:
        pytest.fail(f"{rel}: the sample builds empty splits {empty}; the smoke needs at least "
                    "one example in each split a recipe reads (train and validation)",
                    pytrace=False)
    name = f"cpu-{overrides.get('max_steps', SMOKE['max_steps'])}.yml"
    return write_recipe(cpu, work / name), cpu


def assert_trained(out_dir: Path, steps: int) -> dict:
    state = trainer_state(out_dir)
    assert state["global_step"] == steps
    losses = logged_losses(state)
    assert len(losses) == steps and all_finite(losses), losses
    evals = [e["eval_loss"] for e in state["log_history"] if "eval_loss" in e]
    assert evals and all_finite(evals), "the validation split was evaluated"
    assert list((out_dir / "runs").rglob("events.out.tfevents.*")), "TensorBoard logged"
    assert (out_dir / "adapter_model.safetensors").exists()
    return state


def merge_and_generate(cfg_path: Path, out_dir: Path, work: Path) -> dict:
    axolotl(TRAIN_BIN / "axolotl", "merge-lora", cfg_path, log=work / "merge.log")
    merged = out_dir / "merged"
    assert (merged / "config.json").exists()
    p = run([TRAIN_BIN / "python", "-m", "tests.recipe_checks", "generate", merged],
            env=train_env(), timeout=600)
    return json.loads(p.stdout.strip().splitlines()[-1])


def assert_generates(gen: dict):
    assert gen["finite"] and gen["new_tokens"], gen
    assert gen["eos_token"] == "<|im_end|>" and gen["eos_token_id"] == 151645
    assert gen["chat_template"]


# The default recipe: preprocess, labels, README command, resume, merge, generate ----------

@pytest.fixture(scope="session")
def default_run(tiny_model_dir, cpu_data, shared_prepared, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("default")
    # accumulation 2: the smoke also crosses an accumulation boundary
    first, cpu = cpu_recipe(DEFAULT, work, cpu_data, tiny_model_dir, work / "prepared",
                            gradient_accumulation_steps=2)
    out = Path(cpu["output_dir"])
    r = {"work": work, "out": out, "cpu": cpu}
    r["preprocess"] = axolotl(TRAIN_BIN / "axolotl", "preprocess", first,
                              log=work / "preprocess.log")
    # Axolotl names a prepared set by a hash of the dataset settings: recipes with the same
    # data settings find it in the shared folder and skip tokenising.
    for d in (work / "prepared").iterdir():
        if d.is_dir() and not (shared_prepared / d.name).exists():
            shutil.copytree(d, shared_prepared / d.name)
    # The README's command, unchanged.
    r["train"] = axolotl(TRAIN_BIN / "accelerate", "launch", "-m", "axolotl.cli.train", first,
                         log=work / "train.log")
    r["state_first"] = trainer_state(out)
    # The same command with a longer run: auto_resume_from_checkpoints picks checkpoint-2.
    second, _ = cpu_recipe(DEFAULT, work, cpu_data, tiny_model_dir, work / "prepared",
                           gradient_accumulation_steps=2, max_steps=4)
    r["resume"] = axolotl(TRAIN_BIN / "accelerate", "launch", "-m", "axolotl.cli.train", second,
                          log=work / "resume.log")
    r["gen"] = merge_and_generate(second, out, work)
    return r


def test_default_labels_are_assistant_turns_and_their_im_end(default_run, cpu_data,
                                                              tiny_model_dir):
    from datasets import load_from_disk
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    im_end = tok.token_to_id("<|im_end|>")
    source = []
    for split in ("train", "validation"):
        path = cpu_data.root / "abstracts-chat" / f"{split}.jsonl"
        source += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    want = Counter(tuple(expected_spans(ex["messages"])) for ex in source)
    users = {}
    for ex in source:
        users.setdefault(tuple(expected_spans(ex["messages"])), []).append(
            [m["content"] for m in ex["messages"] if m["role"] != "assistant"])
    got, rows = Counter(), 0
    prepared = [d for d in (default_run["work"] / "prepared").iterdir()
                if (d / "dataset_info.json").exists()]
    assert len(prepared) == 2, "one prepared train and one validation set"
    for d in prepared:
        for row in load_from_disk(str(d)):
            spans = trained_spans(row["input_ids"], row["labels"])
            assert all(s[-1] == im_end for s in spans), "each trained span ends with <|im_end|>"
            text = tuple(tok.decode(s, skip_special_tokens=False) for s in spans)
            got[text] += 1
            rows += 1
            # the untrained part holds the system prompt and the user turn of that example
            full = tok.decode(row["input_ids"], skip_special_tokens=False)
            assert any(all(c in full for c in cands) for cands in users.get(text, [])), text
    assert rows == len(source), "no example dropped or duplicated"
    assert got == want


def test_default_trains_through_the_readme_command(default_run):
    state = default_run["state_first"]
    assert state["global_step"] == SMOKE["max_steps"]
    losses = logged_losses(state)
    assert len(losses) == SMOKE["max_steps"] and all_finite(losses), losses
    assert [c.name for c in checkpoints(default_run["out"])][:1] == ["checkpoint-2"]


def test_default_resumes_from_its_checkpoint(default_run):
    out = default_run["out"]
    log = default_run["resume"]
    assert re.search(rf"resume from checkpoint at {re.escape(str(out))}/checkpoint-2\b", log)
    state = assert_trained(out, 4)
    # only steps 3 and 4 ran in the second process; steps 1-2 come from the checkpoint
    assert log.count("'loss':") == 2, "the second run trained 2 steps, not 4"
    first = [e for e in default_run["state_first"]["log_history"] if "loss" in e]
    assert [e for e in state["log_history"] if "loss" in e][:2] == first
    # The resumed process evaluates on start: with the checkpoint's adapter it scores exactly
    # what the first run scored at step 2, not what the untrained model scored at step 0.
    evals = [(e["step"], e["eval_loss"]) for e in state["log_history"] if "eval_loss" in e]
    at_2 = [loss for step, loss in evals if step == 2]
    assert len(at_2) == 2 and at_2[0] == at_2[1], evals
    assert evals[0][0] == 0 and evals[0][1] != at_2[0]


def test_default_merged_model_loads_and_generates(default_run):
    assert_generates(default_run["gen"])


# Every recipe ----------------------------------------------------------------------------

def _signature(rel: str) -> str:
    cfg = load_recipe(RECIPES_DIR / rel)
    return cpu_signature(cpu_variant(cfg, model_dir=Path("tiny"), data_root=Path("data"),
                                     output_dir=Path("out"), **SMOKE))


# Recipes whose CPU rewrites are identical but for learning-rate-like numbers (e.g. the
# DeepSpeed, FSDP and Ray variants of the default, once those are dropped) share one run:
# the default when it is among them, else the first by name.
SIGNATURES = {rel: _signature(rel) for rel in IDS}
RUNS_FOR = {}
for _rel in sorted(IDS, key=lambda r: (r != DEFAULT, r)):
    RUNS_FOR.setdefault(SIGNATURES[_rel], _rel)


# output_dir -> the recipe that writes it (what a stage-2 recipe's lora_model_dir names)
STAGE_OF = {load_recipe(RECIPES_DIR / rel)["output_dir"]: rel for rel in IDS}


@pytest.fixture(scope="session")
def smoke_runs() -> dict:
    return {}


def smoke(rel, runs, request, tiny_model_dir, cpu_data, shared_prepared, tmp_path_factory):
    ran = RUNS_FOR[SIGNATURES[rel]]
    if ran == DEFAULT:
        d = request.getfixturevalue("default_run")
        return {"recipe": ran, "out": d["out"], "state": d["state_first"], "steps": 2}
    if ran not in runs:
        work = tmp_path_factory.mktemp(Path(ran).stem)
        path, cpu = cpu_recipe(ran, work, cpu_data, tiny_model_dir, shared_prepared)
        if cpu.get("lora_model_dir"):  # a stage 2: train its stage 1 first, continue its adapter
            stage1 = STAGE_OF[cpu["lora_model_dir"]]
            cpu["lora_model_dir"] = str(smoke(stage1, runs, request, tiny_model_dir, cpu_data,
                                              shared_prepared, tmp_path_factory)["out"])
            path = write_recipe(cpu, path)
        # the recipe's own launch command (a Ray recipe without Ray: the same entry point)
        axolotl(TRAIN_BIN / "accelerate", "launch", "-m", "axolotl.cli.train", path,
                log=work / "train.log")
        out = Path(cpu["output_dir"])
        runs[ran] = {"recipe": ran, "out": out, "state": trainer_state(out),
                     "steps": SMOKE["max_steps"], "cfg_path": path, "work": work}
        if ran in MERGED:
            runs[ran]["gen"] = merge_and_generate(path, out, work)
    return runs[ran]


@pytest.mark.parametrize("recipe", IDS)
def test_recipe_trains_on_cpu(recipe, smoke_runs, request, tiny_model_dir, cpu_data,
                              shared_prepared, tmp_path_factory):
    r = smoke(recipe, smoke_runs, request, tiny_model_dir, cpu_data, shared_prepared,
              tmp_path_factory)
    assert SIGNATURES[r["recipe"]] == SIGNATURES[recipe]
    if r["recipe"] != DEFAULT:
        assert_trained(r["out"], r["steps"])
    assert all_finite(logged_losses(r["state"]))


def read_safetensors(path: Path) -> dict:
    """name -> numpy array, from the file's JSON header and offsets (F32/F16/BF16)."""
    import numpy as np

    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        buf = raw[8 + n + a:8 + n + b]
        if t["dtype"] == "BF16":
            arr = (np.frombuffer(buf, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(buf, {"F32": np.float32, "F16": np.float16}[t["dtype"]])
        out[name] = arr.reshape(t["shape"])
    return out


def test_staged_recipe_continues_its_stage_one_adapter(smoke_runs, request, tiny_model_dir, cpu_data,
                                                       shared_prepared, tmp_path_factory):
    staged = "qwen3b-physics-qa-staged.yml"
    r = smoke(staged, smoke_runs, request, tiny_model_dir, cpu_data, shared_prepared, tmp_path_factory)
    stage1 = smoke_runs[STAGE_OF[load_recipe(RECIPES_DIR / staged)["lora_model_dir"]]]
    cfg = load_recipe(r["cfg_path"])
    assert cfg["lora_model_dir"] == str(stage1["out"])
    alone = smoke("qwen3b-physics-qa.yml", smoke_runs, request, tiny_model_dir, cpu_data, shared_prepared,
                  tmp_path_factory)
    a = read_safetensors(stage1["out"] / "adapter_model.safetensors")
    b = read_safetensors(r["out"] / "adapter_model.safetensors")
    q = read_safetensors(alone["out"] / "adapter_model.safetensors")
    assert a.keys() == b.keys() == q.keys()
    lora_b = [k for k in a if "lora_B" in k]
    assert any(abs(a[k]).max() > 0 for k in lora_b), "stage 1 moved lora_B away from zero"
    assert any((a[k] != b[k]).any() for k in lora_b), "stage 2 trained further"
    # the same data, seed and steps from a fresh adapter give other weights: stage 2 began
    # from stage 1's adapter, not from a new one
    assert any((q[k] != b[k]).any() for k in a)


@pytest.mark.parametrize("recipe", sorted(MERGED))
def test_merged_model_generates(recipe, smoke_runs, request, tiny_model_dir, cpu_data,
                                shared_prepared, tmp_path_factory):
    assert RUNS_FOR[SIGNATURES[recipe]] == recipe, "has its own run"
    r = smoke(recipe, smoke_runs, request, tiny_model_dir, cpu_data, shared_prepared,
              tmp_path_factory)
    assert_generates(r["gen"])


def test_every_cpu_run_is_distinct():
    """Runs are shared only by identical rewrites; each kind of data has its own."""
    assert len(set(RUNS_FOR.values())) == len(set(SIGNATURES.values()))
    contexts = {read_header(RECIPES_DIR / rel)["Context"] for rel in RUNS_FOR.values()}
    assert contexts == {read_header(RECIPES_DIR / rel)["Context"] for rel in IDS}


@pytest.mark.parametrize("recipe", ["qwen3b-physics-qa.yml", "qwen3b-physics-reading.yml"])
def test_task_contexts_train_on_the_answers_only(recipe, smoke_runs, request, tiny_model_dir, cpu_data,
                                                 shared_prepared, tmp_path_factory):
    """Q&A and multi-turn reading comprehension: every assistant turn (and its <|im_end|>) is
    trained, nothing of the system prompt, the passage or the questions."""
    from datasets import load_from_disk
    from tokenizers import Tokenizer

    smoke(recipe, smoke_runs, request, tiny_model_dir, cpu_data, shared_prepared, tmp_path_factory)
    context = read_header(RECIPES_DIR / recipe)["Context"]
    tok = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    source = []
    for split in ("train", "validation"):
        path = cpu_data.root / context / f"{split}.jsonl"
        source += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    def round_trip(text: str) -> str:  # the tokenizer normalises (NFC): compare what it gives back
        return tok.decode(tok.encode(text, add_special_tokens=False).ids, skip_special_tokens=False)

    want = {tuple(map(round_trip, expected_spans(ex["messages"]))) for ex in source}
    multi_turn = any(len(spans) > 1 for spans in want)
    rows = 0
    for d in shared_prepared.iterdir():
        if not (d / "dataset_info.json").exists():
            continue
        data = load_from_disk(str(d))
        first = tuple(tok.decode(s, skip_special_tokens=False)
                      for s in trained_spans(data[0]["input_ids"], data[0]["labels"]))
        if first not in want:
            continue  # another context's prepared set
        for row in data:
            spans = tuple(tok.decode(s, skip_special_tokens=False)
                          for s in trained_spans(row["input_ids"], row["labels"]))
            assert spans in want, spans
            rows += 1
    assert rows >= len(source) // 2, (rows, len(source))
    assert multi_turn == (context == "reading-comprehension")
