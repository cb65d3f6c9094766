"""Benchmark: physics-qa generation with the teacher's parallel slots against one request at a
time (same server, same papers, same run), and a rerun served from the answer cache.

Usage:
    .venv/bin/python benchmarks/bench_teacher.py --gguf Qwen2.5-14B-Instruct-Q4_K_M.gguf --papers 64
    .venv/bin/python benchmarks/bench_teacher.py                 # the tiny random model (CPU check)

One llama.cpp server is started with `--slots` slots. The same physics papers (the project's
sample, or `--input`) are built three times with separate caches: requests in flight =
slots, requests in flight = 1, then the first build again from its cache. Prints a table
and the ratio, writes benchmarks/figures/teacher.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qwenphysics.core.llama_server import LlamaServer  # noqa: E402
from tests.conftest import qa_test_spec  # noqa: E402  (bounds a random-weight teacher can meet)

PY = ROOT / ".venv" / "bin" / "python"


def tiny_gguf(work: Path) -> Path:
    from qwenphysics.convert import hf_to_gguf
    from qwenphysics.toolchain import find_toolchain

    model = ROOT / "artifacts" / "tiny-qwen2.5"
    if not model.exists():
        subprocess.run([ROOT / ".venv-train" / "bin" / "python", ROOT / "scripts" / "make_tiny_qwen.py"], check=True)
    out = work / "tiny-f16.gguf"
    hf_to_gguf(model, out, outtype="f16", python=ROOT / ".venv-train" / "bin" / "python", toolchain=find_toolchain())
    return out


def build(spec: Path, inputs: Path, out: Path, cache: Path, url: str, key: str, concurrency: int,
          papers: int) -> tuple[float, dict]:
    t0 = time.perf_counter()
    subprocess.run([PY, "-m", "dataset_builders", "build", "--spec", spec, "--input", inputs, "--out", out,
                    "--teacher-url", url, "--teacher-concurrency", str(concurrency), "--teacher-cache", cache,
                    "--max-papers", str(papers), "--no-progress", "--no-input-hash"],
                   check=True, env={"TEACHER_API_KEY": key, "PATH": "/usr/bin:/bin"}, cwd=ROOT,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0, json.loads((out / "manifest.json").read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", type=Path, help="teacher GGUF (default: the tiny random model)")
    ap.add_argument("--input", type=Path, help="metadata JSONL (default: the project's sample)")
    ap.add_argument("--papers", type=int, default=24)
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--real-spec", action="store_true", help="the real physics-qa spec (a real teacher)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-teacher-"))
    try:
        gguf = args.gguf or tiny_gguf(work)
        inputs = args.input
        if inputs is None:
            subprocess.run([PY, "-m", "dataset_builders", "sample", "--out", work / "sample"], check=True,
                           stdout=subprocess.DEVNULL)
            inputs = work / "sample" / "arxiv-metadata-sample.jsonl"
        spec = (ROOT / "dataset_builders" / "specs" / "physics-qa.yml" if args.real_spec
                else qa_test_spec(work / "spec.yml"))
        rows = []
        with LlamaServer(gguf, parallel=args.slots, log=work / "server.log") as server:
            for name, conc, cache in ((f"{args.slots} in flight (the server's slots)", args.slots, "par"),
                                      ("1 in flight", 1, "one"),
                                      (f"rerun from the cache ({args.slots} in flight)", args.slots, "par")):
                secs, m = build(spec, inputs, work / f"out-{len(rows)}", work / f"{cache}.sqlite", server.base_url,
                                server.api_key, conc, args.papers)
                t = m["teacher"]
                pairs = sum(m["counts"]["examples"].values())
                answered = t["papers_asked"] + t["papers_answered_from_cache"]
                rows.append((name, answered, t["papers_asked"], pairs, secs))
        print(f"teacher: {gguf.name}, {args.slots} slots, {args.papers} papers\n")
        print("| run | papers | asked | pairs kept | wall s | papers/s |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, answered, asked, pairs, secs in rows:
            print(f"| {name} | {answered} | {asked} | {pairs} | {secs:.1f} | {answered / secs:.2f} |")
        ratio = rows[1][4] / rows[0][4]
        print(f"\nparallel slots vs one at a time: {ratio:.2f}x faster; cache rerun: {rows[2][4]:.1f} s "
              f"({rows[0][4] / rows[2][4]:.1f}x faster than asking)")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3))
        ax.barh([r[0] for r in rows][::-1], [r[1] / r[4] for r in rows][::-1], color="#4c72b0")
        ax.set_xlabel("papers per second")
        ax.set_title(f"physics-qa teacher: {gguf.name}, {args.slots} slots")
        fig.tight_layout()
        out = ROOT / "benchmarks" / "figures" / "teacher.png"
        fig.savefig(out, dpi=120)
        print(f"figure: {out.relative_to(ROOT)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
