"""End to end (slow): evaluate a tiny random-weight Qwen2.5 through a real llama.cpp server
and directly from its GGUF file, then compare the two results.

The tiny model answers gibberish, so these tests check the pipeline, not the answers: every
question answered and scored 0/1, a complete results JSON, a finite perplexity above 1.
"""

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from qwenphysics.evaluation import lmeval, questions

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _evaluate(*args, timeout=1500):
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), *map(str, args)],
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-4000:]
    return p


def _check_qa(qa: dict, expected: list[questions.Question]):
    assert [r["id"] for r in qa["questions"]] == [q.id for q in expected]
    for rec in qa["questions"]:
        assert rec["score"] in (0, 1)
        assert isinstance(rec["answer"], str) and "error" not in rec
        assert rec["seconds"] >= 0
    assert qa["total"] == len(expected)
    assert qa["correct"] == sum(r["score"] for r in qa["questions"])
    assert set(qa["by_category"]) == {q.category for q in expected}
    assert sum(c["total"] for c in qa["by_category"].values()) == len(expected)


@pytest.fixture(scope="module")
def served_results(llama_server, tiny_gguf, tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "tiny-served.json"
    p = _evaluate("--base-url", llama_server.base_url, "--api-key", llama_server.api_key,
                  "--model", llama_server.model, "--gguf", tiny_gguf, "--data", tiny_dataset,
                  "--recipe", "tiny-smoke", "--max-tokens", 16, "--ppl-max-tokens", 600,
                  "--ppl-n-ctx", 256, "--out", out)
    return out, p.stderr


def test_served_model_full_run(served_results, llama_server, tiny_gguf, tiny_dataset):
    out, stderr = served_results
    res = json.loads(out.read_text())
    qset = questions.load()
    _check_qa(res["qa"], qset.questions)
    assert f"[ 1/{len(qset.questions)}]" in stderr  # progress, one line per question
    assert res["name"] == "tiny-served"
    assert res["model"]["backend"] == "endpoint" and res["model"]["model"] == llama_server.model
    assert res["model"]["gguf"]["sha256"] == _sha(tiny_gguf)
    assert res["recipe"] == {"name": "tiny-smoke"}
    assert res["dataset_manifest"]["sha256"] == _sha(tiny_dataset / "manifest.json")
    assert res["settings"]["temperature"] == 0.1 and res["settings"]["max_tokens"] == 16
    ppl = res["perplexity"]
    assert math.isfinite(ppl["ppl"]) and ppl["ppl"] > 1
    assert 0 < ppl["tokens"] <= 600 and ppl["documents"] >= 1
    assert ppl["test_sha256"] == _sha(tiny_dataset / "test.jsonl")
    lo, hi = ppl["ci95"]
    assert lo <= ppl["ppl"] <= hi and ppl["scored"].startswith("paper text only")
    assert set(res["lm_eval"]) == set(lmeval.DEFAULT_TASKS)
    own = res["lm_eval"]["qwenphysics_title_choice"]  # written from the held-out papers: it runs
    assert "acc" in own["metrics"] and own["backend"] == "llama.cpp" and len(own["choices"]) == own["n_items"]
    for name, task in res["lm_eval"].items():  # hub tasks have no data offline: skipped, never failed
        assert "metrics" in task or task["skipped"].startswith("skipped: "), (name, task)
    assert {"qa_s", "perplexity_s", "lm_eval_s", "total_s"} <= set(res["timings"])


def test_perplexity_scores_exactly_the_answer_tokens(tiny_gguf, tmp_path):
    """Against the real tokenizer: of a conversation, only the assistant's content is scored."""
    from llama_cpp import Llama

    from qwenphysics.evaluation import perplexity

    answer = "The Schrodinger equation $i\\hbar \\partial_t \\psi = H \\psi$ governs the state."
    convo = [{"role": "system", "content": "You are a physics assistant."},
             {"role": "user", "content": "Which equation governs a quantum state?"},
             {"role": "assistant", "content": answer}]
    test = tmp_path / "test.jsonl"
    test.write_text(json.dumps({"messages": convo}) + "\n" + json.dumps({"text": answer}) + "\n")
    res = perplexity.perplexity_gguf(tiny_gguf, test, n_ctx=256, max_tokens=10_000)
    tok = Llama(model_path=str(tiny_gguf), vocab_only=True, verbose=False)
    n_answer = len(tok.tokenize(answer.encode(), add_bos=False, special=False))
    # the conversation scores its answer; the completion line all but its first token
    assert res["tokens"] == n_answer + (n_answer - 1) and res["documents"] == 2
    assert res["ci95"][0] <= res["ppl"] <= res["ci95"][1]


def test_gguf_direct_run_and_compare(served_results, tiny_gguf, tmp_path):
    out = tmp_path / "tiny-direct.json"
    _evaluate("--gguf", tiny_gguf, "--name", "tiny-direct", "--categories", "quantum,relativity",
              "--limit", 4, "--max-tokens", 32, "--no-lm-eval", "--out", out)
    res = json.loads(out.read_text())
    expected = questions.load().select(["quantum", "relativity"], 4)
    _check_qa(res["qa"], expected)
    assert res["model"]["backend"] == "gguf" and res["model"]["model"] == tiny_gguf.name
    assert res["perplexity"]["skipped"] == "skipped: no --data given"
    assert all(t["skipped"] == "skipped: --no-lm-eval" for t in res["lm_eval"].values())

    report = tmp_path / "report"
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare.py"), served_results[0], out,
                        "--base", "tiny-direct", "--out", report], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    text = (report / "report.md").read_text()
    assert "| tiny-served |" in text and "Δ vs base" in text
    for png in ("qa_by_category.png", "perplexity.png"):
        assert (report / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
