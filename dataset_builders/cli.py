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
from .fulltext.engine import EXECUTORS, Engine, map_units
from .fulltext.remote import Access, parse_months
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
    f.add_argument("--work-dir", default=None, metavar="DIR",
                   help="where cleaned shards and completion markers go (default <out>.work; reruns skip "
                        "finished shards); on a cluster, a folder every node sees, or an s3:// URL")
    f.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="where the shard map runs: local processes (default), a Ray cluster, or a Slurm job "
                        "array (see dataset_builders/README.md, 'Whole arXiv')")
    f.add_argument("--ray-address", metavar="HOST:PORT",
                   help="the Ray cluster to use (default $RAY_ADDRESS, else a Ray started for this run with "
                        "--workers CPUs)")
    f.add_argument("--slurm-option", action="append", default=[], metavar="OPT",
                   help="an sbatch option for the map and reduce jobs, e.g. partition=cpu or time=04:00:00 "
                        "(repeatable)")
    f.add_argument("--months", metavar="YYMM[-YYMM]",
                   help="only the source shards of these months (arXiv_src_YYMM_NNN.tar names, or the "
                        "manifest's yymm for s3:// inputs)")
    f.add_argument("--requester-pays", action="store_true",
                   help="read s3:// inputs as the requester (arXiv's bucket charges the reader); credentials "
                        "come from the AWS variables or profiles")
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
    t.add_argument("--qa-batch", type=int, default=None, metavar="N",
                   help="with --executor ray: papers per Ray task (default 32)")


def cmd_build(args) -> int:
    spec = spec_mod.load(args.spec)
    if spec.source != "metadata":
        return cmd_build_fulltext(spec, args)
    generator = spec.options.get("generator")
    teacher = generator == "teacher"
    given = (("--executor", args.executor != "local" and not teacher),
             ("--ray-address", args.ray_address and not teacher), ("--slurm-option", args.slurm_option),
             ("--months", args.months), ("--requester-pays", args.requester_pays),
             ("--qa-batch", args.qa_batch is not None and not teacher))
    engine_flags = [flag for flag, on in given if on]
    if engine_flags:
        raise InputError(f"{engine_flags[0]} is not for spec {spec.name}: the engines run the full-text map "
                         "(--executor, --months, ...) and the physics-qa teacher's questions (--executor ray)")
    check_inputs(args.input)
    if args.workers is not None and args.workers < 1:
        raise InputError("--workers must be at least 1")
    if teacher:
        opts = qa_build.TeacherOptions(
            urls=args.teacher_url, model=args.teacher_model, key_env=args.teacher_key_env, gguf=args.teacher_gguf,
            parallel=args.teacher_parallel, ctx_per_slot=args.teacher_ctx, concurrency=args.teacher_concurrency,
            timeout=args.teacher_timeout, retries=args.teacher_retries, cache=args.teacher_cache,
            max_papers=args.max_papers, log=args.out.parent / f"{args.out.name}.teacher.log",
            executor=args.executor, ray_address=args.ray_address, batch=32 if args.qa_batch is None else args.qa_batch,
            workers=args.workers or default_workers())
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


def _reduce_argv(argv: list[str]) -> list[str]:
    """The build command a Slurm reduce job runs: this one, on the local executor."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--executor", "--slurm-option", "--ray-address"):
            skip = True
            continue
        if a.startswith(("--executor=", "--slurm-option=", "--ray-address=")):
            continue
        out.append(a)
    return [sys.executable, "-m", "dataset_builders", *out, "--executor", "local"]


def cmd_build_fulltext(spec: spec_mod.Spec, args) -> int:
    """`build` for full-text and mixture specs: LaTeX sources (+ metadata) -> a context."""
    if not args.input:
        raise InputError("no input given: pass LaTeX sources with --input PATH (repeatable)")
    if args.qa_batch is not None:
        raise InputError(f"--qa-batch is for physics-qa (the teacher's questions), not spec {spec.name}")
    workers = default_workers() if args.workers is None else args.workers
    engine = Engine(executor=args.executor, workers=workers, ray_address=args.ray_address,
                    access=Access(requester_pays=args.requester_pays), months=parse_months(args.months),
                    slurm_options=tuple(args.slurm_option),
                    reduce_argv=tuple(_reduce_argv(args.argv)) if args.executor == "slurm" else ())
    common = dict(metadata=args.metadata, work_dir=args.work_dir, limit=args.limit,
                  progress=not args.no_progress, hash_inputs=not args.no_input_hash, engine=engine)
    if spec.source == "mixture":
        mix = build_mixture(spec, args.input, args.out, **common)
        if mix is not None:
            summarize_mixture(mix.manifest, mix.seconds, args.out)
        return 0
    res = build_fulltext(spec, args.input, args.out, **common)
    if res is not None:
        summarize(res.manifest, res.seconds, args.out)
    return 0


def cmd_map_units(args) -> int:
    """One Slurm array task: its share of the map plan's units."""
    def log(s: str) -> None:
        print(s, file=sys.stderr, flush=True)

    map_units(args.plan, args.task, args.tasks, log)
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
    m = sub.add_parser("map-units", help="clean a share of the source units of a map plan (the Slurm array's job)")
    m.add_argument("plan", type=Path, help="<work>/slurm/plan.json, written by build --executor slurm")
    m.add_argument("--task", type=int, required=True, help="this task's index, 0 <= TASK < TASKS")
    m.add_argument("--tasks", type=int, required=True, help="how many tasks share the plan")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    args.argv = argv
    handlers = {"build": cmd_build, "list-specs": cmd_list_specs, "map-units": cmd_map_units}
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
