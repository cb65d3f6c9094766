"""Benchmark: CPU generation speed of a Qwen2.5-3B-shaped Q4_K_M GGUF against the memory-bandwidth
bound measured in the same run, and against transformers' own CPU generation of the same model.

Usage:
    .venv/bin/python benchmarks/bench_gguf_generation.py                  # the real 3B shape (~15 GB disk, ~10 min)
    .venv/bin/python benchmarks/bench_gguf_generation.py --shape tiny     # a quick check of the script

Steps: build a random-weight Qwen2ForCausalLM from Qwen2.5-3B-Instruct's public config (no
download; bf16 safetensors), convert it with llama.cpp's converter to F16, quantize to Q4_K_M
(timed), then
* llama-bench token generation (`-p 0 -n N`) at 1 and 2 threads, with OpenMP's default wait
  policy and with OMP_WAIT_POLICY=passive;
* the bound: a token reads every weight once (the tied embedding is the output matrix), so
  tokens/s <= measured read bandwidth / bytes of weights; bandwidth is numpy's sum over a 2 GB
  array (single thread and 2 threads, best of 5);
* the peer: transformers `generate` on the same weights in bf16 and fp32 on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qwenphysics.convert import hf_to_gguf, quantize  # noqa: E402
from qwenphysics.toolchain import find_toolchain  # noqa: E402

TRAIN_PY = ROOT / ".venv-train" / "bin" / "python"

BUILD = r'''
import json, sys, torch
from transformers import Qwen2Config, Qwen2ForCausalLM, AutoTokenizer
out, shape = sys.argv[1], sys.argv[2]
if shape == "3b":
    cfg = json.load(open(sys.argv[3]))
else:
    from qwenphysics.tiny_model import TINY_CONFIG as cfg
cfg = {k: v for k, v in cfg.items() if k not in ("architectures", "transformers_version", "torch_dtype", "dtype")}
torch.manual_seed(0)
torch.set_default_dtype(torch.bfloat16)
with torch.no_grad():
    model = Qwen2ForCausalLM(Qwen2Config(**cfg))
model.save_pretrained(out, safe_serialization=True)
AutoTokenizer.from_pretrained(sys.argv[4]).save_pretrained(out)
print(sum(p.numel() for p in model.parameters()))
'''

HF_GEN = r'''
import sys, time, torch
from transformers import AutoModelForCausalLM
path, n, dtype, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
torch.set_num_threads(threads)
m = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
ids = torch.tensor([[9707, 1879, 11, 419, 374, 264, 1273]])
with torch.no_grad():
    m.generate(ids, max_new_tokens=2, do_sample=False)
    t = time.perf_counter()
    out = m.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
    dt = time.perf_counter() - t
print((out.shape[1] - ids.shape[1]) / dt)
'''

BANDWIDTH = r'''
import os, sys, time
import numpy as np
a = np.ones(2 * 1024**3 // 8)
best = 0
for _ in range(5):
    t = time.perf_counter(); a.sum(); dt = time.perf_counter() - t
    best = max(best, a.nbytes / dt / 1e9)
print(best)
'''


def bandwidth(threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
    p = subprocess.run([sys.executable, "-c", BANDWIDTH], capture_output=True, text=True, env=env, check=True)
    return float(p.stdout.strip())


def llama_bench(model: Path, threads: int, n: int, passive: bool, reps: int) -> float:
    tc = find_toolchain()
    env = dict(os.environ)
    if passive:
        env["OMP_WAIT_POLICY"] = "passive"
    else:
        env.pop("OMP_WAIT_POLICY", None)
    p = subprocess.run([str(tc.bin("llama-bench")), "-m", str(model), "-p", "0", "-n", str(n), "-t", str(threads),
                        "-r", str(reps), "-o", "json"], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"llama-bench failed: {p.stderr[-500:]}")
    rows = json.loads(p.stdout)
    return float(rows[0]["avg_ts"])


def hf_generate(model_dir: Path, n: int, dtype: str, threads: int) -> float:
    p = subprocess.run([str(TRAIN_PY), "-c", HF_GEN, str(model_dir), str(n), dtype, str(threads)],
                       capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        return float("nan")
    return float(p.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=["3b", "tiny"], default="3b")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "results" / "gguf")
    ap.add_argument("--tokens", type=int, default=64, help="generated tokens per llama-bench repetition")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--hf-tokens", type=int, default=16)
    ap.add_argument("--keep", action="store_true", help="keep the 3B files for a rerun")
    args = ap.parse_args()
    work = args.work / args.shape
    work.mkdir(parents=True, exist_ok=True)
    hf_dir, f16, q4 = work / "hf", work / "model-F16.gguf", work / "model-Q4_K_M.gguf"
    timings = {}
    if not (hf_dir / "model.safetensors.index.json").exists() and not (hf_dir / "model.safetensors").exists():
        t = time.perf_counter()
        cfg = ROOT / "recipes" / "model_configs" / "Qwen2.5-3B-Instruct" / "config.json"
        p = subprocess.run([str(TRAIN_PY), "-c", BUILD, str(hf_dir), args.shape, str(cfg),
                            str(ROOT / "artifacts" / "qwen2.5-tokenizer")], cwd=ROOT, capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"building the model failed: {p.stderr[-800:]}")
        timings["build_s"] = time.perf_counter() - t
        print(f"built a random {args.shape} model ({int(p.stdout.split()[-1]) / 1e9:.3f} B params) "
              f"in {timings['build_s']:.0f} s", file=sys.stderr)
    if not f16.exists():
        t = time.perf_counter()
        hf_to_gguf(hf_dir, f16, outtype="f16", log=work / "convert.log")
        timings["convert_s"] = time.perf_counter() - t
    if not q4.exists():
        t = time.perf_counter()
        quantize(f16, q4, "Q4_K_M", threads=os.cpu_count(), log=work / "quantize.log")
        timings["quantize_s"] = time.perf_counter() - t
        print(f"quantized F16 -> Q4_K_M in {timings['quantize_s']:.0f} s", file=sys.stderr)
    weights = q4.stat().st_size
    bw = {t: bandwidth(t) for t in (1, 2)}
    rows = []
    for threads in (1, 2):
        for passive in (False, True):
            tps = llama_bench(q4, threads, args.tokens, passive, args.reps)
            bound = bw[threads] * 1e9 / weights
            rows.append((f"llama.cpp Q4_K_M, {threads} thread{'s' * (threads > 1)}, "
                         f"OMP_WAIT_POLICY={'passive' if passive else 'default'}", tps, bound))
    hf_rows = []
    for dtype in ("bfloat16", "float32"):
        tps = hf_generate(hf_dir, args.hf_tokens, dtype, 2)
        hf_rows.append((f"transformers generate, {dtype}, 2 threads", tps))

    print(f"\nmodel: {args.shape} shape; Q4_K_M file {weights / 1e9:.2f} GB; "
          f"read bandwidth {bw[1]:.1f} GB/s (1 thread), {bw[2]:.1f} GB/s (2 threads)")
    print("\n| generator | tokens/s | bound tokens/s | % of bound |")
    print("|---|---:|---:|---:|")
    for name, tps, bound in rows:
        print(f"| {name} | {tps:.2f} | {bound:.2f} | {100 * tps / bound:.0f}% |")
    for name, tps in hf_rows:
        print(f"| {name} | {tps:.2f} | | |")
    best = max(rows, key=lambda r: r[1])
    print(f"\nbest llama.cpp: {best[0]}: {best[1]:.2f} tok/s = {100 * best[1] / best[2]:.0f}% of its bound; "
          f"{best[1] / max(t for _, t in hf_rows):.1f}x transformers' best")
    for k, v in timings.items():
        print(f"{k}: {v:.0f} s")
    if args.shape == "3b" and not args.keep:
        for p in (hf_dir, f16):
            subprocess.run(["rm", "-rf", str(p)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
