"""reader -> filters -> normalise -> dedup -> context -> split writer, with counts for all.

Every record read ends in exactly one place: an output split, or a drop reason in the
manifest. `read == kept + sum(dropped)` holds for every build (tests check it).
"""

from __future__ import annotations

import gc
import hashlib
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from qwenphysics.hashing import sha256_file

from . import contexts
from .dedup import KeySet
from .filters import build as build_filters, category_check
from .normalize import content_key, unwrap, unwrap_abstract
from .output import SplitWriter, data_card, manifest_json, token_stats
from .readers import iter_input
from .records import Drop, InputError, Paper
from .spec import Spec
from .split import SPLITS, TEST_BP, VALIDATION_BP, bucket, split_of_bucket

BUILDER_VERSION = "1"
# Drops that describe a whole input, not a record: reported, but not counted as records read.
INPUT_LEVEL = frozenset({"empty_input", "truncated_input", "malformed_xml_page"})


@dataclass
class BuildResult:
    out: Path
    manifest: dict
    seconds: float
    counts: dict = field(default_factory=dict)


def _progress(total: int | None, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit=" rec", unit_scale=True, desc="build", file=sys.stderr,
                mininterval=0.5, smoothing=0.1)


def normalise(p: Paper) -> Paper:
    p.title = unwrap(p.title)
    p.abstract = unwrap_abstract(p.abstract)
    return p


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


def build(spec: Spec, inputs: list[str], out: Path, *, limit: int | None = None, progress: bool = False,
          hash_inputs: bool = True, papers: Iterator[Paper] | None = None, counts: Counter | None = None,
          render: Callable[[Spec, Paper, int], list[dict] | Drop] | None = None,
          input_issues: list[dict] | None = None, extra_manifest: dict | None = None,
          card_notes: str | Callable[[dict], str] | None = None,
          tokens: Callable[[], dict | None] | None = None) -> BuildResult:
    """Build one training context. `papers` may replace `inputs` (full text, mixtures).

    Another source feeding `papers` counts what it read and dropped itself, in `counts`
    (`read`, `drop:<reason>`) and `input_issues`, so the manifest still adds up. `render`
    replaces `contexts.render`; it may return a `Drop` (counted under its reason).
    `extra_manifest` adds (or overrides) top-level manifest keys when the build ends (so a
    renderer may fill it while running); `card_notes` is Markdown appended to the data card
    (or a function of the finished manifest that returns it). `tokens` returns the manifest's
    token statistics instead of sampling them (a renderer that counted every example's tokens).
    """
    contexts.check_templates(spec)
    checks = build_filters(spec.filters)
    counts = counts if counts is not None else Counter()
    input_issues = input_issues if input_issues is not None else []
    render = render or contexts.render
    ids, contents = KeySet(), KeySet()
    writer = SplitWriter(out)
    bar = _progress(limit, progress)
    t0 = time.perf_counter()
    # The loop allocates millions of short-lived dicts and strings but no reference cycles:
    # the cyclic garbage collector would only rescan them (a third of the run time).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        source = papers if papers is not None else iter_papers(inputs, limit, counts, input_issues,
                                                               prefilter=category_check(spec.filters))
        for i, p in enumerate(source):
            if bar is not None and (i & 4095) == 0:
                bar.n = counts["read"]
                bar.refresh()
            reason = None
            for _, check in checks:
                reason = check(p)
                if reason:
                    break
            if reason:
                counts["drop:" + reason] += 1
                continue
            normalise(p)
            if not ids.add_new(hash(p.id)):
                counts["drop:duplicate_id"] += 1
                continue
            if not contents.add_new(content_key(p.title, p.abstract)):
                counts["drop:duplicate_content"] += 1
                continue
            b = bucket(p.id)
            examples = render(spec, p, b)
            if isinstance(examples, Drop):
                counts["drop:" + examples.reason] += 1
                continue
            writer.write(split_of_bucket(b), examples)
            counts["kept"] += 1
        if bar is not None:
            bar.n = counts["read"]
            bar.close()
        checksums = writer.close_files()
        seconds = time.perf_counter() - t0
        manifest = make_manifest(spec, inputs, counts, writer, checksums, input_issues, hash_inputs,
                                 tokens=tokens)
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


def make_manifest(spec: Spec, inputs: list[str], counts: Counter, writer: SplitWriter, checksums: dict,
                  input_issues: list, hash_inputs: bool, tokens: Callable[[], dict | None] | None = None) -> dict:
    dropped = {k[5:]: v for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if k.startswith("drop:")}
    inputs_info = []
    for s in inputs:
        info: dict = {"path": s}
        p = Path(s)
        if p.is_file():
            info["bytes"] = p.stat().st_size
            if hash_inputs:
                info["sha256"] = sha256_file(p)
        elif p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file())
            info["files"] = len(files)
            info["bytes"] = sum(f.stat().st_size for f in files)
            if hash_inputs:
                h = hashlib.sha256()
                for f in files:
                    h.update(f.relative_to(p).as_posix().encode() + b"\0" + sha256_file(f).encode())
                info["sha256"] = h.hexdigest()
        inputs_info.append(info)
    spec_bytes = spec.path.read_bytes() if spec.path else b""
    return {
        "builder": {"name": "qwenphysics.dataset_builders", "version": BUILDER_VERSION},
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
            "papers": {s: writer.papers[s] for s in SPLITS},
            "examples": {s: writer.lines[s] for s in SPLITS},
        },
        "tokens": tokens() if tokens is not None else token_stats(writer.samples, writer.lines),
        "checksums": checksums,
        "fields": (["messages", "id", "template"] if spec.format == "chat" else ["text", "id"]),
    }


def check_inputs(inputs: list[str]) -> None:
    if not inputs:
        raise InputError("no input given: pass --input PATH (repeatable) or hf:<dataset id>")
