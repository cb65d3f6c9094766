"""reader -> filters -> normalise -> dedup -> context -> split writer, with counts for all.

Every record read ends in exactly one place: an output split, or a drop reason in the
manifest. `read == kept + sum(dropped)` holds for every build (tests check it).
"""

from __future__ import annotations

import gc
import hashlib
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm import tqdm

from qwenphysics.hashing import sha256_file

from . import contamination, contexts, snapshot
from .filters import build as build_filters
from .filters import category_check, first_failure
from .normalize import content_key, normalise
from .output import BUILDER_NAME, SplitWriter, TokenCounter, data_card, manifest_json, token_stats
from .readers import inside, iter_input
from .records import Drop, Paper
from .spec import Spec
from .split import SPLITS, TEST_BP, VALIDATION_BP, bucket, split_of_bucket

BUILDER_VERSION = "1"
# Drops that describe a whole input, not a record: reported, but not counted as records read.
INPUT_LEVEL = frozenset({"empty_input", "truncated_input", "malformed_xml_page", "page_too_large"})


@dataclass
class Source:
    """Papers from somewhere else than the build's inputs: full text (cleaned sources joined with
    their metadata), or papers a step reads itself. The source counts what it read and dropped
    (`read`, `drop:<reason>`) in `counts` and whole-input problems in `issues`, so the manifest
    still adds up."""

    papers: Iterable[Paper]
    counts: Counter = field(default_factory=Counter)
    issues: list[dict] = field(default_factory=list)


@dataclass
class Examples:
    """How a paper becomes examples when the spec's templates are not enough (full-text chunks and
    sections, the teacher's pairs, mined reading comprehension). `render(spec, paper, bucket)`
    sees only the papers that passed the filters and the dedup, in input order, and returns
    examples or a `Drop`; the examples are then screened like every context's. `tokens()`
    returns the manifest's token statistics when the renderer counted every example itself."""

    render: Callable[[Spec, Paper, int], list[dict] | Drop]
    tokens: Callable[[], dict | None] | None = None


@dataclass
class Report:
    """What a context adds to the manifest (top-level keys; the dict may fill while the build
    runs) and to the data card (Markdown, or a function of the finished manifest)."""

    manifest: dict = field(default_factory=dict)
    card: str | Callable[[dict], str] | None = None


@dataclass
class BuildResult:
    out: Path
    manifest: dict
    seconds: float
    counts: dict = field(default_factory=dict)


def _progress(total: int | None, enabled: bool):
    if not enabled:
        return None

    return tqdm(total=total, unit=" rec", unit_scale=True, desc="build", file=sys.stderr,
                mininterval=0.5, smoothing=0.1)


def iter_papers(inputs: Iterable[str], limit: int | None, counts: Counter, input_issues: list,
                prefilter=None) -> Iterator[Paper]:
    remaining = limit
    for spec in inputs:
        for item in iter_input(spec, limit=remaining, prefilter=prefilter):
            if isinstance(item, Drop):
                if item.reason in INPUT_LEVEL:
                    input_issues.append({"input": spec, "issue": item.reason})
                    continue
                counts["read"] += 1
                counts["drop:" + item.reason] += 1
                if remaining is not None:
                    remaining -= 1
                continue
            counts["read"] += 1
            if remaining is not None:
                remaining -= 1
            yield item
        if remaining is not None and remaining <= 0:
            return


def build(spec: Spec, inputs: list[str], out: Path, *, source: Source | None = None,
          examples: Examples | None = None, report: Report | None = None, limit: int | None = None,
          progress: bool = False, hash_inputs: bool = True, workers: int | None = None,
          block_bytes: int | None = None) -> BuildResult:
    """Build one training context: papers -> filters and normalisation -> dedup -> examples ->
    screening -> splits, every paper counted where it ends.

    The stages a context may swap: `source` (papers from elsewhere than `inputs`, which are
    then only named and hashed in the manifest), `examples` (a renderer instead of the spec's
    templates) and `report` (manifest keys and data-card notes). With neither `source` nor
    `examples`, Kaggle snapshot files take the block route of `snapshot` (on `workers`
    processes when every input is a plain file; default one per core) and other inputs the
    same stage over parsed papers; the output is the same for any number of workers and any
    `block_bytes`.
    """
    contexts.check_templates(spec)
    build_filters(spec.filters)  # a bad filter fails before any work
    counts = source.counts if source is not None else Counter()
    input_issues = source.issues if source is not None else []
    papers = source.papers if source is not None else None
    render = examples.render if examples is not None else None
    tokens = examples.tokens if examples is not None else None
    extra_manifest = report.manifest if report is not None else None
    card_notes = report.card if report is not None else None
    workers = snapshot.default_workers() if workers is None else workers
    block_bytes = block_bytes or snapshot.BLOCK_BYTES
    hasher = InputHasher(inputs if hash_inputs else [])
    counter = TokenCounter() if tokens is None else None
    bar = None
    t0 = time.perf_counter()

    def start_threads():
        nonlocal bar
        hasher.start()
        if counter is not None:
            counter.start()
            writer.on_sample_full = counter.count_soon
        bar = _progress(limit, progress)

    def tick(n: int) -> None:
        if bar is not None:
            bar.n = n
            bar.refresh()

    # The loop allocates millions of short-lived dicts and strings but no reference cycles:
    # the cyclic garbage collector would only rescan them (a third of the run time).
    gc_was_enabled = gc.isenabled()
    writer = SplitWriter(out, inputs)
    try:
        gc.disable()
        snapshot_route = papers is None and render is None and inputs and all(map(snapshot.is_snapshot_file, inputs))
        if snapshot_route and snapshot.can_parallel(inputs, limit, workers, block_bytes):
            # threads (hashing, the progress bar's monitor) start only after the workers are forked
            snapshot.run_parallel(spec, inputs, writer, counts, input_issues, workers=workers,
                                  block_bytes=block_bytes, progress=tick, on_started=start_threads)
        elif snapshot_route:
            start_threads()
            snapshot.run_serial(spec, inputs, writer, counts, input_issues, limit=limit, block_bytes=block_bytes,
                                progress=tick)
        else:
            start_threads()
            _run_serial(spec, inputs, limit, papers, render, writer, counts, input_issues, tick)
        if bar is not None:
            bar.n = counts["read"]
            bar.close()
        checksums = writer.close_files()
        input_hashes = hasher.result()
        seconds = time.perf_counter() - t0
        manifest = make_manifest(spec, inputs, counts, writer, checksums, input_issues, input_hashes,
                                 tokens=tokens or (lambda: token_stats(writer.samples, writer.lines, counter)))
        if extra_manifest:
            manifest.update(extra_manifest)
        writer.write_text("manifest.json", manifest_json(manifest))
        card = data_card(manifest)
        notes = card_notes(manifest) if callable(card_notes) else card_notes
        if notes:
            card = card.rstrip("\n") + "\n\n" + notes.strip("\n") + "\n"
        writer.write_text("README.md", card)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    finally:
        if gc_was_enabled:
            gc.enable()
    return BuildResult(out=out, manifest=manifest, seconds=seconds, counts=dict(counts))


def select(spec: Spec, source: Iterable[Paper], counts: Counter,
           progress: Callable[[int], None] | None = None, batch: int = 1024) -> Iterator[tuple[Paper, int]]:
    """The papers that enter a context, with their split buckets, for steps that must see only
    those (the Q&A teacher is asked about each; full-text renderers count what they write):
    filters, normalisation, then the builds' one dedup (`snapshot.Dedup`: one base id and one
    normalised title + abstract each, the first wins), in batches of `batch` papers. Every paper
    left out is counted under its reason."""
    checks = [c for _, c in build_filters(spec.filters)]
    dedup = snapshot.Dedup()
    it = iter(source)
    while chunk := list(islice(it, batch)):
        papers: list[Paper] = []
        for p in chunk:
            reason = first_failure(checks, p)
            if reason:
                counts["drop:" + reason] += 1
                continue
            normalise(p)
            papers.append(p)
        if progress is not None:
            progress(counts["read"])
        if not papers:
            continue
        kept, n_id, n_content = dedup.keep(np.fromiter((hash(p.id) for p in papers), np.int64, len(papers)),
                                           np.fromiter((content_key(p.title, p.abstract) for p in papers),
                                                       np.int64, len(papers)))
        if n_id:
            counts["drop:duplicate_id"] += n_id
        if n_content:
            counts["drop:duplicate_content"] += n_content
        for p, k in zip(papers, kept.tolist()):
            if k:
                yield p, bucket(p.id)


def _run_serial(spec: Spec, inputs: list[str], limit: int | None, papers, render, writer: SplitWriter,
                counts: Counter, input_issues: list, progress: Callable[[int], None]) -> None:
    source = papers if papers is not None else iter_papers(inputs, limit, counts, input_issues,
                                                           prefilter=category_check(spec.filters))
    if render is None:  # a metadata spec: the snapshot route's stage and merge, over parsed papers
        snapshot.run_papers(spec, source, writer, counts, progress=progress)
        return
    check = contamination.for_spec(spec).check
    for p, b in select(spec, source, counts, progress):
        rendered = render(spec, p, b)
        if isinstance(rendered, Drop):
            counts["drop:" + rendered.reason] += 1
            continue
        examples, drop, example_drops = contexts.screen(rendered, check)
        for reason, n in example_drops.items():
            counts["example_drop:" + reason] += n
        if drop is not None:
            counts["drop:" + drop] += 1
            continue
        writer.write(split_of_bucket(b), examples)
        counts["kept"] += 1


class InputHasher:
    """SHA-256 of the inputs for the manifest, computed on a thread while the build runs
    (hashing releases the GIL). An input file's digest is remembered in the stat-keyed cache
    of `qwenphysics.hashing`, so later builds from the same snapshot skip the pass over it."""

    def __init__(self, inputs: list[str]):
        self.inputs = list(inputs)
        self._thread: threading.Thread | None = None
        self._result: dict[str, str] = {}
        self._error: BaseException | None = None

    def start(self) -> None:
        if self.inputs and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="input-sha256", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            for s in self.inputs:
                p = Path(s)
                if p.is_file():
                    self._result[s] = sha256_file(p, cache=True)
                elif p.is_dir():
                    h = hashlib.sha256()
                    for f in folder_files(p):
                        h.update(f.relative_to(p).as_posix().encode() + b"\0" + sha256_file(f).encode())
                    self._result[s] = h.hexdigest()
        except BaseException as e:  # re-raised in the caller's thread
            self._error = e

    def result(self) -> dict[str, str] | None:
        """path -> sha256 (None when hashing is off)."""
        if not self.inputs:
            return None
        if self._thread is None:
            self._run()
        else:
            self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result


def folder_files(folder: Path) -> list[Path]:
    """The files of an input folder, sorted; links leading out of it are not followed."""
    return sorted(f for f in folder.rglob("*") if inside(folder, f) and f.is_file())


def make_manifest(spec: Spec, inputs: list[str], counts: Counter, writer: SplitWriter, checksums: dict,
                  input_issues: list, input_hashes: dict[str, str] | None,
                  tokens: Callable[[], dict | None] | None = None) -> dict:
    dropped = {k[5:]: v for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if k.startswith("drop:")}
    inputs_info = []
    for s in inputs:
        info: dict = {"path": s}
        p = Path(s)
        if p.is_file():
            info["bytes"] = p.stat().st_size
        elif p.is_dir():
            files = folder_files(p)
            info["files"] = len(files)
            info["bytes"] = sum(f.stat().st_size for f in files)
        if input_hashes is not None and s in input_hashes:
            info["sha256"] = input_hashes[s]
        inputs_info.append(info)
    spec_bytes = spec.source_bytes()
    return {
        "builder": {"name": BUILDER_NAME, "version": BUILDER_VERSION},
        "spec": {"name": spec.name, "format": spec.format, "source": spec.source,
                 "description": spec.description, "path": str(spec.path) if spec.path else None,
                 "sha256": hashlib.sha256(spec_bytes).hexdigest(), "resolved": spec.raw},
        "inputs": inputs_info,
        "input_issues": input_issues,
        "split": {"key": "blake2b-64(base arXiv id) mod 10000", "validation_bp": VALIDATION_BP, "test_bp": TEST_BP},
        "counts": {
            "read": counts["read"],
            "kept": counts["kept"],
            "dropped": dropped,
            # examples screened out of papers that kept others (contexts.screen)
            "examples_dropped": {k[13:]: v for k, v in sorted(counts.items()) if k.startswith("example_drop:")},
            "papers": {s: writer.papers[s] for s in SPLITS},
            "examples": {s: writer.lines[s] for s in SPLITS},
        },
        "tokens": tokens() if tokens is not None else token_stats(writer.samples, writer.lines),
        "checksums": checksums,
        "fields": (["messages", "id", "template"] if spec.format == "chat" else ["text", "id"]),
        "decontamination": contamination.for_spec(spec).describe(),
    }


