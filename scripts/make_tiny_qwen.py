"""Build the tiny random-weight Qwen2.5 (real tokenizer) used by tests and the CPU demo.

Usage:
    .venv-train/bin/python scripts/make_tiny_qwen.py            # -> artifacts/tiny-qwen2.5/
    .venv-train/bin/python scripts/make_tiny_qwen.py --out /tmp/tiny --force
"""

import argparse
import sys
from pathlib import Path

from qwenphysics.tiny_model import TINY_DIR, build_tiny_model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=TINY_DIR)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="rebuild even if it exists")
    args = ap.parse_args()
    out = build_tiny_model(args.out, seed=args.seed, force=args.force)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
