"""The shard map: LaTeX sources -> cleaned papers on disk, one unit at a time, resumable.

`process_shard(unit, work_dir, limits)` is a pure function of its unit's files: it streams
the papers, cleans each with `latex.clean_project`, cuts the text into token-counted atoms
(`atoms.py`) and writes, in `work_dir`:

* `<name>.jsonl`  one line per paper read, in input order: a cleaned paper
                  `{"id", "title", "abstract", "sections": [{"l", "t", "h", "a"}], "meta"?}`
                  or a failure `{"id", "error": <reason>}` (`id` is null when unknown);
* `<name>.ids`    the arXiv ids of those lines, one a line (the reduce step's metadata join
                  reads these instead of the large JSONL);
* `<name>.done`   written last: the unit's fingerprint and counts (`ShardResult`).

Data files are written under temporary names and renamed; a stale `.done` is removed before
work starts, so an interrupted unit has no marker and is redone. A marker whose fingerprint
(input names, sizes and mtimes, cleaner version, limits) still matches means the unit is done.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import orjson

from qwenphysics.core.files import atomic_write
from qwenphysics.core.processes import die_with_parent

from ..latex import LatexError, Limits, clean_project, iter_source_tar, read_eprint, read_project_dir
from ..readers.unarxive import iter_unarxive
from ..split import base_id
from . import atoms
from .inputs import Unit, _eprint_id, classify
from .remote import Access, RemotePath, WorkPath, fetch, work_path

WORK_VERSION = "1"  # bump when the cleaned-paper format or the cleaner's output changes


@dataclass
class ShardResult:
    name: str
    label: str
    fingerprint: str
    records: int = 0  # papers read (lines in <name>.jsonl)
    cleaned: int = 0  # of which cleaned to text
    errors: dict = field(default_factory=dict)  # reason -> papers
    member_issues: dict = field(default_factory=dict)  # archive members skipped, by reason
    input_issues: list = field(default_factory=list)  # e.g. shard_truncated
    stats: dict = field(default_factory=dict)  # cleaner counters summed over the unit
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # of the process that cleaned it, fetching included
    bytes_in: int = 0  # source bytes read (fetched, for a URL)
    bytes_out: int = 0  # cleaned papers written
    resumed: bool = False

    def line(self) -> str:
        if self.resumed:
            return f"{self.label}: done earlier ({self.records} papers, {self.cleaned} cleaned), skipped"
        issues = "".join(f", {i['issue']}" for i in self.input_issues)
        return f"{self.label}: {self.records} papers, {self.cleaned} cleaned, {self.seconds:.1f} s{issues}"


def fingerprint(unit: Unit, limits: Limits, keep_appendix: bool) -> str:
    h = hashlib.sha256()
    h.update(f"work {WORK_VERSION}\0{unit.kind}\0{keep_appendix}\0{limits!r}\0".encode())
    if unit.remote:  # a URL: its name and the identity its listing gave (MD5 or ETag, and size)
        h.update(f"{os.path.basename(unit.paths[0])}\0{unit.remote}\0".encode())
        return h.hexdigest()
    for p in unit.paths:
        st = os.stat(p)
        h.update(f"{os.path.basename(p)}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        if os.path.isdir(p):  # a project folder: its files' sizes and mtimes
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames.sort()
                for fn in sorted(filenames):
                    f = os.path.join(dirpath, fn)
                    try:
                        s = os.lstat(f)
                    except OSError:
                        continue
                    h.update(f"{os.path.relpath(f, p)}\0{s.st_size}\0{s.st_mtime_ns}\0".encode())
    return h.hexdigest()


def _iter_unit(unit: Unit, limits: Limits, members: Counter, issues: list) -> Iterator[tuple]:
    """(id | None, files dict | LatexError | unarXive paper dict)."""
    aid: str | None
    if unit.kind == "tar":
        for aid, res in iter_source_tar(unit.paths[0], limits, members):
            if isinstance(res, LatexError) and res.reason == "shard_truncated":
                issues.append({"input": unit.label, "issue": "shard_truncated"})
                continue
            if isinstance(res, LatexError) and res.reason == "bad_member_name":
                yield None, res
                continue
            yield aid, res
    elif unit.kind == "eprints":
        for p in unit.paths:
            aid = _eprint_id(Path(p))
            try:
                with open(p, "rb") as f:
                    data = f.read(limits.max_eprint_bytes + 1)
                if len(data) > limits.max_eprint_bytes:
                    raise LatexError("too_large", p)
                yield aid, read_eprint(os.path.basename(p), data, limits, members)
            except LatexError as e:
                yield aid, e
            except OSError as e:
                yield aid, LatexError("unreadable", str(e))
    elif unit.kind == "projects":
        for p in unit.paths:
            aid = _eprint_id(Path(p))
            try:
                yield aid, read_project_dir(p, limits, members)
            except LatexError as e:
                yield aid, e
            except OSError as e:
                yield aid, LatexError("unreadable", str(e))
    elif unit.kind == "unarxive":
        drops: Counter = Counter()
        for d in iter_unarxive(unit.paths[0], drops):
            yield d["id"], d
        for reason, n in sorted(drops.items()):
            if reason == "decode_error":
                issues.append({"input": unit.label, "issue": "truncated_input"})
                continue
            for _ in range(n):
                yield None, LatexError(reason)
    else:  # pragma: no cover
        raise ValueError(unit.kind)


def _sections_record(tok, sections, stats: dict) -> list[dict]:
    out = []
    texts = [s.text or "" for s in sections]
    heads = [atoms.heading(s.level, s.title) for s in sections if s.level > 0 and s.title]
    head_counts = iter(atoms.counts(tok, heads))
    for s, a in zip(sections, atoms.atomize_many(tok, texts, stats)):
        rec = {"l": s.level, "t": s.title, "h": next(head_counts) if s.level > 0 and s.title else 0, "a": a}
        if rec["a"] or rec["h"]:
            out.append(rec)
    return out


def _clean_one(aid, res, tok, limits: Limits, keep_appendix: bool, stats: Counter) -> dict:
    if isinstance(res, LatexError):
        return {"id": aid, "error": res.reason}
    if isinstance(res, dict) and "sections" in res and "metadata" in res:  # unarXive paper
        secs = _sections_record(tok, res["sections"], stats)
        if not secs:
            return {"id": aid, "error": "empty_body"}
        return {"id": aid, "title": res["title"], "abstract": res["abstract"], "sections": secs,
                "meta": res["metadata"]}
    try:
        paper = clean_project(res, keep_appendix=keep_appendix, limits=limits)
    except LatexError as e:
        return {"id": aid, "error": e.reason}
    except RecursionError:
        return {"id": aid, "error": "cleaner_recursion"}
    except Exception:  # never let one paper stop a shard; counted, and visible in the manifest
        return {"id": aid, "error": "cleaner_error"}
    for k in ("includes_missing", "macro_defs_unsupported", "unknown_macros", "unbalanced", "too_deep"):
        v = paper.stats.get(k)
        if isinstance(v, int):
            stats[k] += v
    secs = _sections_record(tok, paper.sections, stats)
    if not secs:
        return {"id": aid, "error": "empty_after_cleaning"}
    return {"id": aid, "title": paper.title, "abstract": paper.abstract, "sections": secs}


def unit_bytes(unit: Unit) -> int:
    total = 0
    for p in unit.paths:
        if os.path.isdir(p):
            total += sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(p) for f in fs)
        else:
            total += os.path.getsize(p)
    return total


def process_shard(unit: Unit | str | os.PathLike, work_dir: str | os.PathLike, limits: Limits | None = None,
                  keep_appendix: bool = False, access: Access | None = None) -> ShardResult:
    """Clean every paper of one unit into `work_dir`; safe to call from any process or host
    that sees `work_dir` (the engines in `engine.py` call it). A URL's shard is fetched into a
    local temporary file first, removed afterwards."""
    t0 = time.perf_counter()
    limits = limits if limits is not None else Limits()
    if not isinstance(unit, Unit):  # a bare path: a shard, an e-print, a project or unarXive file
        units = classify([os.fspath(unit)]).units
        if len(units) != 1:
            raise ValueError(f"{unit}: not a single source unit")
        unit = units[0]
    work = work_path(work_dir, access)
    work.mkdir(parents=True, exist_ok=True)
    fp = fingerprint(unit, limits, keep_appendix)
    done = work / f"{unit.name}.done"
    if done.exists():
        done.unlink()
    tok = atoms.get_tokenizer()
    c0 = time.process_time()  # the unit's own work: the tokenizer loads once per process
    fetched = stage = None
    try:
        if unit.remote:
            fetched = fetch(unit.paths[0], access or Access())
            local = replace(unit, paths=(fetched,))
        else:
            local = unit
        if isinstance(work, RemotePath):  # cleaned here, then uploaded whole
            stage = Path(tempfile.mkdtemp(prefix="qwenphysics-unit-"))
            result = _clean_unit(local, stage, tok, limits, keep_appendix, fp)
            for suffix in (".jsonl", ".ids"):
                (work / f"{unit.name}{suffix}").upload(stage / f"{unit.name}{suffix}")
        else:
            result = _clean_unit(local, work, tok, limits, keep_appendix, fp)
    finally:
        if fetched is not None:
            os.unlink(fetched)
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
    result.label = unit.label
    result.seconds = round(time.perf_counter() - t0, 3)
    result.cpu_seconds = round(time.process_time() - c0, 3)
    marker = json.dumps(asdict(result), indent=1).encode()
    if isinstance(done, RemotePath):
        done.write_bytes(marker)
    else:
        atomic_write(done, marker)
    return result


def _clean_unit(unit: Unit, work: Path, tok, limits: Limits, keep_appendix: bool, fp: str) -> ShardResult:
    bytes_in = unit_bytes(unit)
    members: Counter = Counter()
    errors: Counter = Counter()
    stats: Counter = Counter()
    issues: list = []
    records = cleaned = 0
    tmp = work / f"{unit.name}.jsonl.tmp-{os.getpid()}"
    ids: list[str] = []
    with open(tmp, "wb", buffering=1 << 20) as out:
        for aid, res in _iter_unit(unit, limits, members, issues):
            aid = base_id(aid) if aid else None
            rec = _clean_one(aid, res, tok, limits, keep_appendix, stats)
            records += 1
            if "error" in rec:
                errors[rec["error"]] += 1
            else:
                cleaned += 1
            out.write(orjson.dumps(rec) + b"\n")
            ids.append(aid or "")
    os.replace(tmp, work / f"{unit.name}.jsonl")
    atomic_write(work / f"{unit.name}.ids", "".join(i + "\n" for i in ids).encode())
    return ShardResult(name=unit.name, label=unit.label, fingerprint=fp, records=records, cleaned=cleaned,
                       errors=dict(sorted(errors.items())), member_issues=dict(sorted(members.items())),
                       input_issues=issues, stats=dict(sorted(stats.items())), bytes_in=bytes_in,
                       bytes_out=(work / f"{unit.name}.jsonl").stat().st_size)


def load_done(unit: Unit, work_dir: WorkPath, fp: str) -> ShardResult | None:
    """The unit's result if a finished, matching run of it is on disk."""
    done = work_dir / f"{unit.name}.done"
    try:
        d = json.loads(done.read_text())
    except (OSError, ValueError):
        return None
    if d.get("fingerprint") != fp:
        return None
    if not (work_dir / f"{unit.name}.jsonl").exists() or not (work_dir / f"{unit.name}.ids").exists():
        return None
    d["resumed"] = True
    try:
        return ShardResult(**d)
    except TypeError:
        return None


def _init_worker(parent: int) -> None:
    die_with_parent(parent)  # a killed build takes its workers with it


def unit_task(unit: Unit, work_dir: str, limits: Limits, keep_appendix: bool, access: Access | None) -> ShardResult:
    """`process_shard` as a worker process runs it (a pool's or a Ray task's)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return process_shard(unit, work_dir, limits, keep_appendix, access)


def _task(args) -> ShardResult:
    return unit_task(*args)


@dataclass
class Plan:
    """What a map run has to do: the units already done (their results) and the rest."""

    units: list[Unit]
    results: dict[str, ShardResult] = field(default_factory=dict)
    todo: list[Unit] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._pos = {u.name: i for i, u in enumerate(self.units, 1)}

    def position(self, name: str) -> str:
        return f"[shard {self._pos[name]}/{len(self.units)}]"

    def ordered(self) -> list[ShardResult]:
        return [self.results[u.name] for u in self.units]


def plan(units: list[Unit], work_dir: WorkPath, limits: Limits, keep_appendix: bool,
         log: Callable[[str], None]) -> Plan:
    """Check every unit's marker; log the ones done earlier."""
    work_dir.mkdir(parents=True, exist_ok=True)
    p = Plan(units)
    for u in units:
        r = load_done(u, work_dir, fingerprint(u, limits, keep_appendix))
        if r is not None:
            p.results[u.name] = r
            log(f"{p.position(u.name)} {r.line()}")
        else:
            p.todo.append(u)
    return p


def remove_leftovers(work_dir: WorkPath, units: list[Unit]) -> None:
    """Temporary files of attempts that died (every attempt is over when this runs). A URL
    has none: its objects are written whole."""
    if isinstance(work_dir, Path):
        for u in units:
            for f in work_dir.glob(f"{u.name}.*.tmp-*"):
                f.unlink(missing_ok=True)


def run_map(units: list[Unit], work_dir: WorkPath, limits: Limits, keep_appendix: bool = False, workers: int = 1,
            log: Callable[[str], None] | None = None, access: Access | None = None) -> list[ShardResult]:
    """Process every unit not already done (in `workers` spawned processes); results in unit order."""
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    p = plan(units, work_dir, limits, keep_appendix, log)
    if p.todo and (workers <= 1 or len(p.todo) == 1):
        for u in p.todo:
            r = process_shard(u, str(work_dir), limits, keep_appendix, access)
            p.results[u.name] = r
            log(f"{p.position(u.name)} {r.line()}")
    elif p.todo:
        ctx = mp.get_context("spawn")
        with ctx.Pool(min(workers, len(p.todo)), initializer=_init_worker, initargs=(os.getpid(),)) as pool:
            try:
                tasks = [(u, str(work_dir), limits, keep_appendix, access) for u in p.todo]
                for r in pool.imap_unordered(_task, tasks):
                    p.results[r.name] = r
                    log(f"{p.position(r.name)} {r.line()}")
            except BaseException:
                pool.terminate()
                raise
    return p.ordered()
