"""Turn an Axolotl run into files llama.cpp serves: merged F16 GGUF, quantized GGUFs, GGUF LoRA.

Usage:
    .venv/bin/python scripts/convert.py recipes/qwen3b-physics.yml
    .venv/bin/python scripts/convert.py outputs/qwen3b-physics --quants Q4_K_M Q5_K_M Q8_0 --imatrix
    .venv/bin/python scripts/convert.py demo/outputs/demo-cpu --recipe demo/outputs/demo-cpu.recipe.yml \
        --base-dir artifacts/tiny-qwen2.5 --base-gguf
    .venv/bin/python scripts/convert.py outputs/merges/qa-instruct-linear     # a merge (scripts/merge.py)

Writes models/<run>/: <run>-F16.gguf, <run>-<QUANT>.gguf..., <run>-lora-F16.gguf, SHA256SUMS,
README.md (model card), Modelfile (Ollama), convert.json. Steps whose outputs are current are
skipped; logs go to models/<run>/convert.log.
"""

import argparse
import sys
from pathlib import Path

from qwenphysics.convert import DEFAULT_QUANTS, ConvertError, ConvertOptions, convert_run, load_run
from qwenphysics.toolchain import ToolchainMissing


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Merge, convert and quantize an Axolotl run with llama.cpp.")
    ap.add_argument("target", type=Path, help="the run's recipe (.yml) or its output folder")
    ap.add_argument("--recipe", type=Path, help="the recipe, when TARGET is an output folder")
    ap.add_argument("--output-dir", type=Path, help="override the recipe's output_dir")
    ap.add_argument("--out", type=Path, default=Path("models"), help="where models/<run>/ goes (default: models)")
    ap.add_argument("--quants", nargs="*", default=list(DEFAULT_QUANTS), metavar="TYPE",
                    help=f"llama.cpp quant types (default: {' '.join(DEFAULT_QUANTS)}; none for F16 only)")
    ap.add_argument("--outtype", choices=["f16", "bf16"], default="f16", help="16-bit GGUF type (default f16)")
    ap.add_argument("--imatrix", action="store_true",
                    help="calibrate quantization on the run's validation split (importance matrix)")
    ap.add_argument("--no-lora", action="store_true", help="skip the GGUF LoRA adapter")
    ap.add_argument("--base-gguf", action="store_true", help="also convert the base model (to pair with the LoRA)")
    ap.add_argument("--base-dir", type=Path, help="local folder of the base model (default: from the HF cache)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    try:
        target = args.target
        run = load_run(target, output_dir=args.output_dir)
        if args.recipe:
            run = load_run(args.recipe, output_dir=run.output_dir if target.is_dir() else args.output_dir)
        opts = ConvertOptions(out_root=args.out, quants=tuple(args.quants), outtype=args.outtype,
                              imatrix=args.imatrix, lora=not args.no_lora, base_gguf=args.base_gguf,
                              base_dir=args.base_dir, threads=args.threads)
        res = convert_run(run, opts)
    except (ConvertError, ToolchainMissing) as e:
        print(f"convert: error: {e}", file=sys.stderr)
        return 2
    for name in res["files"]:
        print(Path(res["dir"]) / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
