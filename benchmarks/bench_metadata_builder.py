"""Benchmark: the metadata builder against a naive `datasets` pipeline doing the same job.

Usage:
    .venv/bin/python benchmarks/bench_metadata_builder.py                    # 1M records, RSS check at 2M
    .venv/bin/python benchmarks/bench_metadata_builder.py --records 200000 --rss-records 400000

Generates a synthetic Kaggle-format snapshot (the 14-key schema, realistic field lengths,
category and licence mix), builds `abstracts-chat` from it with `python -m dataset_builders`,
and times, in the same run, `datasets`: load_dataset("json") -> filter -> map -> to_json doing
the equivalent job (physics filter, length bounds, chat messages). Prints records/s of both,
the ratio, and peak RSS of our build at N and 2N records (flat memory is the goal).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Category mix (primary), roughly the snapshot's: ~45% of papers have a physics category.
CATS = ([("hep-ph", 6), ("hep-th", 5), ("quant-ph", 7), ("astro-ph.GA", 3), ("astro-ph.CO", 3), ("astro-ph.SR", 3),
         ("astro-ph.HE", 2), ("cond-mat.mtrl-sci", 4), ("cond-mat.mes-hall", 3), ("cond-mat.str-el", 2),
         ("cond-mat.stat-mech", 2), ("gr-qc", 3), ("physics.optics", 2), ("physics.flu-dyn", 1),
         ("nucl-th", 1), ("math-ph", 1), ("astro-ph", 1), ("cond-mat", 1)] +
        [("cs.LG", 14), ("cs.CV", 8), ("math.AP", 5), ("math.CO", 5), ("math.PR", 4), ("cs.CL", 6), ("stat.ME", 3),
         ("eess.SP", 3), ("q-bio.NC", 2), ("econ.EM", 1)])
LICENSES = [(None, 55), ("http://arxiv.org/licenses/nonexclusive-distrib/1.0/", 28),
            ("http://creativecommons.org/licenses/by/4.0/", 11), ("http://creativecommons.org/licenses/by-nc-sa/4.0/", 2),
            ("http://creativecommons.org/licenses/by-nc-nd/4.0/", 2), ("http://creativecommons.org/licenses/by-sa/4.0/", 1),
            ("http://creativecommons.org/publicdomain/zero/1.0/", 1)]
WORDS = ("we study the of and a in for with model quantum field theory energy spin phase transition "
         "observations galaxy dark matter scattering lattice symmetry $\\alpha$ $T_c$ $\\mathcal{O}(N)$ "
         "results show that data measurements simulation critical dynamics neutrino black hole entropy").split()


def _choices(pairs, k, rng):
    items, weights = zip(*pairs)
    return rng.choices(items, weights=weights, k=k)


def make_snapshot(path: Path, n: int, seed: int = 0) -> None:
    if path.exists() and path.stat().st_size > 0 and path.with_suffix(".n").exists() and \
            path.with_suffix(".n").read_text() == str(n):
        return
    rng = random.Random(seed)
    pool = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(120, 260))) for _ in range(512)]
    import textwrap

    wrapped = ["  " + "\n".join(textwrap.wrap(p, 79)) + "\n" for p in pool]
    titles = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))).capitalize() for _ in range(512)]
    cats = _choices(CATS, 4096, rng)
    lics = _choices(LICENSES, 4096, rng)
    t0 = time.perf_counter()
    with open(path, "wb", buffering=1 << 22) as f:
        for i in range(n):
            c = cats[i % 4096]
            cross = " " + cats[(i * 7) % 4096] if i % 3 == 0 else ""
            r = {"id": f"{i // 100000 + 1000:04d}.{i % 100000:05d}",
                 "submitter": "A. Author", "authors": "A. Author, B. Autor and C. M\\\"uller",
                 "title": titles[i % 512] + "\n  " + titles[(i // 512) % 512],
                 "comments": "12 pages, 4 figures", "journal-ref": None, "doi": None, "report-no": None,
                 "categories": c + cross, "license": lics[i % 4096], "abstract": f"  Study {i}: " + wrapped[(i * 13) % 512][2:],
                 "versions": [{"version": "v1", "created": "Mon, 2 Apr 2007 19:18:42 GMT"}],
                 "update_date": "2008-11-26",
                 "authors_parsed": [["Author", "A.", ""], ["Autor", "B.", ""], ["Müller", "C.", ""]]}
            f.write(orjson.dumps(r) + b"\n")
    path.with_suffix(".n").write_text(str(n))
    print(f"wrote {n:,} records ({path.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)


def head(src: Path, dst: Path, n: int) -> None:
    if dst.exists() and dst.with_suffix(".n").exists() and dst.with_suffix(".n").read_text() == str(n):
        return
    with open(src, "rb") as f, open(dst, "wb") as g:
        for i, line in enumerate(f):
            if i >= n:
                break
            g.write(line)
    dst.with_suffix(".n").write_text(str(n))


def run_ours(inp: Path, out: Path, hash_inputs: bool) -> dict:
    cmd = [sys.executable, "-m", "dataset_builders", "build", "--spec", "abstracts-chat", "--input", str(inp),
           "--out", str(out), "--no-progress"] + ([] if hash_inputs else ["--no-input-hash"])
    code = ("import resource,subprocess,sys,time;t=time.perf_counter();r=subprocess.run(sys.argv[1:]);"
            "d=time.perf_counter()-t;u=resource.getrusage(resource.RUSAGE_CHILDREN);"
            "print(d, u.ru_maxrss, u.ru_utime+u.ru_stime);"
            "sys.exit(r.returncode)")
    p = subprocess.run([sys.executable, "-c", code, *cmd], cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"build failed: {p.stderr[-2000:]}")
    secs, rss_kb, cpu = p.stdout.split()
    manifest = json.loads((out / "manifest.json").read_text())
    return {"seconds": float(secs), "cpu": float(cpu), "rss_mb": int(rss_kb) / 1024, "read": manifest["counts"]["read"],
            "kept": manifest["counts"]["kept"]}


NAIVE = r'''
import sys, time, resource, datasets
from dataset_builders.taxonomy import ALL_PHYSICS, archive_of
datasets.disable_progress_bars()
inp, out, nproc = sys.argv[1], sys.argv[2], int(sys.argv[3])
SYSTEM = "You are QwenPhysics, a physics assistant trained on arXiv papers."
def keep(r):
    cats = r["categories"].split()
    if not any(c in ALL_PHYSICS or archive_of(c) in ALL_PHYSICS for c in cats):
        return False
    n = len(r["abstract"].strip())
    return 100 <= n <= 6000 and len(r["title"].strip()) >= 5
def fmt(r):
    title, abstract = " ".join(r["title"].split()), " ".join(r["abstract"].split())
    return {"messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": f'Write the abstract of a physics paper titled "{title}".'},
                         {"role": "assistant", "content": abstract}], "id": r["id"]}
t = time.perf_counter()
ds = datasets.load_dataset("json", data_files=inp, split="train", cache_dir=out + ".cache")
ds = ds.filter(keep, num_proc=nproc)
ds = ds.map(fmt, remove_columns=ds.column_names, num_proc=nproc)
ds.to_json(out, lines=True)
u, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(time.perf_counter() - t, u.ru_maxrss, u.ru_utime + u.ru_stime + c.ru_utime + c.ru_stime, len(ds))
'''


def run_naive(inp: Path, out: Path, nproc: int) -> dict:
    import shutil

    shutil.rmtree(str(out) + ".cache", ignore_errors=True)
    p = subprocess.run([sys.executable, "-c", NAIVE, str(inp), str(out), str(nproc)], cwd=ROOT,
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if p.returncode != 0:
        raise SystemExit(f"naive pipeline failed: {p.stderr[-2000:]}")
    secs, rss_kb, cpu, kept = p.stdout.split()[-4:]
    shutil.rmtree(str(out) + ".cache", ignore_errors=True)
    return {"seconds": float(secs), "cpu": float(cpu), "rss_mb": int(rss_kb) / 1024, "kept": int(kept)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--rss-records", type=int, default=2_000_000, help="second size for the RSS check (0: skip)")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "results" / "metadata")
    ap.add_argument("--naive-procs", type=int, default=2, help="num_proc for the datasets pipeline")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    big_n = max(args.records, args.rss_records)
    big = args.work / f"synthetic-{big_n}.jsonl"
    make_snapshot(big, big_n)
    small = big
    if args.records != big_n:
        small = args.work / f"synthetic-{args.records}.jsonl"
        head(big, small, args.records)

    rows = []
    ours = run_ours(small, args.work / "ours", hash_inputs=True)
    rows.append(("ours (abstracts-chat, input SHA-256 on)", args.records, ours))
    ours_nohash = run_ours(small, args.work / "ours-nohash", hash_inputs=False)
    rows.append(("ours (--no-input-hash)", args.records, ours_nohash))
    naive = run_naive(small, args.work / "naive.jsonl", args.naive_procs)
    rows.append((f"naive datasets (num_proc={args.naive_procs})", args.records, naive))
    if args.rss_records and args.rss_records != args.records:
        ours_big = run_ours(big, args.work / "ours-big", hash_inputs=True)
        rows.append(("ours (abstracts-chat, input SHA-256 on)", args.rss_records, ours_big))

    print("\n| pipeline | records | wall s | records/s | CPU s | records/CPU-s | peak RSS MB | papers kept |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, n, r in rows:
        print(f"| {name} | {n:,} | {r['seconds']:.1f} | {n / r['seconds']:,.0f} | {r['cpu']:.1f} | "
              f"{n / r['cpu']:,.0f} | {r['rss_mb']:.0f} | {r['kept']:,} |")
    ratio = naive["seconds"] / ours["seconds"]
    print(f"\nspeed-up over the naive datasets pipeline: {ratio:.1f}x "
          f"({args.records / ours['seconds']:,.0f} vs {args.records / naive['seconds']:,.0f} records/s)")
    if args.rss_records and args.rss_records != args.records:
        print(f"peak RSS at {args.records:,} -> {args.rss_records:,} records: {ours['rss_mb']:.0f} -> "
              f"{ours_big['rss_mb']:.0f} MB ({ours_big['rss_mb'] / ours['rss_mb']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
