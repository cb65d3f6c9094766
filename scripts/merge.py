"""Merge fine-tunes with mergekit, from a merge recipe in recipes/merges/.

Usage:
    .venv/bin/python scripts/merge.py recipes/merges/qa-instruct-linear.yml
    .venv/bin/python scripts/merge.py recipes/merges/fulltext-qa-ties.yml --out outputs/merges/my-ties
    .venv/bin/python scripts/merge.py recipes/merges/qa-instruct-slerp.yml --outputs /data/runs \
        --base-dir ~/models/Qwen2.5-3B-Instruct

Parents named `outputs/<run>/merged` are looked up under --outputs; a run whose adapter is not
merged into full weights yet is merged first (its recipe from <run>/recipe.yml or
recipes/<run>.yml). Writes outputs/merges/<recipe>/ (or --out): the merged model, merge.json
(provenance of the recipe and each parent) and merge-recipe.yml. Then:
    .venv/bin/python scripts/convert.py outputs/merges/qa-instruct-linear
"""

import argparse
import sys
from pathlib import Path

from qwenphysics import REPO_ROOT
from qwenphysics.core.errors import UserError
from qwenphysics.merge import merge_recipe, plan


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Merge fine-tuned models with mergekit, from a merge recipe.")
    ap.add_argument("recipe", type=Path, help="a merge recipe (recipes/merges/*.yml)")
    ap.add_argument("--out", type=Path, help="output folder (default: <outputs>/merges/<recipe name>)")
    ap.add_argument("--outputs", type=Path, default=Path("outputs"),
                    help="the folder holding the training runs that recipes name as outputs/<run> (default: outputs)")
    ap.add_argument("--base-dir", type=Path,
                    help="local folder of the Instruct model the recipe names by hub id (default: the HF cache)")
    ap.add_argument("--seed", type=int, default=0, help="seed of DARE's random pruning (default 0)")
    ap.add_argument("--train-python", type=Path, default=REPO_ROOT / ".venv-train" / "bin" / "python",
                    help="the training environment's Python, where mergekit is installed")
    args = ap.parse_args(argv)
    try:
        if args.base_dir is not None and not (args.base_dir / "config.json").is_file():
            raise UserError(f"--base-dir {args.base_dir} holds no model (config.json missing)")
        mp = plan(args.recipe, out=args.out, outputs=args.outputs, base_dir=args.base_dir)
        if not (args.train_python.parent / "mergekit-yaml").exists():
            raise UserError(f"mergekit is not installed next to {args.train_python}: run `bash scripts/setup.sh train`")
        out = merge_recipe(mp, train_python=args.train_python, base_dir=args.base_dir, seed=args.seed)
    except UserError as e:
        print(f"merge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("merge: interrupted; nothing was written", file=sys.stderr)
        return 130
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
