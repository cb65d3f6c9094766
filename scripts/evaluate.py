#!/usr/bin/env python3
"""Evaluate one model: physics QA, held-out perplexity and lm-eval tasks -> a results JSON.

Usage:
    .venv/bin/python scripts/evaluate.py --gguf models/qwen3b-physics/qwen3b-physics-Q4_K_M.gguf \
        --data data/abstracts-chat --recipe recipes/qwen3b-physics.yml --out results/qwen3b-physics.json

    .venv/bin/python scripts/evaluate.py --gguf qwen2.5-3b-instruct-q4_k_m.gguf --name base \
        --data data/abstracts-chat --out results/base.json

    .venv/bin/python scripts/evaluate.py --base-url http://127.0.0.1:8080/v1 --model qwenphysics \
        --gguf models/qwen3b-physics/qwen3b-physics-Q4_K_M.gguf --limit 10 --no-lm-eval \
        --out results/served.json

A served model is asked through --base-url (any OpenAI-compatible server); a GGUF file alone
is run in-process with llama-cpp-python. Perplexity needs --gguf and --data. lm-eval tasks
run only when lm_eval is installed (see --lm-eval-python) and their data is cached locally;
otherwise the results record why they were skipped. `--help` lists every option.
"""


from qwenphysics.evaluation.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
