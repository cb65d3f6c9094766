#!/usr/bin/env python3
"""Compare evaluated models: a Markdown report with deltas against a base model, and plots.

Usage:
    .venv/bin/python scripts/compare.py results/base.json results/qwen3b-physics.json \
        --base base --train-dir qwen3b-physics=outputs/qwen3b-physics --out reports/compare

The output dir receives report.md (tables for QA accuracy overall and by category,
perplexity and lm-eval tasks, each fine-tune shown against the base) and the PNGs it links:
qa_by_category.png, perplexity.png and, when --train-dir is given, loss_curves.png.
"""


from qwenphysics.evaluation.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
