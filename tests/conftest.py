"""Shared fixtures. Slow fixtures build real artefacts once per session (tiny model, GGUF,
datasets) with the project's own commands, in a session temp folder unless noted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qwenphysics.core.offline import OFFLINE_ENV  # noqa: E402 - the checkout first on sys.path

# `make test` (what CI runs) sets QWENPHYSICS_TEST_ALL=1: there a missing environment or build fails
# the test. A plain `pytest` skips what needs something this machine lacks and says what.
REQUIRE_ALL = os.environ.get("QWENPHYSICS_TEST_ALL") == "1"
# fixture -> the marker of the tests that use it (directly or through another fixture)
NEEDS = {"train_python": "needs_train", "serve_python": "needs_serve", "toolchain": "needs_llama",
         "tokenizer_built": "needs_tokenizer", "chromium": "needs_browser"}


def need(what: str, fix: str = "run `make setup`") -> None:
    """Skip (or, under `make test`, fail) a test whose environment is not there."""
    message = f"needs {what}: {fix}"
    if REQUIRE_ALL:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def pytest_collection_modifyitems(items):
    for item in items:
        for fixture, marker in NEEDS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)


def venv_python(name: str) -> Path:
    py = ROOT / name / "bin" / "python"
    if not py.exists():
        need(name, "run `make setup`")
    return py


def run(cmd: list, *, env: dict | None = None, cwd: Path = ROOT, timeout: int = 1800,
        check: bool = True) -> subprocess.CompletedProcess:
    """Run a command, echoing its output on failure (pytest shows it)."""
    full_env = {**os.environ, **OFFLINE_ENV, **(env or {})}
    p = subprocess.run([str(c) for c in cmd], cwd=cwd, env=full_env, capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"command failed ({p.returncode}): {' '.join(map(str, cmd))}\n"
                             f"--- stdout ---\n{p.stdout[-6000:]}\n--- stderr ---\n{p.stderr[-6000:]}")
    return p


@pytest.fixture(scope="session")
def train_python() -> Path:
    return venv_python(".venv-train")


@pytest.fixture(scope="session")
def serve_python() -> Path:
    return venv_python(".venv-serve")


@pytest.fixture(scope="session")
def tiny_model_dir(train_python) -> Path:
    """artifacts/tiny-qwen2.5: tiny random-weight Qwen2ForCausalLM + the real Qwen2.5 tokenizer."""
    run([train_python, ROOT / "scripts" / "make_tiny_qwen.py"])
    return ROOT / "artifacts" / "tiny-qwen2.5"


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """The project's own arXiv-format sample (metadata JSONL + a LaTeX source shard)."""
    out = tmp_path_factory.mktemp("sample")
    run([sys.executable, "-m", "dataset_builders", "sample", "--out", out])
    return out


@pytest.fixture(scope="session")
def tiny_dataset(sample_dir, tmp_path_factory) -> Path:
    """abstracts-chat built from the sample: train/validation/test.jsonl + manifest.json."""
    out = tmp_path_factory.mktemp("data") / "abstracts-chat"
    run([sys.executable, "-m", "dataset_builders", "build", "--spec", "abstracts-chat", "--input",
         sample_dir / "arxiv-metadata-sample.jsonl", "--out", out, "--no-progress"])
    return out


@pytest.fixture(scope="session")
def toolchain():
    from qwenphysics.toolchain import ToolchainMissing, find_toolchain

    try:
        return find_toolchain()
    except ToolchainMissing as e:
        need("llama.cpp's build", str(e))


@pytest.fixture(scope="session")
def tokenizer_built():
    """The real Qwen2.5 tokenizer (artifacts/qwen2.5-tokenizer, written by `make setup`)."""
    from qwenphysics.qwen_tokenizer import load_fast_tokenizer

    tok = load_fast_tokenizer()
    if tok is None:
        need("the Qwen2.5 tokenizer (artifacts/qwen2.5-tokenizer)")
    return tok


@pytest.fixture(scope="session")
def chromium() -> Path:
    path = Path("/usr/bin/chromium")
    if not path.exists():
        need("Chromium", "run `bash scripts/setup.sh browser`")
    return path


@pytest.fixture(scope="session")
def tiny_gguf(tiny_model_dir, toolchain, train_python, tmp_path_factory) -> Path:
    """F16 GGUF of the tiny model, converted by llama.cpp's own converter."""
    from qwenphysics.convert import hf_to_gguf

    out = tmp_path_factory.mktemp("gguf") / "tiny-qwen2.5-f16.gguf"
    hf_to_gguf(tiny_model_dir, out, outtype="f16", python=train_python, toolchain=toolchain)
    return out


def train_cpu_run(recipe_rel: str, context: str, work: Path, sample_dir: Path, train_python: Path,
                  tiny_model_dir: Path, learning_rate: float = 0.01, steps: int = 8) -> Path:
    """A recipe rewritten for CPU (tiny model), trained for real on its context built from the
    sample; a large learning rate so the adapter moves the model measurably."""
    from qwenphysics.recipes import cpu_variant, load_recipe, write_recipe

    data = work / "data"
    run([sys.executable, "-m", "dataset_builders", "build", "--spec", context, "--input",
         sample_dir / "arxiv-metadata-sample.jsonl", "--out", data / context, "--no-progress"])
    cfg = cpu_variant(load_recipe(ROOT / "recipes" / recipe_rel), model_dir=tiny_model_dir, data_root=data,
                      output_dir=work / "out", max_steps=steps, save_steps=steps, sequence_len=512)
    cfg["learning_rate"] = learning_rate
    recipe = write_recipe(cfg, work / "recipe.yml")
    run([train_python, "-m", "axolotl.cli.train", recipe], cwd=work, env={"CUDA_VISIBLE_DEVICES": ""})
    assert (work / "out" / "adapter_model.safetensors").exists()
    return recipe


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, train_python, tiny_model_dir, sample_dir):
    """The default recipe (abstracts-chat), CPU-rewritten and trained: (recipe, work dir)."""
    work = tmp_path_factory.mktemp("trained")
    recipe = train_cpu_run("qwen3b-physics.yml", "abstracts-chat", work, sample_dir, train_python, tiny_model_dir)
    return recipe, work


@pytest.fixture(scope="session")
def completion_run(tmp_path_factory, train_python, tiny_model_dir, sample_dir):
    """abstracts-completion, CPU-rewritten, trained, and converted (merged + Q4_K_M): (recipe, work dir)."""
    work = tmp_path_factory.mktemp("completion-run")
    recipe = train_cpu_run("qwen3b-physics-completion.yml", "abstracts-completion", work, sample_dir, train_python,
                           tiny_model_dir)
    run([sys.executable, ROOT / "scripts" / "convert.py", recipe, "--out", work / "models", "--quants", "Q4_K_M",
         "--no-lora", "--base-dir", tiny_model_dir], env={"CUDA_VISIBLE_DEVICES": ""})
    return recipe, work


def evaluate_gguf(name, gguf, data, out, recipe=None):
    """scripts/evaluate.py on a few held-out examples (no lm-eval): the results JSON's path."""
    cmd = [sys.executable, ROOT / "scripts" / "evaluate.py", "--gguf", gguf, "--data", data, "--name", name,
           "--limit", "8", "--max-tokens", "16", "--n-ctx", "1024", "--ppl-n-ctx", "256", "--ppl-max-tokens", "768",
           "--no-lm-eval", "--out", out / f"{name}.json"]
    if recipe:
        cmd += ["--recipe", recipe]
    run(cmd)
    return out / f"{name}.json"


@pytest.fixture(scope="session")
def converted(trained_run, tiny_model_dir):
    """scripts/convert.py on the trained run: (models/<run> dir, the CompletedProcess)."""
    recipe, work = trained_run
    p = run([sys.executable, ROOT / "scripts" / "convert.py", recipe, "--out", work / "models", "--quants",
             "Q4_K_M", "Q8_0", "--base-dir", tiny_model_dir, "--base-gguf"], env={"CUDA_VISIBLE_DEVICES": ""})
    return work / "models" / "recipe", p


@pytest.fixture(scope="session")
def llama_server(tiny_gguf, tmp_path_factory):
    """llama.cpp's server on the tiny GGUF (loopback, API key): .base_url (/v1), .api_key, .model."""
    from qwenphysics.serving import LocalStack, StackConfig

    work = tmp_path_factory.mktemp("llama-server")
    stack = LocalStack(StackConfig(model=tiny_gguf, webui=False, data_dir=work, threads=2))
    stack.start()

    class Server:
        base_url = stack.openai_base_url
        api_key = stack.api_key
        model = stack.model
        url = stack.llama_url
        handle = stack

    yield Server()
    stack.stop()


def qa_test_spec(path: Path) -> Path:
    """physics-qa with bounds a random-weight teacher can meet: one short pair per paper, and
    no grounding or near-duplicate rule (the tiny model writes gibberish, in valid JSON)."""
    import yaml

    raw = yaml.safe_load((ROOT / "dataset_builders" / "specs" / "physics-qa.yml").read_text())
    raw["options"].update({
        "pairs_per_paper": 1, "max_text_chars": 600,
        "sampling": {"temperature": 0.3, "top_p": 0.9, "max_tokens": 160},
        "pair_rules": {"min_question_chars": 1, "max_question_chars": 60, "min_answer_chars": 1,
                       "max_answer_chars": 120, "min_grounding": 0.0, "near_duplicate": 1.01}})
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def qa_test_input(sample_dir: Path, path: Path, n_train: int = 14) -> Path:
    """A slice of the sample with papers in every split (the teacher is slow on CPU)."""
    import json

    from dataset_builders.split import split_of

    picked, train = [], 0
    for line in (sample_dir / "arxiv-metadata-sample.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "physics" not in r.get("categories", "") and not any(
                c.split(".")[0] in ("hep-th", "hep-ph", "gr-qc", "quant-ph", "astro-ph", "cond-mat")
                for c in r.get("categories", "").split()):
            continue
        s = split_of(r["id"]) if r.get("id") else None
        if s in ("validation", "test") or (s == "train" and train < n_train):
            train += s == "train"
            picked.append(line)
    path.write_text("\n".join(picked) + "\n")
    return path


@pytest.fixture(scope="session")
def qa_build(sample_dir, tiny_gguf, tmp_path_factory):
    """physics-qa built from a slice of the sample with the tiny GGUF as the teacher (llama.cpp's
    server started by the builder): .out, .cache, .spec, .input, .gguf."""
    work = tmp_path_factory.mktemp("physics-qa")

    class Build:
        spec = qa_test_spec(work / "physics-qa-test.yml")
        input = qa_test_input(sample_dir, work / "slice.jsonl")
        out = work / "physics-qa"
        cache = work / "teacher.sqlite"
        gguf = tiny_gguf

    run([sys.executable, "-m", "dataset_builders", "build", "--spec", Build.spec, "--input", Build.input,
         "--out", Build.out, "--teacher-gguf", tiny_gguf, "--teacher-cache", Build.cache, "--no-progress"],
        timeout=900)
    return Build


@pytest.fixture
def site():
    """A fake OAI-PMH repository: 7 records, 3 a page (tests/fixtures_oai.py)."""
    from tests.fixtures_oai import FakeOAI

    return FakeOAI(n_records=7, per_page=3)


@pytest.fixture
def server(site):
    """`site` served on a loopback port."""
    from tests.fixtures_oai import LoopbackServer

    with LoopbackServer(site) as srv:
        yield srv
