"""The full-text build: check the inputs, map the source units (resumable, parallel), then
reduce the cleaned papers through the metadata builder's pipeline (see the package docstring)."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from qwenphysics.core.staging import WorkDir

from .. import pipeline
from ..latex import Limits
from ..output import check_out
from ..readers import check_metadata
from ..records import Drop, InputError, Paper
from ..spec import Spec
from .atoms import require_tokenizer
from .engine import Engine
from .examples import ChunkRenderer, SectionRenderer
from .inputs import Inputs, classify
from .reduce import Metadata, iter_papers, shard_summary, source_ids
from .remote import WorkPath, work_path
from .shards import ShardResult


def limits_of(spec: Spec) -> Limits:
    raw = spec.options.get("limits") or {}
    known = {f.name for f in dataclasses.fields(Limits)}
    if not isinstance(raw, dict) or set(raw) - known:
        raise InputError(f"spec {spec.name}: options.limits takes {sorted(known)}")
    return Limits(**raw)


def default_work_dir(out: Path) -> Path:
    return out.parent / f"{out.name}.work"


def _legacy_work_files(files: list[str]) -> bool:
    """A work dir written before it carried its marker: shard results and components only."""
    return all(f.startswith(("shards/", "components/")) for f in files)


def work_area(work_dir: Path, inputs: list[str]) -> WorkDir:
    """The work dir, checked (refused when it holds anything else) and locked while in use;
    dead runs' temporary files in it are removed when the lock is taken."""
    return WorkDir(work_dir, inputs=inputs, recognise=_legacy_work_files)


def prepare(inputs: list[str], metadata: list[str], require_metadata: bool, engine: Engine | None = None) -> Inputs:
    """Sort the inputs into source units and metadata, and check both before any work."""
    engine = engine or Engine()
    src = classify(inputs, metadata, months=engine.months, access=engine.access)
    check_metadata(src.metadata)
    if not src.units and engine.months is not None:
        raise InputError("no source shard falls in --months: widen the range, or check the inputs' names "
                         "(arXiv_src_YYMM_NNN.tar)")
    if not src.units:
        raise InputError("no LaTeX sources among the inputs: give bulk shards (arXiv_src_*.tar), e-prints "
                         "(<arXiv id>.gz), project folders or unarXive .jsonl with --input")
    if require_metadata and not src.metadata and any(u.kind != "unarxive" for u in src.units):
        raise InputError("no metadata: pass the Kaggle snapshot or OAI-PMH pages with --metadata (or --input), "
                         "or set options.require_metadata: false in the spec")
    return src


def map_sources(src: Inputs, spec: Spec, work_dir: WorkPath, engine: Engine, log) -> list[ShardResult] | None:
    """The map on the engine's executor; None when it was handed to Slurm (nothing to reduce here)."""
    require_tokenizer()
    t0 = time.perf_counter()
    keep_appendix = bool(spec.options.get("keep_appendix", False))
    results = engine.run(src.units, work_dir / "shards", limits_of(spec), keep_appendix, log)
    if results is None:
        return None
    fresh = [r for r in results if not r.resumed]
    where = f"{engine.workers} worker(s)" if engine.executor == "local" else f"executor {engine.executor}"
    log(f"map: {len(results)} units ({len(results) - len(fresh)} done earlier), {where}, "
        f"{time.perf_counter() - t0:.1f} s")
    return results


def build_context(spec: Spec, src: Inputs, results: list[ShardResult], work_dir: WorkPath, out: Path, *,
                  inputs: list[str], limit: int | None = None, progress: bool = False, hash_inputs: bool = True,
                  tally=None):
    """The reduce step for one full-text spec over finished units. `tally(spec, paper, examples,
    tokens)` sees every written paper's examples (mixtures use it)."""
    shards_dir = work_dir / "shards"
    require = bool(spec.options.get("require_metadata", True))
    meta = Metadata(spec)
    meta.load(src.metadata, source_ids(src.units, shards_dir))
    renderer: ChunkRenderer | SectionRenderer
    if spec.format == "completion":
        renderer = ChunkRenderer(spec, require_tokenizer())
        fields = ["text", "id", "chunk"]
        run_spec = spec
    else:
        renderer = SectionRenderer(spec)
        fields = ["messages", "id", "template"]
        extra = sorted(set(spec.options.get("extra_placeholders", [])) | set(renderer.sections))
        run_spec = dataclasses.replace(spec, options={**spec.options, "extra_placeholders": extra})
    render: Callable[[Spec, Paper, int], list[dict] | Drop]
    if tally is None:
        render = renderer
    else:
        def render(s, p, b):
            ex = renderer(s, p, b)
            if not isinstance(ex, tuple):  # not a Drop
                tally(s, p, b, ex, getattr(renderer, "last_tokens", None))
            return ex
    counts: Counter = Counter()
    issues = [i for r in results for i in r.input_issues]
    summary = shard_summary(results)
    summary["metadata"] = meta.report
    summary["ignored_files"] = len(src.ignored)
    summary["links_not_followed"] = len(src.links_outside)
    summary["context"] = renderer.report
    papers = iter_papers(src.units, shards_dir, meta, counts, require_metadata=require, limit=limit)
    tokens = getattr(renderer, "token_stats", None) if tally is None else (lambda: None)
    return pipeline.build(run_spec, inputs, out, source=pipeline.Source(papers, counts, issues),
                          examples=pipeline.Examples(render, tokens),
                          report=pipeline.Report({"fields": fields, "fulltext": summary}, card_notes),
                          progress=progress, hash_inputs=hash_inputs)


def card_notes(manifest: dict) -> str:
    ft = manifest.get("fulltext") or {}
    lines = ["## Full text", "",
             "Papers come from LaTeX sources cleaned to Markdown (comments, preamble, bibliography and "
             "appendices removed; user macros expanded; math kept as TeX). Drop reasons above include "
             "the cleaner's (`pdf_only`, `macro_recursion`, ...) and `no_metadata`.", ""]
    units = ft.get("units") or []
    lines += [f"Source units: {len(units)}; papers read {sum(u['papers'] for u in units)}, cleaned "
              f"{sum(u['cleaned'] for u in units)}.", ""]
    skipped = ft.get("archive_members_skipped") or {}
    if skipped:
        lines += ["| archive members skipped | count |", "|---|---:|",
                  *[f"| {k} | {v} |" for k, v in skipped.items()], ""]
    ctx = ft.get("context") or {}
    if "chunk_tokens" in ctx:
        lines += [f"Chunks of at most {ctx['chunk_tokens']} Qwen2.5 tokens ({ctx['overlap_tokens']} tokens of "
                  f"overlap), each starting with the paper's title: {ctx['chunks']} chunks, "
                  f"{ctx['tokens']} tokens.", ""]
    if "templates" in ctx:
        lines += ["| template | written | papers lacking its section |", "|---|---:|---:|",
                  *[f"| {t} | {c.get('written', 0)} | {c.get('missing_section', 0)} |"
                    for t, c in ctx["templates"].items()], ""]
    return "\n".join(lines)


def build_fulltext(spec: Spec, inputs: list[str], out: Path, *, metadata: Sequence[str] = (), workers: int = 1,
                   work_dir: str | Path | None = None, limit: int | None = None, progress: bool = False,
                   hash_inputs: bool = True, log=None, engine: Engine | None = None):
    """Map the sources (resumable) on `engine` (default: `workers` local processes), then build
    `spec` into `out`; None when the map was handed to Slurm (its reduce job builds `out`).
    `work_dir` may be a URL (`s3://...`): the map's results are then written there."""
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    engine = engine or Engine(workers=workers)
    engine.check()
    out = Path(out)
    all_inputs = list(inputs) + list(metadata)
    check_out(out, all_inputs)
    work = work_path(work_dir, engine.access) if work_dir else default_work_dir(out)
    src = prepare(list(inputs), list(metadata), bool(spec.options.get("require_metadata", True)), engine)
    # a URL cannot be locked: one build at a time per remote work dir
    with work_area(work, all_inputs) if isinstance(work, Path) else contextlib.nullcontext():
        results = map_sources(src, spec, work, engine, log)
        if results is None:
            return None
        return build_context(spec, src, results, work, out, inputs=all_inputs, limit=limit,
                             progress=progress, hash_inputs=hash_inputs)
