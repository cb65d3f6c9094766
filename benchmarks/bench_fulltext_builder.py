"""Wall time of the full-text builder with 1 and N worker processes on synthetic shards.

Writes `--shards` bulk source tars of `--papers` synthetic LaTeX papers each (the corpus of
bench_latex_cleaner.py: macros, sections, math, comments, figures, appendix, bibliography)
plus matching metadata, then builds `fulltext-completion` from scratch with `--workers 1`
and `--workers N` (fresh work dirs), checks both outputs are byte-identical, and reruns once
more to time a fully resumed build (every shard skipped).

Usage: python benchmarks/bench_fulltext_builder.py [--shards 8] [--papers 20] [--workers 2]
Timings are wall time and depend on free cores; they are printed, never asserted.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import random
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_latex_cleaner import make_paper  # noqa: E402

from dataset_builders import spec as spec_mod  # noqa: E402
from dataset_builders.fulltext import build_fulltext  # noqa: E402


def write_shards(root: Path, shards: int, papers: int, payload: Callable[[int], tuple[bytes, int]],
                 meta: Callable[[str], dict]) -> tuple[Path, Path, int]:
    """`shards` bulk source tars `arXiv_src_2401_NNN.tar` of `papers` e-prints each
    (`payload(k)` -> (the e-print's bytes, the bytes it counts)) and their metadata."""
    src = root / "src"
    src.mkdir(parents=True)
    records, total = [], 0
    for s in range(shards):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            for k in range(papers):
                aid = f"2401.{s * papers + k:05d}"
                data, counted = payload(s * papers + k)
                total += counted
                ti = tarfile.TarInfo(f"2401/{aid}.gz")
                ti.size, ti.mtime = len(data), 0
                tf.addfile(ti, io.BytesIO(data))
                records.append({"id": aid, "license": None, "authors": "A. B",
                                "versions": [{"version": "v1", "created": "Mon, 1 Jan 2024 00:00:00 GMT"}],
                                **meta(aid)})
        (src / f"arXiv_src_2401_{s + 1:03d}.tar").write_bytes(buf.getvalue())
    md = root / "meta.jsonl"
    md.write_text("".join(json.dumps(m) + "\n" for m in records))
    return src, md, total


def write_corpus(root: Path, shards: int, papers: int, seed: int) -> tuple[Path, Path, int]:
    rng = random.Random(seed)

    def payload(k: int) -> tuple[bytes, int]:
        data, _ = make_paper(k, rng)
        return gzip.compress(data, mtime=0), len(data)

    return write_shards(root, shards, papers, payload, lambda aid: {
        "title": f"Synthetic paper {aid} on lattice models",
        "abstract": "We study a lattice model with synthetic text, " * 4, "categories": "cond-mat.str-el"})


def timed(spec, src, md, out, workers) -> float:
    t0 = time.perf_counter()
    build_fulltext(spec, [str(src)], out, metadata=[str(md)], workers=workers, hash_inputs=False,
                   log=lambda s: None)
    return time.perf_counter() - t0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--papers", type=int, default=20, help="papers per shard")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    spec = spec_mod.load("fulltext-completion")
    root = Path(tempfile.mkdtemp(prefix="bench-fulltext-"))
    try:
        src, md, total = write_corpus(root, args.shards, args.papers, args.seed)
        print(f"corpus: {args.shards} shards x {args.papers} papers, {total / 1e6:.1f} MB of LaTeX; "
              f"cpus: {os.cpu_count()}, 1-min load average {os.getloadavg()[0]:.1f}")
        t1 = timed(spec, src, md, root / "w1", 1)
        tn = timed(spec, src, md, root / f"w{args.workers}", args.workers)
        tr = timed(spec, src, md, root / "w1", 1)
        same = all((root / "w1" / f).read_bytes() == (root / f"w{args.workers}" / f).read_bytes()
                   for f in ("train.jsonl", "validation.jsonl", "test.jsonl", "manifest.json", "README.md"))
        m = json.loads((root / "w1" / "manifest.json").read_text())
        print(f"kept {m['counts']['kept']} papers, {sum(m['counts']['examples'].values())} chunks")
        print(f"  1 worker : {t1:6.2f} s  {total / 1e6 / t1:5.2f} MB/s")
        print(f"  {args.workers} workers: {tn:6.2f} s  {total / 1e6 / tn:5.2f} MB/s  speed-up {t1 / tn:.2f}x")
        print(f"  resumed  : {tr:6.2f} s  (every shard skipped: metadata join + chunking + writing only)")
        print(f"  outputs byte-identical: {same}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
