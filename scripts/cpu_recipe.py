r"""Rewrite a recipe mechanically for a CPU smoke run on the tiny Qwen2.5 (what CI trains).

Usage:
    .venv/bin/python -m dataset_builders sample --out data/sample
    .venv/bin/python -m dataset_builders build --spec abstracts-chat \
        --input data/sample/arxiv-metadata-sample.jsonl --out data/cpu/abstracts-chat
    .venv-train/bin/python scripts/make_tiny_qwen.py
    .venv/bin/python scripts/cpu_recipe.py recipes/qwen3b-physics.yml --data-root data/cpu \
        --out outputs/cpu/qwen3b-physics.yml
    PYTHONPATH=. .venv-train/bin/accelerate launch -m axolotl.cli.train \
        outputs/cpu/qwen3b-physics.yml

The rewrite keeps the recipe's adapter, 4-bit loading, LoRA shape, template, end-of-turn
tokens, dataset types and fields, packing, schedule, evaluation and checkpointing; it swaps
in the tiny model, fp32, sdpa attention, a few short steps and the `--data-root` data, and
drops GPU-only settings (see qwenphysics.recipes.cpu_variant). PYTHONPATH=. lets Axolotl
import the small plugin the rewrite adds for 4-bit layers on CPU.
"""

import argparse
import sys
from pathlib import Path

from qwenphysics.recipes import cpu_variant, load_recipe, write_recipe
from qwenphysics.tiny_model import TINY_DIR


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="where to write the CPU recipe")
    ap.add_argument("--data-root", type=Path, default=Path("data"),
                    help="folder standing in for the recipe's data/ (default: data)")
    ap.add_argument("--model", type=Path, default=TINY_DIR,
                    help="model folder (default: the tiny Qwen2.5)")
    ap.add_argument("--output-dir", type=Path, default=None,
                    help="training outputs (default: next to --out, named after it)")
    ap.add_argument("--max-steps", type=int, default=4)
    ap.add_argument("--save-steps", type=int, default=None, help="default: --max-steps")
    ap.add_argument("--sequence-len", type=int, default=512)
    args = ap.parse_args()
    output_dir = args.output_dir or args.out.with_suffix("")
    cfg = cpu_variant(load_recipe(args.recipe), model_dir=args.model.resolve(),
                      data_root=args.data_root.resolve(), output_dir=output_dir.resolve(),
                      max_steps=args.max_steps, save_steps=args.save_steps,
                      sequence_len=args.sequence_len)
    print(write_recipe(cfg, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
