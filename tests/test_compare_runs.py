"""Comparing training contexts for real: two tiny runs whose recipes differ (abstracts-chat vs
abstracts-completion) and the base model, evaluated by scripts/evaluate.py and compared by
scripts/compare.py into a Markdown report with plots."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from tests.conftest import ROOT, evaluate_gguf, run

pytestmark = pytest.mark.slow


def test_report_from_two_tiny_runs_whose_recipes_differ(converted, trained_run, completion_run, tiny_gguf,
                                                        tmp_path):
    chat_models, _ = converted
    chat_recipe, chat_work = trained_run
    comp_recipe, comp_work = completion_run
    data = chat_work / "data" / "abstracts-chat"  # the same held-out papers for every model
    results = [
        evaluate_gguf("base", tiny_gguf, data, tmp_path),
        # provenance names the recipe each CPU rewrite came from
        evaluate_gguf("abstracts-chat", chat_models / "recipe-Q4_K_M.gguf", data, tmp_path,
                 ROOT / "recipes" / "qwen3b-physics.yml"),
        evaluate_gguf("abstracts-completion", comp_work / "models" / "recipe" / "recipe-Q4_K_M.gguf", data, tmp_path,
                 ROOT / "recipes" / "qwen3b-physics-completion.yml"),
    ]
    for r in results:
        res = json.loads(r.read_text())
        assert res["perplexity"]["ppl"] > 1 and res["qa"]["total"] == 8
    out = tmp_path / "report"
    run([sys.executable, ROOT / "scripts" / "compare.py", *results, "--base", "base",
         "--train-dir", f"abstracts-chat={chat_work / 'out'}",
         "--train-dir", f"abstracts-completion={comp_work / 'out'}", "--out", out])
    report = (out / "report.md").read_text()
    for name in ("base", "abstracts-chat", "abstracts-completion"):
        assert f"| {name} |" in report
    assert "Δ" in report or "delta" in report.lower()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert {"loss_curves.png", "qa_by_category.png"} <= set(pngs) and any("perplexity" in p for p in pngs)
    for p in out.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keep = ROOT / "outputs" / "test-artifacts" / "compare"  # kept for people to look at
    shutil.rmtree(keep, ignore_errors=True)
    shutil.copytree(out, keep)
