"""Metadata builds from Kaggle snapshot files, in blocks of lines, on one core or several.

The snapshot is one JSON object per line, so it cuts into blocks of whole lines. A block
processor does everything that depends on one record only: the category prefilter on the raw
bytes, parsing, the filters, normalisation and the serialised output lines. Per record that
passed the filters it keeps the two dedup keys, the split and the size of its lines.

Deduplication needs the order of the whole input: the first record with a given base id (or
a given normalised title + abstract) wins. `Merger` replays that over the blocks in input
order with array operations on the keys and appends each block's surviving lines to the
output. Nothing else about a record depends on the records before it, so the result is the
same, byte for byte, for any block size and any number of processes (tests compare them).

Plain (uncompressed) files split into byte ranges that worker processes read themselves;
compressed files (.gz, .zst) and `--limit` runs are read in blocks by one process. Blocks are
a few MB so that a block and its output stay in the CPU cache.
"""

from __future__ import annotations

import ctypes
import mmap
import multiprocessing as mp
import os
import signal
import sys
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np

from qwenphysics.core.processes import die_with_parent

from . import contamination, contexts
from .filters import build as build_filters
from .filters import category_check, first_failure
from .normalize import content_key, normalise
from .output import SplitWriter
from .readers import input_kind
from .readers.kaggle import BLOCK_BYTES, is_plain, iter_blocks, parse_line, raw_categories
from .records import Drop, InputError, Paper
from .spec import Spec
from .split import SPLITS, bucket, split_of_bucket

SLOT_FACTOR = 4  # shared-memory room for a block's output, in blocks; larger output goes to scratch files
_SPLIT_OF_BUCKET = [SPLITS.index(split_of_bucket(b)) for b in range(10000)]  # bucket -> index in SPLITS
_CACHE_MAX = 1 << 16  # distinct category strings remembered by the prefilter


def tune_malloc() -> None:
    """Let glibc keep freed multi-MB block buffers in the heap for reuse.

    By default each 8 MB block (and its output) is a fresh `mmap` that the kernel must
    zero-fill page by page, then gives back: on a 1M-record build that was ~850k page faults
    and a fifth of the run time. Raising the mmap and trim thresholds keeps that memory
    mapped (RSS grows by about two blocks). Meant for processes that exist to build: the
    workers and the command line; a no-op where `mallopt` is missing."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    mallopt(m_mmap_threshold, 32 << 20)  # glibc's ceiling on 64-bit systems
    mallopt(m_trim_threshold, 1 << 30)
    mallopt(m_top_pad, 64 << 20)


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def is_snapshot_file(spec: str) -> bool:
    return input_kind(spec) == "kaggle"


@dataclass
class Block:
    counts: Counter  # read / drop:<reason> from parsing and the filters
    id_keys: np.ndarray  # int64, one per record that passed the filters, in input order
    content_keys: np.ndarray  # int64
    split: np.ndarray  # uint8 index into SPLITS
    nlines: np.ndarray  # int32: examples (lines) of the record
    out: dict[str, bytes | str | tuple[int, int]]  # split -> its lines, a scratch file, or a slice of the arena
    # (record index, reason): records that passed the filters but whose examples were all
    # screened out (contexts.screen); they still take part in the dedup, like in the serial route
    render_drops: list = field(default_factory=list)
    example_drops: list = field(default_factory=list)  # (record index, reasons of dropped examples)


class BlockProcessor:
    """Per-record work for one spec, over blocks of snapshot lines."""

    def __init__(self, spec: Spec):
        self.spec = spec
        checks = build_filters(spec.filters)
        self.checks = [c for _, c in checks]
        # after the byte-level prefilter has judged a record's categories, skip that check
        self.checks_prefiltered = [c for name, c in checks if name != "category"]
        self.prefilter = category_check(spec.filters)
        self.cache: dict[bytes, str | None] = {}
        f = spec.filters
        self.want_date = bool(f.date_from or f.date_to) or "year" in contexts.placeholders_used(spec)
        self.render = contexts.line_renderer(spec)
        self.contamination = contamination.for_spec(spec)

    def _judge(self, cats: bytes) -> str | None:
        """The prefilter's verdict on a raw categories string, remembered for the next line."""
        cache = self.cache
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        prefilter = self.prefilter
        assert prefilter is not None  # process() judges with this only when there is a prefilter
        r = cache[cats] = prefilter(cats.decode("utf-8", "replace").split())
        return r

    def stage(self) -> tuple[Callable[[Paper, list], str | None], Callable[[Counter], Block]]:
        """The per-record stage over one block: `add(paper, checks)` takes a parsed record
        (filters, normalisation, its examples as JSONL lines, its two dedup keys, its split);
        `finish(counts)` checks the block's contamination at once and returns the Block. The
        snapshot's lines (`process`) and any reader's papers (`process_papers`) go through it."""
        ids, keys = array("q"), array("q")
        splits, nlines = array("B"), array("i")
        render_drops: list[tuple[int, str]] = []
        example_drops: list[tuple[int, tuple[str, ...]]] = []
        folded = bytearray()  # title + abstract of every record rendered, folded, for contamination
        folded_at: list[int] = []
        fold = contamination.fold
        out: list[list[bytes]] = [[] for _ in SPLITS]
        render = self.render

        def add(p: Paper, checks: list) -> str | None:
            """None, or the filter that dropped the record."""
            reason = first_failure(checks, p)
            if reason:
                return reason
            normalise(p)
            b = bucket(p.id)
            s = _SPLIT_OF_BUCKET[b]
            pieces, k, drop, skipped = render(p, b)
            folded_at.append(len(folded))
            folded.extend(fold(p.title + "\n" + p.abstract))
            if drop is not None:
                render_drops.append((len(nlines), drop))
            elif skipped:
                example_drops.append((len(nlines), skipped))
            out[s] += pieces
            ids.append(hash(p.id))
            keys.append(content_key(p.title, p.abstract))
            splits.append(s)
            nlines.append(k)
            return None

        def finish(counts: Counter) -> Block:
            nonlocal render_drops, example_drops
            dirty = self.contamination.check_folded(folded, folded_at)
            if dirty:  # rare: such a record's lines stay in `out` and the merger cuts them out
                render_drops = sorted({**dict(render_drops), **{i: "contaminated" for i in dirty}}.items())
                example_drops = [(i, r) for i, r in example_drops if i not in dirty]
            return Block(counts, np.frombuffer(ids, dtype=np.int64), np.frombuffer(keys, dtype=np.int64),
                         np.frombuffer(splits, dtype=np.uint8), np.frombuffer(nlines, dtype=np.int32),
                         {name: b"".join(o) for name, o in zip(SPLITS, out)}, render_drops, example_drops)

        return add, finish

    def process(self, data: bytes | mmap.mmap, source: str, max_records: int | None = None, begin: int = 0,
                end: int | None = None) -> Block:
        """`data[begin:end]`: whole snapshot lines (the last may lack its newline)."""
        counts: Counter = Counter()
        add, finish = self.stage()
        prefilter = self._judge if self.prefilter is not None else None
        checks_all, checks_pre = self.checks, self.checks_prefiltered
        want_date = self.want_date
        find, pos, read = data.find, begin, 0
        cache_get = self.cache.get
        n = len(data) if end is None else end
        limit = n + 1 if max_records is None else max_records
        while pos < n and read < limit:
            nl = find(b"\n", pos)
            if nl < 0:
                nl = n
            start, pos = pos, nl + 1
            checks = checks_all
            if prefilter is not None:
                cats = raw_categories(data, start, nl)
                if cats is not None:
                    reason = cache_get(cats, cats)
                    if reason is cats:  # not judged yet
                        reason = prefilter(cats)
                    if reason:
                        read += 1
                        # mypy cannot narrow the `reason is cats` sentinel test: a verdict is a str here
                        counts["drop:" + reason] += 1  # type: ignore[operator]
                        continue
                    checks = checks_pre
            p = parse_line(data[start:nl], source, None, want_date)
            if p is None:  # blank line: not a record
                continue
            read += 1
            if isinstance(p, Drop):
                counts["drop:" + p.reason] += 1
                continue
            reason = add(p, checks)
            if reason:
                counts["drop:" + reason] += 1
        counts["read"] += read
        return finish(counts)

    def process_papers(self, papers: Iterable[Paper]) -> Block:
        """The same stage over papers any reader parsed (which counted what it read and dropped)."""
        counts: Counter = Counter()
        add, finish = self.stage()
        checks = self.checks
        for p in papers:
            reason = add(p, checks)
            if reason:
                counts["drop:" + reason] += 1
        return finish(counts)


class SortedKeys:
    """A growing set of int64 keys as a few sorted runs (a log-structured merge): membership
    is a binary search per run, an insert appends a run and merges runs of similar size, so
    the total work stays O(n log n) however many blocks arrive."""

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(r) for r in self.runs)

    def contains(self, q: np.ndarray) -> np.ndarray:
        if not self.runs or not len(q):
            return np.zeros(len(q), dtype=bool)
        order = np.argsort(q, kind="stable")
        qs = q[order]  # sorted queries walk each run forwards: cache-friendly binary searches
        hit = np.zeros(len(q), dtype=bool)
        for run in self.runs:
            i = np.searchsorted(run, qs)
            i[i == len(run)] = 0
            hit |= run[i] == qs
        found = np.empty(len(q), dtype=bool)
        found[order] = hit
        return found

    def add(self, new: np.ndarray) -> None:
        if not len(new):
            return
        runs = self.runs
        runs.append(np.sort(new))
        while len(runs) > 1 and len(runs[-2]) <= 2 * len(runs[-1]):
            b, a = runs.pop(), runs.pop()
            merged = np.concatenate([a, b])
            merged.sort(kind="stable")  # two sorted runs: a linear merge
            runs.append(merged)


def first_new(keys: np.ndarray, seen: SortedKeys) -> np.ndarray:
    """Mask of the keys that occur for the first time in `keys` and are not in `seen`."""
    mask = np.zeros(len(keys), dtype=bool)
    if len(keys):
        _, first = np.unique(keys, return_index=True)
        mask[first] = True
        mask &= ~seen.contains(keys)
    return mask


class Dedup:
    """The one dedup of every build, over batches of records in input order: the first record
    with a base id wins (every record that passed the filters claims its id), then, among
    those, the first with a normalised title + abstract. Keys: 64-bit hashes (`hash(id)`,
    `content_key`)."""

    def __init__(self) -> None:
        self.ids, self.contents = SortedKeys(), SortedKeys()

    def keep(self, id_keys: np.ndarray, content_keys: np.ndarray) -> tuple[np.ndarray, int, int]:
        """Mask of the records kept, and how many were duplicate ids / duplicate contents."""
        id_ok = first_new(id_keys, self.ids)
        self.ids.add(id_keys[id_ok])
        idx = np.flatnonzero(id_ok)
        sub = first_new(content_keys[idx], self.contents)
        self.contents.add(content_keys[idx][sub])
        kept = np.zeros(len(id_ok), dtype=bool)
        kept[idx[sub]] = True
        return kept, len(id_ok) - len(idx), len(idx) - int(sub.sum())


class Merger:
    """Replays the one-pass dedup over blocks in input order and appends the survivors."""

    def __init__(self, writer: SplitWriter, counts: Counter, arena: memoryview | None = None) -> None:
        self.writer, self.counts, self.arena = writer, counts, arena
        self.dedup = Dedup()

    def add(self, blk: Block) -> None:
        counts = self.counts
        counts.update(blk.counts)
        kept, n_id, n_content = self.dedup.keep(blk.id_keys, blk.content_keys)
        if n_id:
            counts["drop:duplicate_id"] += n_id
        if n_content:
            counts["drop:duplicate_content"] += n_content
        for i, reason in blk.render_drops:  # dedup first, then the screen: as in the serial route
            if kept[i]:
                kept[i] = False
                counts["drop:" + reason] += 1
        for i, reasons in blk.example_drops:
            if kept[i]:
                for reason in reasons:
                    counts["example_drop:" + reason] += 1
        counts["kept"] += int(kept.sum())
        for code, name in enumerate(SPLITS):
            self._append(name, blk.out[name], blk.split == code, kept, blk.nlines)

    def _append(self, split: str, out: bytes | memoryview | str | tuple[int, int], in_split: np.ndarray,
                kept: np.ndarray, nlines: np.ndarray) -> None:
        if isinstance(out, tuple):  # (offset, length) in the shared arena
            assert self.arena is not None  # blocks point into the arena only while it is open
            out = self.arena[out[0]:out[0] + out[1]]
        elif isinstance(out, str):  # a worker's scratch file
            path = out
            with open(path, "rb") as f:
                out = f.read()
            os.unlink(path)
        lines = nlines[in_split]
        has = lines > 0  # records screened out wrote no line
        keep, lines = kept[in_split][has], lines[has]
        if not keep.any():
            return
        if not keep.all():  # rare (duplicates): cut the dropped records' lines out
            line_ends = np.flatnonzero(np.frombuffer(out, dtype=np.uint8) == 10) + 1
            ends = line_ends[np.cumsum(lines) - 1]
            starts = np.concatenate([[0], ends[:-1]])
            view = memoryview(out)
            out = b"".join(view[a:b] for a, b in zip(starts[keep].tolist(), ends[keep].tolist()))
        self.writer.append_lines(split, out, papers=int(keep.sum()), lines=int(lines[keep].sum()))


# ---- one process -----------------------------------------------------------------------

def run_serial(spec: Spec, inputs: list[str], writer: SplitWriter, counts: Counter, input_issues: list, *,
               limit: int | None = None, block_bytes: int = BLOCK_BYTES,
               progress: Callable[[int], None] | None = None) -> None:
    proc = BlockProcessor(spec)
    merger = Merger(writer, counts)
    remaining = limit
    for s in inputs:
        if remaining is not None and remaining <= 0:
            break
        path = Path(s)
        issues: list[str] = []
        for data in iter_blocks(path, block_bytes, issues):
            blk = proc.process(data, path.name, remaining)
            merger.add(blk)
            if progress is not None:
                progress(counts["read"])
            if remaining is not None:
                remaining -= blk.counts["read"]
                if remaining <= 0:
                    break
        input_issues += [{"input": s, "issue": issue} for issue in issues]


def run_papers(spec: Spec, papers: Iterable[Paper], writer: SplitWriter, counts: Counter, *,
               batch: int = 4096, progress: Callable[[int], None] | None = None) -> None:
    """A metadata spec over papers from any reader (OAI-PMH pages, a Hugging Face dataset, a
    caller's source): the block stage on batches of papers, merged in order like blocks."""
    proc = BlockProcessor(spec)
    merger = Merger(writer, counts)
    it = iter(papers)
    while True:
        chunk = list(islice(it, batch))
        if not chunk:
            break
        merger.add(proc.process_papers(chunk))
        if progress is not None:
            progress(counts["read"])


# ---- several processes -------------------------------------------------------------------

def plan(inputs: list[str], block_bytes: int = BLOCK_BYTES) -> list[tuple[str, int, int]]:
    """Byte ranges `(path, start, end)` covering every input; each ends just after a line
    break (or at the end of its file)."""
    ranges = []
    for s in inputs:
        size = os.path.getsize(s)
        start = 0
        with open(s, "rb") as f:
            while start < size:
                end = start + block_bytes
                if end >= size:
                    end = size
                else:
                    f.seek(end - 1)
                    while True:
                        chunk = f.read(1 << 16)
                        if not chunk:
                            end = size
                            break
                        i = chunk.find(b"\n")
                        if i >= 0:
                            end = f.tell() - len(chunk) + i + 1
                            break
                ranges.append((s, start, end))
                start = end
    return ranges


_worker: dict = {}
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _init(spec: Spec, scratch: str, arena: mmap.mmap, slot_bytes: int, parent: int) -> None:
    die_with_parent(parent)  # a killed build takes its workers with it
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    tune_malloc()
    _worker.update(proc=BlockProcessor(spec), scratch=scratch, arena=arena, slot_bytes=slot_bytes)


def process_range(task: tuple[int, int, str, int, int]) -> Block:
    """A worker's job: one byte range; its output lines go to the task's slot of the shared
    arena (or to scratch files when they do not fit)."""
    try:
        return _process_range(*task)
    except Exception:
        raise
    except BaseException as e:  # KeyboardInterrupt, SystemExit: still reach the parent as a failure
        raise RuntimeError(f"worker stopped: {e.__class__.__name__}") from None


def _process_range(index: int, slot: int, path: str, start: int, end: int) -> Block:
    with open(path, "rb") as f:
        # mapped, not read: the page-cache pages are used in place instead of copied
        off = start - start % mmap.ALLOCATIONGRANULARITY
        with mmap.mmap(f.fileno(), end - off, offset=off, prot=mmap.PROT_READ,
                       flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)) as data:
            blk = _worker["proc"].process(data, Path(path).name, begin=start - off, end=end - off)
    arena, slot_bytes = _worker["arena"], _worker["slot_bytes"]
    if sum(len(v) for v in blk.out.values()) <= slot_bytes:
        pos = slot * slot_bytes
        for name in SPLITS:
            out = blk.out[name]
            arena[pos:pos + len(out)] = out
            blk.out[name] = (pos, len(out))
            pos += len(out)
    else:
        for name in SPLITS:
            fn = os.path.join(_worker["scratch"], f"{index:07d}.{name}")
            with open(fn, "wb") as g:
                g.write(blk.out[name])
            blk.out[name] = fn
    return blk


def run_parallel(spec: Spec, inputs: list[str], writer: SplitWriter, counts: Counter, input_issues: list, *,
                 workers: int, block_bytes: int = BLOCK_BYTES, progress: Callable[[int], None] | None = None,
                 on_started: Callable[[], None] | None = None) -> None:
    """Plain snapshot files, `workers` forked processes over byte ranges, merged in order.

    Workers hand their output lines over through a shared memory arena of slots: task i
    writes slot i mod n, and task i is submitted only after task i - n has been merged, so a
    slot is never overwritten before the parent has appended it. `on_started()` runs once the
    workers exist: threads may start from then on (a process should not fork while it has
    threads)."""
    for s in inputs:
        if os.path.getsize(s) == 0:
            input_issues.append({"input": s, "issue": "empty_input"})
    ranges = plan(inputs, block_bytes)
    nslots = 2 * workers + 2
    slot_bytes = SLOT_FACTOR * block_bytes
    arena = mmap.mmap(-1, nslots * slot_bytes)  # anonymous, shared with the forked workers
    scratch = writer.tmp / ".ranges"
    scratch.mkdir()
    merger = Merger(writer, counts, memoryview(arena))
    sys.stdout.flush()
    sys.stderr.flush()
    # fork: the workers share the parent's string-hash seed, so their dedup keys agree.
    # A worker that dies (killed, out of memory) fails the build with BrokenProcessPool.
    try:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"), initializer=_init,
                                 initargs=(spec, str(scratch), arena, slot_bytes, os.getpid())) as pool:
            # Fork every worker now, before the caller starts threads, with Ctrl-C and SIGTERM
            # held back: Python runs a signal's handler at the next bytecode, and one that falls
            # in fork's own bookkeeping is swallowed ("Exception ignored"), so the build would
            # carry on. The held signal arrives once the workers exist.
            held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
            try:
                pool.submit(int).result()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
            if on_started is not None:
                on_started()
            try:
                pending: deque = deque()
                for i, (path, a, b) in enumerate(ranges):
                    if len(pending) == nslots:
                        merger.add(pending.popleft().result())
                        if progress is not None:
                            progress(counts["read"])
                    pending.append(pool.submit(process_range, (i, i % nslots, path, a, b)))
                while pending:
                    merger.add(pending.popleft().result())
                    if progress is not None:
                        progress(counts["read"])
            except BrokenProcessPool:
                raise InputError("a worker process died (killed, or out of memory?); rerun, or use "
                                 "--workers 1 to build in one process") from None
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        merger.arena = None
        try:
            arena.close()
        except BufferError:  # a view is still alive (an exception's traceback); the GC unmaps it
            pass
    scratch.rmdir()


def can_parallel(inputs: list[str], limit: int | None, workers: int, block_bytes: int) -> bool:
    return (workers > 1 and limit is None and "fork" in mp.get_all_start_methods()
            and all(is_plain(s) for s in inputs)
            and sum(os.path.getsize(s) for s in inputs) > block_bytes)

