"""Full-text training contexts from arXiv LaTeX sources: a parallel, resumable shard map, then
the metadata builder's pipeline (filters, dedup, the shared split, atomic output).

    python -m dataset_builders build --spec fulltext-completion \\
        --input arXiv-src/ --metadata arxiv-metadata-oai-snapshot.json --out data/fulltext-completion \\
        --workers 8

Contexts (specs with `source: fulltext` or `source: mixture`):

* `fulltext-completion` (format completion): token-bounded chunks `{"text", "id", "chunk"}`;
* `sections-chat` (format chat): section instruction pairs `{"messages", "id", "template"}`;
* `mixed` (source mixture): several specs at declared ratios, one subfolder each.

Map (`shards.process_shard`, one call per unit: a bulk `*.tar` shard, an unarXive file, a
group of e-prints or project folders). Each worker streams the unit's papers, cleans them
(`latex.clean_project`), counts tokens of their paragraphs with the Qwen2.5 tokenizer (the
costly part, so it runs here, in parallel) and writes them to the work dir. Memory per
worker is one paper at a time. Work dir (default `<out>.work/`, `--work-dir` to share one
between specs: the map's output does not depend on the spec):

    <work>/shards/<unit>.jsonl   cleaned papers (or their failure reason), in input order
    <work>/shards/<unit>.ids     their ids, for the metadata join
    <work>/shards/<unit>.done    completion marker: fingerprint + counts, written last
    <work>/components/<name>/    a mixture's full component builds (before subsampling)

Resume: a unit whose `.done` fingerprint matches (input names, sizes, mtimes, cleaner
version, limits) is skipped; a unit without one (interrupted, or its marker removed) is
redone from scratch. A progress line per unit (papers, cleaned, seconds) goes to stderr.

Reduce (`reduce.py`): reads the metadata of the papers that have sources (Kaggle snapshot
or OAI pages, `--metadata` or among `--input`), applies the spec's filters, and feeds the
papers, in unit order, through `pipeline.build(..., papers=...)`: output is byte-identical
for any number of workers and across reruns.

Ray: the map is a pure function of (unit, work dir, limits), so on a cluster with a shared
work dir it is

    import ray
    from dataset_builders.fulltext import inputs, shards
    task = ray.remote(shards.process_shard)
    units = inputs.classify(["s3fs-mounted/arXiv-src/"]).units
    results = ray.get([task.remote(u, work, limits) for u in units])

after which `build --work-dir <work>` on one machine finds every unit done and only reduces.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections import Counter
from pathlib import Path

from qwenphysics.core.staging import WorkDir

from ..latex import Limits
from ..output import check_out
from ..readers import check_metadata
from ..records import InputError
from ..spec import Spec
from .atoms import TokenizerMissing, get_tokenizer
from .inputs import Inputs, Unit, classify
from .shards import ShardResult, process_shard, run_map

__all__ = ["Unit", "ShardResult", "classify", "process_shard", "run_map", "build_fulltext", "cmd_build",
           "add_parsers"]

EPILOG = """
full-text and mixture specs (see list-specs) also take:
  python -m dataset_builders build --spec fulltext-completion --input arXiv-src/ \\
      --metadata arxiv-metadata-oai-snapshot.json --out data/fulltext-completion --workers 8
  python -m dataset_builders build --spec mixed --input arxiv-metadata-oai-snapshot.json \\
      --input arXiv-src/ --out data/mixed
"""


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


def _tokenizer():
    try:
        return get_tokenizer()
    except TokenizerMissing as e:
        raise InputError(str(e)) from None


def prepare(inputs: list[str], metadata: list[str], require_metadata: bool) -> Inputs:
    """Sort the inputs into source units and metadata, and check both before any work."""
    src = classify(inputs, metadata)
    check_metadata(src.metadata)
    if not src.units:
        raise InputError("no LaTeX sources among the inputs: give bulk shards (arXiv_src_*.tar), e-prints "
                         "(<arXiv id>.gz), project folders or unarXive .jsonl with --input")
    if require_metadata and not src.metadata and any(u.kind != "unarxive" for u in src.units):
        raise InputError("no metadata: pass the Kaggle snapshot or OAI-PMH pages with --metadata (or --input), "
                         "or set options.require_metadata: false in the spec")
    return src


def map_sources(src: Inputs, spec: Spec, work_dir: Path, workers: int, log) -> list[ShardResult]:
    _tokenizer()
    t0 = time.perf_counter()
    results = run_map(src.units, work_dir / "shards", limits_of(spec),
                      bool(spec.options.get("keep_appendix", False)), workers, log)
    fresh = [r for r in results if not r.resumed]
    log(f"map: {len(results)} units ({len(results) - len(fresh)} done earlier), {workers} worker(s), "
        f"{time.perf_counter() - t0:.1f} s")
    return results


def build_context(spec: Spec, src: Inputs, results: list[ShardResult], work_dir: Path, out: Path, *,
                  inputs: list[str], limit: int | None = None, progress: bool = False, hash_inputs: bool = True,
                  tally=None):
    """The reduce step for one full-text spec over finished units. `tally(spec, paper, examples,
    tokens)` sees every written paper's examples (mixtures use it)."""
    from .. import pipeline
    from .reduce import Metadata, iter_papers, shard_summary, source_ids
    from .render import ChunkRenderer, SectionRenderer

    shards_dir = work_dir / "shards"
    require = bool(spec.options.get("require_metadata", True))
    meta = Metadata(spec)
    meta.load(src.metadata, source_ids(src.units, shards_dir))
    if spec.format == "completion":
        renderer = ChunkRenderer(spec, _tokenizer())
        fields = ["text", "id", "chunk"]
        run_spec = spec
    else:
        renderer = SectionRenderer(spec)
        fields = ["messages", "id", "template"]
        extra = sorted(set(spec.options.get("extra_placeholders", [])) | set(renderer.sections))
        run_spec = dataclasses.replace(spec, options={**spec.options, "extra_placeholders": extra})
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
    res = pipeline.build(run_spec, inputs, out, papers=papers, counts=counts, render=render, progress=progress,
                         hash_inputs=hash_inputs, input_issues=issues,
                         extra_manifest={"fields": fields, "fulltext": summary}, card_notes=card_notes,
                         tokens=getattr(renderer, "token_stats", None) if tally is None else (lambda: None))
    return res


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


def build_fulltext(spec: Spec, inputs: list[str], out: Path, *, metadata: list[str] = (), workers: int = 1,
                   work_dir: Path | None = None, limit: int | None = None, progress: bool = False,
                   hash_inputs: bool = True, log=None):
    """Map the sources (resumable), then build `spec` into `out`."""
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    out = Path(out)
    all_inputs = list(inputs) + list(metadata)
    check_out(out, all_inputs)
    work_dir = Path(work_dir) if work_dir else default_work_dir(out)
    src = prepare(list(inputs), list(metadata), bool(spec.options.get("require_metadata", True)))
    with work_area(work_dir, all_inputs):
        results = map_sources(src, spec, work_dir, workers, log)
        return build_context(spec, src, results, work_dir, out, inputs=all_inputs, limit=limit,
                             progress=progress, hash_inputs=hash_inputs)


def cmd_build(spec: Spec, args) -> int:
    from ..cli import summarize

    if not args.input:
        raise InputError("no input given: pass LaTeX sources with --input PATH (repeatable)")
    workers = getattr(args, "workers", None)
    if workers is None:
        from ..snapshot import default_workers

        workers = default_workers()
    if workers < 1:
        raise InputError("--workers must be at least 1")
    common = dict(metadata=getattr(args, "metadata", []) or [], workers=workers,
                  work_dir=getattr(args, "work_dir", None), limit=args.limit, progress=not args.no_progress,
                  hash_inputs=not args.no_input_hash)
    if spec.source == "mixture":
        from .mixture import build_mixture, summarize_mixture

        res = build_mixture(spec, args.input, args.out, **common)
        summarize_mixture(res.manifest, res.seconds, args.out)
        return 0
    res = build_fulltext(spec, args.input, args.out, **common)
    summarize(res.manifest, res.seconds, args.out)
    return 0


def add_parsers(sub) -> None:
    """Options of `build` that full-text and mixture specs use (metadata specs ignore them)."""
    p = sub.choices.get("build")
    if p is None:
        return
    p.add_argument("--metadata", action="append", default=[], metavar="PATH",
                   help="full-text specs: Kaggle snapshot or OAI-PMH pages to join (title, categories, "
                        "licence, dates); repeatable. Metadata files given with --input count too")
    p.add_argument("--work-dir", type=Path, default=None, metavar="DIR",
                   help="full-text specs: where cleaned shards and completion markers go "
                        "(default <out>.work; reruns skip finished shards)")
    p.epilog = (p.epilog or "") + EPILOG
