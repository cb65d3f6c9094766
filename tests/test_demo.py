"""The main job, as the README runs it, in its CI mode: `make demo DEMO_ARGS=--no-serve`."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import OFFLINE_ENV, ROOT

pytestmark = pytest.mark.slow


def make_demo(workdir, *extra):
    args = " ".join(["--no-serve", "--workdir", str(workdir), *extra])
    return subprocess.run(["make", "demo", f"DEMO_ARGS={args}"], cwd=ROOT, capture_output=True, text=True,
                          env={**__import__("os").environ, **OFFLINE_ENV}, timeout=2400)


def test_demo_end_to_end_then_skips_current_steps(tmp_path):
    first = make_demo(tmp_path)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    out = first.stdout
    for step in ("1/4 data", "2/4 train", "3/4 convert", "4/4 serve"):
        assert step in out
    assert "training on the CPU" in out and "no CUDA GPU" in out  # says what it does and why
    manifest = json.loads((tmp_path / "data" / "abstracts-chat" / "manifest.json").read_text())
    assert manifest["counts"]["kept"] > 200
    models = tmp_path / "models" / "demo-cpu"
    assert {p.name for p in models.glob("*.gguf")} == {"demo-cpu-F16.gguf", "demo-cpu-Q4_K_M.gguf",
                                                       "demo-cpu-lora-F16.gguf"}
    answers = json.loads((tmp_path / "outputs" / "demo-answers.json").read_text())
    assert len(answers) == 6 and all(a["answer"] for a in answers)  # the seed's questions, EN + ES
    assert "Riemann zeta" in out and "A: " in out

    second = make_demo(tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "is current" in second.stdout and "trained adapter" in second.stdout
    assert "building the abstracts-chat" not in second.stdout


def test_demo_failure_names_step_log_and_fix(tmp_path):
    p = make_demo(tmp_path, "--input", str(tmp_path / "missing.jsonl"))
    assert p.returncode != 0
    err = p.stderr
    assert "step 'data' failed" in err or "input not found" in err
