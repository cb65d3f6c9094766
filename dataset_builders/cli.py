"""Command line: `python -m dataset_builders <command> ...` (see `--help`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qwenphysics.core.errors import UserError
from qwenphysics.core.processes import sigterm_as_interrupt

from . import harvest, sample
from . import spec as spec_mod
from .fulltext import build_fulltext, build_mixture, summarize_mixture
from .output import check_out
from .pipeline import Examples, build
from .qa import build as qa_build
from .qa import reading
from .readers import check_inputs
from .records import InputError
from .snapshot import default_workers, tune_malloc

EPILOG = """examples:
  python -m dataset_builders build --spec abstracts-chat --input arxiv-metadata-oai-snapshot.json \\
      --out data/abstracts-chat
  python -m dataset_builders build --spec abstracts-completion --input raw/oai/ --out data/abstracts-completion
  python -m dataset_builders list-specs

full-text and mixture specs (see list-specs) also take --metadata and --work-dir:
  python -m dataset_builders build --spec fulltext-completion --input arXiv-src/ \\
      --metadata arxiv-metadata-oai-snapshot.json --out data/fulltext-completion --workers 8
  python -m dataset_builders build --spec mixed --input arxiv-metadata-oai-snapshot.json \\
      --input arXiv-src/ --out data/mixed
"""


def _add_build(sub) -> None:
    p = sub.add_parser("build", help="build a training context (train/validation/test JSONL + manifest)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("--spec", required=True, help="spec name (see list-specs) or path to a .yml spec")
    p.add_argument("--input", action="append", default=[], metavar="PATH",
                   help="hf:<dataset id>[@split], a Kaggle snapshot (.json/.jsonl, .gz, .zst), or OAI-PMH "
                        "pages (.xml file or folder); repeatable, earlier inputs win duplicates")
    p.add_argument("--out", required=True, type=Path, help="output folder (replaced atomically)")
    p.add_argument("--limit", type=int, default=None, help="read at most N records (debugging)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-input-hash", action="store_true", help="skip SHA-256 of inputs in the manifest")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes (default: one per core): metadata specs split plain, "
                        "uncompressed snapshot files among them; full-text specs clean source shards "
                        "in parallel. The output is identical for any N")
    f = p.add_argument_group("full text (fulltext-*, sections-chat, mixed)")
    f.add_argument("--metadata", action="append", default=[], metavar="PATH",
                   help="Kaggle snapshot or OAI-PMH pages to join (title, categories, licence, dates); "
                        "repeatable. Metadata files given with --input count too")
    f.add_argument("--work-dir", type=Path, default=None, metavar="DIR",
                   help="where cleaned shards and completion markers go (default <out>.work; reruns skip "
                        "finished shards)")
    t = p.add_argument_group("teacher (physics-qa)")
    t.add_argument("--teacher-gguf", type=Path, metavar="MODEL.gguf",
                   help="start llama.cpp's server on this GGUF as the teacher (e.g. Qwen2.5-14B-Instruct Q4_K_M)")
    t.add_argument("--teacher-url", action="append", default=[], metavar="URL",
                   help="an OpenAI-compatible server instead (…/v1); repeat to spread the load")
    t.add_argument("--teacher-model", help="model name to request (default: the server's first model)")
    t.add_argument("--teacher-key-env", default="TEACHER_API_KEY", metavar="VAR",
                   help="environment variable holding the teacher's API key (default: TEACHER_API_KEY)")
    t.add_argument("--teacher-parallel", type=int, default=4, metavar="N",
                   help="slots of the server started on --teacher-gguf (default 4)")
    t.add_argument("--teacher-ctx", type=int, default=4096, metavar="TOKENS", help="context per slot (default 4096)")
    t.add_argument("--teacher-concurrency", type=int, default=None, metavar="N",
                   help="requests in flight per URL (default: the slots llama.cpp reports, else 4)")
    t.add_argument("--teacher-timeout", type=float, default=600.0, metavar="S", help="per request (default 600)")
    t.add_argument("--teacher-retries", type=int, default=3, metavar="N", help="per request, with backoff (default 3)")
    t.add_argument("--teacher-cache", type=Path, default=None, metavar="PATH",
                   help="answer cache (default: $QWENPHYSICS_CACHE/teacher-cache.sqlite); reruns ask nothing twice")
    t.add_argument("--max-papers", type=int, default=None, metavar="N",
                   help="ask about the first N selected papers only")


def cmd_build(args) -> int:
    spec = spec_mod.load(args.spec)
    if spec.source != "metadata":
        return cmd_build_fulltext(spec, args)
    check_inputs(args.input)
    if args.workers is not None and args.workers < 1:
        raise InputError("--workers must be at least 1")
    generator = spec.options.get("generator")
    if generator == "teacher":
        opts = qa_build.TeacherOptions(
            urls=args.teacher_url, model=args.teacher_model, key_env=args.teacher_key_env, gguf=args.teacher_gguf,
            parallel=args.teacher_parallel, ctx_per_slot=args.teacher_ctx, concurrency=args.teacher_concurrency,
            timeout=args.teacher_timeout, retries=args.teacher_retries, cache=args.teacher_cache,
            max_papers=args.max_papers, log=args.out.parent / f"{args.out.name}.teacher.log")
        qa_build.check_options(opts)
        check_out(args.out, args.input)
        res = qa_build.build_physics_qa(spec, args.input, args.out, opts, limit=args.limit,
                                        progress=not args.no_progress, hash_inputs=not args.no_input_hash)
        summarize(res.manifest, res.seconds, args.out)
        return 0
    check_out(args.out, args.input)
    tune_malloc()  # this process exists to build
    res = build(spec, args.input, args.out, limit=args.limit, progress=not args.no_progress,
                hash_inputs=not args.no_input_hash, workers=args.workers,
                examples=Examples(reading.render) if generator == "reading" else None)
    summarize(res.manifest, res.seconds, args.out)
    return 0


def cmd_build_fulltext(spec: spec_mod.Spec, args) -> int:
    """`build` for full-text and mixture specs: LaTeX sources (+ metadata) -> a context."""
    if not args.input:
        raise InputError("no input given: pass LaTeX sources with --input PATH (repeatable)")
    workers = default_workers() if args.workers is None else args.workers
    if workers < 1:
        raise InputError("--workers must be at least 1")
    common = dict(metadata=args.metadata, workers=workers, work_dir=args.work_dir, limit=args.limit,
                  progress=not args.no_progress, hash_inputs=not args.no_input_hash)
    if spec.source == "mixture":
        res = build_mixture(spec, args.input, args.out, **common)
        summarize_mixture(res.manifest, res.seconds, args.out)
        return 0
    res = build_fulltext(spec, args.input, args.out, **common)
    summarize(res.manifest, res.seconds, args.out)
    return 0


def summarize(manifest: dict, seconds: float, out: Path) -> None:
    c = manifest["counts"]
    rate = c["read"] / seconds if seconds > 0 else float("inf")
    print(f"read {c['read']:,} records in {seconds:.1f} s ({rate:,.0f}/s); kept {c['kept']:,} papers", file=sys.stderr)
    ex = c["examples"]
    print(f"  examples: train {ex['train']:,}  validation {ex['validation']:,}  test {ex['test']:,}", file=sys.stderr)
    for reason, n in c["dropped"].items():
        print(f"  dropped {n:,} ({reason})", file=sys.stderr)
    for reason, n in c.get("examples_dropped", {}).items():
        print(f"  examples dropped {n:,} ({reason}; the paper kept another example)", file=sys.stderr)
    for issue in manifest.get("input_issues", []):
        print(f"  input {issue['input']}: {issue['issue']}", file=sys.stderr)
    print(f"wrote {out}/{{train,validation,test}}.jsonl, manifest.json, README.md", file=sys.stderr)


def cmd_list_specs(args) -> int:
    for name in spec_mod.list_specs():
        s = spec_mod.load(name)
        print(f"{name:24s} {s.format:10s} {s.description.splitlines()[0] if s.description else ''}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dataset_builders",
                                 description="Turn arXiv dumps into Qwen chat-template JSONL training contexts.")
    sub = ap.add_subparsers(dest="command", required=True)
    _add_build(sub)
    sub.add_parser("list-specs", help="list the training-context specs")
    harvest.add_parser(sub)
    sample.add_parser(sub)
    args = ap.parse_args(argv)
    handlers = {"build": cmd_build, "list-specs": cmd_list_specs}
    sigterm_as_interrupt()  # `kill` cleans up like Ctrl-C: no partial output is left
    try:
        if args.command in handlers:
            return handlers[args.command](args)
        return args.func(args)
    except UserError as e:  # InputError and the output contract's refusals
        print(f"dataset_builders: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dataset_builders: interrupted; no partial output was left behind", file=sys.stderr)
        return 130
