"""Shards per minute of the full-text map, local processes against Ray, and what one shard costs.

Writes `--shards` bulk source tars of `--papers` e-prints each, made from real arXiv LaTeX
read at run time (default: the LEGWORK paper and the arxiv-latex-cleaner fixture under
`../shared/data/arxiv-samples`, given ids of their own) plus an incompressible
`--figure-kb` figure per e-print, as real e-prints carry. Then, alternating `--repeat`
times, builds `fulltext-completion` from scratch with

* `--executor local --workers N` (this machine's processes), and
* `--executor ray --workers N` (a Ray started for the run: its start-up is part of the cost),
* `--executor ray --ray-address auto` (a Ray of N CPUs started beforehand with `ray start`:
  the engine's cost per task, as on a cluster that is already up),

checks that the outputs are byte-identical, and prints shards/min for each (the map's own
time and the whole command's) and the ratio. From the shard markers it prints the cost per
shard (CPU seconds, MB read, MB written), scales it to a 500 MB arXiv shard and to all of
arXiv (`--arxiv-tb` of sources), and draws `figures/fulltext_engines.png`.

Usage: python benchmarks/bench_fulltext_engines.py [--shards 8] [--papers 40] [--workers 2]
Timings are wall time on a shared machine; they are printed, never asserted.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_fulltext_builder import write_shards  # noqa: E402

SAMPLES = ROOT.parent / "shared" / "data" / "arxiv-samples"
DEFAULT_REAL = [SAMPLES / "TeamLEGWORK__LEGWORK-paper" / "ms.tex",
                SAMPLES / "google-research__arxiv-latex-cleaner" / "input_main.tex"]
SHARD_MB = 500  # arXiv's shards are about 500 MB each


def eprint(tex: bytes, figure: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in (("ms.tex", tex), ("figures/plot.pdf", figure)):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime = len(data), 0
            tf.addfile(ti, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), compresslevel=1, mtime=0)


def write_corpus(root: Path, papers: list[bytes], shards: int, per_shard: int, figure_kb: int,
                 seed: int) -> tuple[Path, Path, int]:
    rng = random.Random(seed)

    def payload(k: int) -> tuple[bytes, int]:
        data = eprint(papers[k % len(papers)], rng.randbytes(figure_kb * 1024))
        return data, len(data)

    return write_shards(root, shards, per_shard, payload, lambda aid: {
        "title": f"Paper {aid}", "abstract": "A real paper's LaTeX, renumbered. " * 4, "categories": "astro-ph.HE"})


def build(src: Path, md: Path, out: Path, route: str, workers: int) -> tuple[float, float]:
    """(whole command's wall s, the map's own s as it reports it)."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out.parent / f"{out.name}.work", ignore_errors=True)
    executor = ["--executor", "ray", "--ray-address", "auto"] if route == "ray-running" else ["--executor", route]
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "dataset_builders", "build", "--spec", "fulltext-completion",
                        "--input", str(src), "--metadata", str(md), "--out", str(out), "--workers", str(workers),
                        *executor, "--no-progress", "--no-input-hash"],
                       cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"{route} build failed:\n{p.stderr[-3000:]}")
    m = re.search(r"^map: .*?([\d.]+) s$", p.stderr, re.M)
    return wall, float(m.group(1)) if m else wall


def plot(rows: list[tuple[str, float, float]], path: Path, title: str) -> None:
    import matplotlib  # noqa: PLC0415 - slow import, only for the figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    labels = {"local": "local processes", "ray": "Ray started by the run", "ray-running": "Ray already running"}
    fig, ax = plt.subplots(figsize=(7, 3))
    names = [labels.get(r[0], r[0]) for r in rows]
    y = range(len(rows))
    ax.barh([i + 0.2 for i in y], [r[1] for r in rows], height=0.4, label="map only")
    ax.barh([i - 0.2 for i in y], [r[2] for r in rows], height=0.4, label="whole command")
    ax.set_yticks(list(y), names)
    ax.set_xlabel("shards per minute (higher is better)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=2, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--papers", type=int, default=40, help="e-prints per shard")
    ap.add_argument("--figure-kb", type=int, default=1500,
                    help="incompressible figure per e-print, KB (default 1500: --arxiv-tb / --arxiv-papers)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--real", nargs="*", type=Path, default=DEFAULT_REAL, help="LaTeX files to build e-prints from")
    ap.add_argument("--arxiv-tb", type=float, default=5.0, help="TB of LaTeX sources in arXiv's bucket (default 5)")
    ap.add_argument("--arxiv-papers", type=float, default=3.0e6, help="papers in arXiv (default 3 million)")
    ap.add_argument("--cores", type=int, default=64, help="cores per machine for the estimate")
    ap.add_argument("--gbps", type=float, default=10.0,
                    help="what one machine reads from S3 in the bucket's region, Gbit/s (default 10)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    real = [p for p in args.real if p.is_file()]
    if not real:
        sys.exit(f"no real LaTeX found ({', '.join(map(str, args.real))}): pass --real FILE...")
    root = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    try:
        papers = [p.read_bytes() for p in real]
        src, md, total = write_corpus(root, papers, args.shards, args.papers, args.figure_kb, args.seed)
        print(f"corpus: {args.shards} shards x {args.papers} e-prints from {', '.join(p.name for p in real)} "
              f"+ {args.figure_kb} KB figure each, {total / 1e6:.1f} MB; cpus {os.cpu_count()}, "
              f"load {os.getloadavg()[0]:.1f}")
        times: dict[str, list[tuple[float, float]]] = {"local": [], "ray": [], "ray-running": []}
        ray_cli = str(Path(sys.executable).parent / "ray")
        subprocess.run([ray_cli, "start", "--head", f"--num-cpus={args.workers}", "--include-dashboard=false",
                        "--disable-usage-stats"], check=True, capture_output=True)
        try:
            for _ in range(args.repeat):
                for route in times:
                    times[route].append(build(src, md, root / route, route, args.workers))
        finally:
            subprocess.run([ray_cli, "stop"], capture_output=True)
        same = all((root / "local" / f).read_bytes() == (root / r / f).read_bytes() for r in ("ray", "ray-running")
                   for f in ("train.jsonl", "validation.jsonl", "test.jsonl", "manifest.json", "README.md"))
        rows = []
        print(f"\n| route ({args.workers} workers) | map s (median of {args.repeat}) | shards/min, map | "
              "command s | shards/min, command |")
        print("|---|---:|---:|---:|---:|")
        for ex, ts in times.items():
            wall = statistics.median(t[0] for t in ts)
            mapped = statistics.median(t[1] for t in ts)
            rows.append((ex, args.shards / mapped * 60, args.shards / wall * 60))
            print(f"| {ex} | {mapped:.2f} ({', '.join(f'{t[1]:.2f}' for t in ts)}) | {rows[-1][1]:.1f} | "
                  f"{wall:.2f} | {rows[-1][2]:.1f} |")
        for i, label in ((1, "ray started by the run"), (2, "ray cluster already running")):
            print(f"{label} / local, shards per minute: map {rows[i][1] / rows[0][1]:.2f}x, "
                  f"whole command {rows[i][2] / rows[0][2]:.2f}x")
        print(f"outputs byte-identical across the three routes: {same}")
        done = [json.loads(p.read_text()) for p in sorted((root / "local.work" / "shards").glob("*.done"))]
        cpu = statistics.median(d["cpu_seconds"] for d in done)
        mb_in = statistics.median(d["bytes_in"] for d in done) / 1e6
        mb_out = statistics.median(d["bytes_out"] for d in done) / 1e6
        per_paper = cpu / args.papers
        print(f"\nper shard here ({args.papers} e-prints): {cpu:.2f} CPU s, {mb_in:.1f} MB in, {mb_out:.2f} MB out; "
              f"per paper {per_paper * 1000:.1f} CPU ms, {mb_in / args.papers:.2f} MB in, "
              f"{mb_out / args.papers * 1000:.0f} KB out")
        n_shards = args.arxiv_tb * 1e6 / SHARD_MB
        per_shard_papers = args.arxiv_papers / n_shards
        cpu_hours = args.arxiv_papers * per_paper / 3600
        print(f"an arXiv shard ({SHARD_MB} MB, {per_shard_papers:.0f} papers on average): "
              f"{per_shard_papers * per_paper:.0f} CPU s, {per_shard_papers * mb_out / args.papers:.0f} MB out")
        net_hours = args.arxiv_tb * 8e3 / args.gbps / 3600
        machine_hours = max(cpu_hours / args.cores, net_hours)
        print(f"all of arXiv ({args.arxiv_papers / 1e6:.1f} M papers, {args.arxiv_tb} TB of sources, "
              f"{n_shards:.0f} shards): {cpu_hours:.0f} CPU hours ({cpu_hours / args.cores:.1f} h of a "
              f"{args.cores}-core machine) and {args.arxiv_tb:.1f} TB read "
              f"({net_hours:.1f} h at {args.gbps:g} Gbit/s): "
              f"{machine_hours:.1f} machine-hours, {machine_hours / 10:.2f} h on ten machines; "
              f"{args.arxiv_papers * mb_out / args.papers / 1e3:.0f} GB written")
        out = ROOT / "benchmarks" / "figures" / "fulltext_engines.png"
        plot(rows, out, f"full-text map, {args.shards} shards of {args.papers} real-LaTeX e-prints, "
                        f"{args.workers} workers")
        print(f"wrote {out.relative_to(ROOT)}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
