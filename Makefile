# QwenPhysics — the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
PY    := .venv/bin/python
export HF_HUB_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1 AXOLOTL_DO_NOT_TRACK=1 TOKENIZERS_PARALLELISM=false

.PHONY: help setup demo test test-fast lint serve bench soak clean

help:
	@echo "make demo       the main job: sample -> dataset -> train -> GGUF -> chat in the browser"
	@echo "make test       every test tier (what CI runs); sets up the environments first"
	@echo "make test-fast  the fast tier only (pytest's default)"
	@echo "make lint       ruff, mypy on the library, and the import rules (part of make test)"
	@echo "make setup      create/refresh .venv, .venv-train, .venv-serve and the llama.cpp build"
	@echo "make serve      llama.cpp's server + Open WebUI on the newest model under models/"
	@echo "make bench      the CPU benchmarks (dataset builder, LaTeX cleaner, GGUF generation)"
	@echo "make soak       8 concurrent chats for 60 s through llama.cpp and Open WebUI, with a restart"

setup:
	@bash scripts/setup.sh all

demo: setup
	@$(PY) scripts/demo.py $(DEMO_ARGS)

test: setup
	@bash scripts/setup.sh browser
	@$(MAKE) --no-print-directory lint
	@QWENPHYSICS_TEST_ALL=1 $(PY) -m pytest -m "slow or not slow" --durations=25 $(PYTEST_ARGS)

test-fast:
	@bash scripts/setup.sh llama core train artifacts
	@$(PY) -m pytest $(PYTEST_ARGS)

lint:
	@$(PY) -c "import ruff, mypy, importlinter" 2>/dev/null || \
		{ echo "make lint: the core environment (.venv) lacks ruff, mypy or import-linter: run make setup"; exit 2; }
	@$(PY) -m ruff check .
	@$(PY) -m mypy
	@PYTHONPATH=. .venv/bin/lint-imports --no-cache

serve: setup
	@$(PY) scripts/serve.py $(SERVE_ARGS)

soak: setup
	@$(PY) benchmarks/soak_serve.py $(SOAK_ARGS)

bench: setup
	@$(PY) benchmarks/bench_metadata_builder.py
	@$(PY) benchmarks/bench_latex_cleaner.py
	@$(PY) benchmarks/bench_gguf_generation.py

clean:
	rm -rf data outputs models reports .pytest_cache
