"""Benchmark: the metadata builder against a naive `datasets` pipeline doing the same job.

Usage:
    .venv/bin/python benchmarks/bench_metadata_builder.py                    # 1M records, RSS check at 2M
    .venv/bin/python benchmarks/bench_metadata_builder.py --records 200000 --rss-records 400000

Generates a synthetic Kaggle-format snapshot (the 14-key schema, realistic field lengths,
category and licence mix), builds `abstracts-chat` from it with `python -m dataset_builders`,
on all cores and with `--workers 1`, and times, in the same run, `datasets`:
load_dataset("json") -> filter -> map -> to_json doing the equivalent job (physics filter,
length bounds, chat messages). Every figure is for the whole command (start-up included);
memory is the peak PSS summed over the command's process tree (workers included), taken in a
second run of each command because sampling it costs CPU. Our builder runs twice more: as a
first build from the snapshot (its SHA-256 computed) and as a later one (the digest cached,
as when a second training context is built from the same snapshot). Prints
records/s, the ratio, peak memory at N and 2N records (flat memory is the goal), and writes
results.json and a plot next to the generated inputs.
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
            ("http://creativecommons.org/licenses/by/4.0/", 11),
            ("http://creativecommons.org/licenses/by-nc-sa/4.0/", 2),
            ("http://creativecommons.org/licenses/by-nc-nd/4.0/", 2),
            ("http://creativecommons.org/licenses/by-sa/4.0/", 1),
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
                 "categories": c + cross, "license": lics[i % 4096],
                 "abstract": f"  Study {i}: " + wrapped[(i * 13) % 512][2:],
                 "versions": [{"version": "v1", "created": "Mon, 2 Apr 2007 19:18:42 GMT"}],
                 "update_date": "2008-11-26",
                 "authors_parsed": [["Author", "A.", ""], ["Autor", "B.", ""], ["Müller", "C.", ""]]}
            f.write(orjson.dumps(r) + b"\n")
    path.with_suffix(".n").write_text(str(n))
    print(f"wrote {n:,} records ({path.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)


def respace(src: Path, dst: Path) -> None:
    """The same records with `", "` / `": "` separators, as a snapshot re-serialised by `json.dumps`."""
    if dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime:
        return
    tmp = dst.with_suffix(".tmp")
    with open(src, "rb") as f, open(tmp, "w", encoding="utf-8") as g:
        for line in f:
            g.write(json.dumps(orjson.loads(line), ensure_ascii=False) + "\n")
    tmp.replace(dst)


def head(src: Path, dst: Path, n: int) -> None:
    if dst.exists() and dst.with_suffix(".n").exists() and dst.with_suffix(".n").read_text() == str(n):
        return
    with open(src, "rb") as f, open(dst, "wb") as g:
        for i, line in enumerate(f):
            if i >= n:
                break
            g.write(line)
    dst.with_suffix(".n").write_text(str(n))


def _tree_pss_kb(root: int) -> int:
    """Proportional set size of a process and all its descendants (Linux /proc), in kB: memory
    shared between forked workers counts once."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def measure(cmd: list[str], env: dict | None = None, memory: bool = False) -> dict:
    """Wall time of the whole command (start-up included) and CPU time of its process tree;
    with `memory`, the peak of its tree's summed PSS sampled every 50 ms instead. Each sample
    costs ~8 ms of CPU (the kernel walks every mapping), a sixth of a core on this machine, so
    timed runs and memory runs are separate runs."""
    import tempfile

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, env=env)
        peak = 0
        if memory:
            while p.poll() is None:
                peak = max(peak, _tree_pss_kb(p.pid))
                time.sleep(0.05)
        else:
            p.wait()
        seconds = time.perf_counter() - t
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed: {stderr[-2000:]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"seconds": seconds, "cpu": cpu, "rss_mb": peak / 1024, "stderr": stderr}


def warm(path: Path) -> None:
    """Read a file once so every timed run finds it in the page cache (no order bias)."""
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


REPEAT = 3  # timed runs of each of our builds (a few seconds each); the median is reported


def timed_then_memory(cmd: list[str], env: dict | None, reset, repeat: int) -> dict:
    """`repeat` timed runs of `cmd` (the median, with every run's seconds when more than one),
    then one run sampling memory; `reset()` runs before each."""
    timed, rss_mb = [], 0.0
    for memory in [False] * repeat + [True]:
        reset()
        m = measure(cmd, env=env, memory=memory)
        if memory:
            rss_mb = m["rss_mb"]
        else:
            timed.append(m)
    timed.sort(key=lambda m: m["seconds"])
    r = {**timed[len(timed) // 2], "rss_mb": rss_mb}
    if repeat > 1:
        r["all_seconds"] = [round(m["seconds"], 2) for m in timed]
    return r


def run_ours(inp: Path, out: Path, hash_inputs: bool, workers: int | None = None, hash_cache: Path | None = None,
             cold: bool = True) -> dict:
    """`hash_cache`: the input-digest cache directory; `cold` empties it first, so the build
    hashes its input as a first build from a new snapshot does. Timed REPEAT times (median),
    then once more for memory."""
    cmd = [sys.executable, "-m", "dataset_builders", "build", "--spec", "abstracts-chat", "--input", str(inp),
           "--out", str(out), "--no-progress"] + ([] if hash_inputs else ["--no-input-hash"]) + \
          ([] if workers is None else ["--workers", str(workers)])
    import shutil

    env = None if hash_cache is None else {**os.environ, "QWENPHYSICS_CACHE": str(hash_cache)}

    def reset() -> None:
        shutil.rmtree(out, ignore_errors=True)  # each run starts without an earlier run's output
        if hash_cache is not None and cold:
            shutil.rmtree(hash_cache, ignore_errors=True)
        warm(inp)

    r = timed_then_memory(cmd, env, reset, REPEAT)
    manifest = json.loads((out / "manifest.json").read_text())
    return {"seconds": r["seconds"], "all_seconds": r["all_seconds"], "cpu": r["cpu"], "rss_mb": r["rss_mb"],
            "read": manifest["counts"]["read"], "kept": manifest["counts"]["kept"]}


NAIVE = r'''
import sys, datasets
from dataset_builders.taxonomy import ALL_PHYSICS, archive_of
datasets.disable_progress_bars()
inp, out, nproc = sys.argv[1], sys.argv[2], int(sys.argv[3]) or None
from qwenphysics.core.prompts import system_prompt
SYSTEM = system_prompt()
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
ds = datasets.load_dataset("json", data_files=inp, split="train", cache_dir=out + ".cache")
ds = ds.filter(keep, num_proc=nproc)
ds = ds.map(fmt, remove_columns=ds.column_names, num_proc=nproc)
ds.to_json(out, lines=True)
print("kept", len(ds), file=sys.stderr)
'''


def run_naive(inp: Path, out: Path, nproc: int) -> dict:
    import shutil

    def reset() -> None:
        shutil.rmtree(str(out) + ".cache", ignore_errors=True)
        out.unlink(missing_ok=True)
        warm(inp)

    r = timed_then_memory([sys.executable, "-c", NAIVE, str(inp), str(out), str(nproc)],
                          {**os.environ, "PYTHONPATH": str(ROOT)}, reset, 1)
    kept = int(r["stderr"].rsplit("kept", 1)[1].split()[0])
    shutil.rmtree(str(out) + ".cache", ignore_errors=True)
    return {"seconds": r["seconds"], "cpu": r["cpu"], "rss_mb": r["rss_mb"], "kept": kept}


def plot(results: list[dict], path: Path) -> None:
    """Records/s and peak RSS per pipeline, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['pipeline'].replace('`', '')}\n{r['records'] / 1e6:g}M records" for r in results]
    colors = ["#c0504d" if r["pipeline"].startswith("naive") else "#4f81bd" for r in results]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 0.9 * len(results) + 1.5))
    a.barh(labels, [r["records"] / r["seconds"] / 1e3 for r in results], color=colors)
    a.set_xlabel("thousand input records / s (wall)")
    a.invert_yaxis()
    b.barh(labels, [r["rss_mb"] for r in results], color=colors)
    b.set_xlabel("peak memory, MB (PSS summed over the process tree)")
    b.invert_yaxis()
    b.set_yticklabels([])
    fig.suptitle("abstracts-chat from a synthetic Kaggle snapshot")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--rss-records", type=int, default=2_000_000, help="second size for the RSS check (0: skip)")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "results" / "metadata")
    ap.add_argument("--naive-procs", default="2,0",
                    help="num_proc values for the datasets pipeline, comma-separated (0: datasets' default, "
                         "one process); the speed-up is reported against the fastest")
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
    cache = args.work / "hash-cache"
    ours = run_ours(small, args.work / "ours", hash_inputs=True, hash_cache=cache, cold=True)
    rows.append(("ours, first build (input SHA-256 computed)", args.records, ours))
    ours_cached = run_ours(small, args.work / "ours-cached", hash_inputs=True, hash_cache=cache, cold=False)
    rows.append(("ours, later build (input SHA-256 from cache)", args.records, ours_cached))
    ours_nohash = run_ours(small, args.work / "ours-nohash", hash_inputs=False)
    rows.append(("ours (`--no-input-hash`)", args.records, ours_nohash))
    spaced = args.work / f"{small.stem}-spaced.jsonl"
    respace(small, spaced)
    ours_spaced = run_ours(spaced, args.work / "ours-spaced", hash_inputs=False)
    rows.append(("ours, same records with `\", \"`/`\": \"` separators (`--no-input-hash`)", args.records,
                 ours_spaced))
    ours_one = run_ours(small, args.work / "ours-1", hash_inputs=True, workers=1, hash_cache=cache, cold=True)
    rows.append(("ours (`--workers 1`, input SHA-256 computed)", args.records, ours_one))
    naives = []
    for nproc in [int(x) for x in args.naive_procs.split(",") if x.strip()]:
        r = run_naive(small, args.work / "naive.jsonl", nproc)
        naives.append((nproc, r))
        rows.append((f"naive datasets (num_proc={nproc or 'default'})", args.records, r))
    naive = min((r for _, r in naives), key=lambda r: r["seconds"])
    if args.rss_records and args.rss_records != args.records:
        ours_big = run_ours(big, args.work / "ours-big", hash_inputs=True, hash_cache=cache, cold=True)
        rows.append(("ours, first build (input SHA-256 computed)", args.rss_records, ours_big))
    same = all((args.work / "ours" / f).read_bytes() == (args.work / "ours-1" / f).read_bytes()
               for f in ("train.jsonl", "validation.jsonl", "test.jsonl"))

    print(f"\nwall s: ours the median of {REPEAT} runs (all runs in brackets), the naive pipeline one run")
    print("\n| pipeline | records | wall s | records/s | CPU s | records/CPU-s "
          "| peak memory MB (PSS, all processes) | papers kept |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, n, r in rows:
        runs = f" ({', '.join(f'{x:.1f}' for x in r['all_seconds'])})" if "all_seconds" in r else ""
        print(f"| {name} | {n:,} | {r['seconds']:.1f}{runs} | {n / r['seconds']:,.0f} | {r['cpu']:.1f} | "
              f"{n / r['cpu']:,.0f} | {r['rss_mb']:.0f} | {r['kept']:,} |")
    for label, mine in (("first build", ours), ("later build", ours_cached)):
        print(f"\n{label}: {args.records / mine['seconds']:,.0f} records/s; speed-up over")
        for nproc, r in naives:
            what = "the naive pipeline as written (datasets' defaults, one process)" if not nproc else \
                f"the same pipeline with num_proc={nproc}"
            print(f"  {what}: {r['seconds'] / mine['seconds']:.1f}x ({args.records / r['seconds']:,.0f} records/s)")
        print(f"  (the fastest of them: {naive['seconds'] / mine['seconds']:.1f}x)")
    print(f"all cores vs --workers 1: {ours_one['seconds'] / ours['seconds']:.2f}x; "
          f"outputs byte-identical: {same}")
    same_spaced = all((args.work / "ours-nohash" / f).read_bytes() == (args.work / "ours-spaced" / f).read_bytes()
                      for f in ("train.jsonl", "validation.jsonl", "test.jsonl"))
    print(f"spaced vs compact separators: {ours_spaced['seconds'] / ours_nohash['seconds']:.2f}x the time; "
          f"outputs byte-identical: {same_spaced}")
    if args.rss_records and args.rss_records != args.records:
        print(f"peak memory at {args.records:,} -> {args.rss_records:,} records: {ours['rss_mb']:.0f} -> "
              f"{ours_big['rss_mb']:.0f} MB ({ours_big['rss_mb'] / ours['rss_mb']:.2f}x)")
    results = [{"pipeline": name, "records": n, **r} for name, n, r in rows]
    (args.work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.work / "metadata_builder.png")
    print(f"table and plot: {args.work / 'results.json'}, {args.work / 'metadata_builder.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
