"""The main job in one command: arXiv sample -> dataset -> training -> GGUF -> chat in the browser.

Usage:
    make demo                                   # what the README calls; same as below
    .venv/bin/python scripts/demo.py            # sample data, train, convert, serve until Ctrl-C
    .venv/bin/python scripts/demo.py --no-serve # stop after the smoke check (CI)
    .venv/bin/python scripts/demo.py --input arxiv-metadata-oai-snapshot.json

With a CUDA GPU and the Hugging Face hub it trains a short version of recipes/qwen3b-physics.yml
(same model, adapter and kernels; 60 steps of 4,096 tokens); otherwise the same recipe
rewritten for CPU on the tiny Qwen2.5. Each step skips work that is current.
"""

import argparse
import sys
from pathlib import Path

from qwenphysics.demo import DEFAULT_RECIPE, DEFAULT_WORKDIR, DemoConfig, run_demo


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", action="append", default=[], metavar="PATH",
                    help="a real arXiv dump (Kaggle snapshot, OAI pages folder, hf:<id>); "
                         "default: the project's sample")
    ap.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE, help="the Axolotl recipe (default: %(default)s)")
    ap.add_argument("--mode", choices=["auto", "gpu", "cpu"], default="auto",
                    help="auto: the recipe itself with a GPU and the hub, else its CPU rewrite on the tiny model")
    ap.add_argument("--steps", type=int, default=6, help="CPU training steps (default 6)")
    ap.add_argument("--no-serve", action="store_true", help="exit after the smoke check instead of serving")
    ap.add_argument("--port", type=int, default=3000,
                    help="Open WebUI's port on 127.0.0.1 (default 3000, as make serve and Compose)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for llama.cpp (default: all cores)")
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                    help="the demo's own folder for data/, outputs/, models/, logs/ (default: demo/); "
                         "a non-empty folder the demo did not make is refused")
    args = ap.parse_args(argv)
    cfg = DemoConfig(workdir=args.workdir.resolve(), inputs=args.input, recipe=args.recipe.resolve(),
                     mode=args.mode, steps=args.steps, serve=not args.no_serve, port=args.port, threads=args.threads)
    return run_demo(cfg)


if __name__ == "__main__":
    sys.exit(main())
