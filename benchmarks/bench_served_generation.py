"""Benchmark: generation speed of llama.cpp's server as QwenPhysics serves it (the local stack's
command line: every core, 4 slots, one KV pool), against the memory-bandwidth bound measured in
the same run, for each OpenMP wait policy: one chat at a time, and 8 chats at once.

Usage:
    .venv/bin/python benchmarks/bench_gguf_generation.py --shape 3b --keep   # builds the 3B-shaped Q4_K_M once
    .venv/bin/python benchmarks/bench_served_generation.py [--gguf PATH]

A token reads every weight once, so one chat's tokens/s <= read bandwidth / bytes of weights
(the bound of bench_gguf_generation.py). Several chats share each read of the weights, so
their total may pass that bound; the per-chat figure is what a user waits on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_gguf_generation import bandwidth  # noqa: E402

from qwenphysics import serving  # noqa: E402

PROMPT = [{"role": "user", "content": "Explain the photoelectric effect."}]


def chat(stack, n: int) -> tuple[int, float]:
    """(tokens generated, the server's own decode tokens/s) of one request of n tokens."""
    r = requests.post(f"{stack.openai_base_url}/chat/completions", timeout=600,
                      headers={"Authorization": f"Bearer {stack.api_key}"},
                      json={"model": stack.model, "messages": PROMPT, "max_tokens": n, "temperature": 0,
                            "ignore_eos": True})
    r.raise_for_status()
    t = r.json()["timings"]
    return int(t["predicted_n"]), float(t["predicted_per_second"])


def measure(gguf: Path, policy: str, tokens: int, chats: int, work: Path) -> dict:
    serving.OMP_WAIT_POLICY = policy  # "" = OpenMP's default
    env_before = os.environ.pop("OMP_WAIT_POLICY", None)
    config = serving.StackConfig(model=gguf, webui=False, data_dir=work / f"stack-{policy or 'default'}")
    try:
        with serving.LocalStack(config) as stack:
            chat(stack, 8)  # warm-up
            one = [chat(stack, tokens)[1] for _ in range(3)]
            t0 = time.perf_counter()
            with ThreadPoolExecutor(chats) as pool:
                res = list(pool.map(lambda _: chat(stack, tokens), range(chats)))
            wall = time.perf_counter() - t0
    finally:
        if env_before is not None:
            os.environ["OMP_WAIT_POLICY"] = env_before
    return {"policy": policy or "default", "one_chat": sorted(one)[1],
            "total": sum(n for n, _ in res) / wall, "per_chat": sum(s for _, s in res) / len(res)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", type=Path, default=ROOT / "benchmarks" / "results" / "gguf" / "3b" / "model-Q4_K_M.gguf")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--chats", type=int, default=8)
    args = ap.parse_args()
    if not args.gguf.exists():
        raise SystemExit(f"{args.gguf} is missing: run benchmarks/bench_gguf_generation.py --shape 3b --keep")
    work = ROOT / "benchmarks" / "results" / "served"
    work.mkdir(parents=True, exist_ok=True)
    weights = args.gguf.stat().st_size
    bound = bandwidth(os.cpu_count() or 1) * 1e9 / weights
    rows = [measure(args.gguf, policy, args.tokens, args.chats, work) for policy in ("", "passive")]
    print(f"\n{args.gguf.name}: {weights / 1e9:.2f} GB; bound for one chat {bound:.2f} tok/s "
          f"({os.cpu_count()} threads' read bandwidth / bytes of weights); served as the local stack does "
          f"({serving.PARALLEL} slots, every core)\n")
    print(f"| OMP_WAIT_POLICY | 1 chat tok/s | % of bound | {args.chats} chats: total tok/s | per chat tok/s |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['policy']} | {r['one_chat']:.2f} | {100 * r['one_chat'] / bound:.0f}% | "
              f"{r['total']:.2f} | {r['per_chat']:.2f} |")
    (work / "results.json").write_text(json.dumps({"bound": bound, "rows": rows}, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    labels = [f"{r['policy']}, 1 chat" for r in rows] + [f"{r['policy']}, {args.chats} chats (total)" for r in rows]
    values = [r["one_chat"] for r in rows] + [r["total"] for r in rows]
    ax.barh(labels[::-1], values[::-1], color="#4c72b0")
    ax.axvline(bound, color="#c44e52", linestyle="--", label="one-chat bound")
    ax.set_xlabel("tokens/s")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(ROOT / "benchmarks" / "figures" / "served_generation.png", dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
