"""The Hugging Face side of the conversion checks (tests/test_convert_verify.py), run in the
training environment: a model's logits for given token ids.

Usage (from the checkout, training env; writes logits as .npy):
    .venv-train/bin/python -m tests.hf_logits hf-logits --model outputs/run/merged --tokens ids.json --out hf.npy
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def hf_logits(model_dir: Path, token_ids: list[int]):
    import torch  # noqa: PLC0415 - training environment only
    from transformers import AutoModelForCausalLM  # noqa: PLC0415 - training environment only

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        out = model(torch.tensor([token_ids]))
    return out.logits[0].float().numpy()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("hf-logits")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--tokens", type=Path, required=True, help="JSON list of token ids")
    p.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    np.save(args.out, hf_logits(args.model, json.loads(args.tokens.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
