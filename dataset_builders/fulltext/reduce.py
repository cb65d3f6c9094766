"""The reduce step: cleaned papers from the work dir + metadata -> `pipeline.build`.

Each paper read from a source ends in exactly one place, checked in this order: a failure
of the map (`no_tex_source`, `pdf_only`, `macro_recursion`, ... as the cleaner names it) for
papers with no id; `no_metadata` (unless `options.require_metadata: false`); the spec's
filters (category, dates, licence, ...); the map's failure reason; then, in the pipeline,
duplicate ids / contents and the context's own drops (`no_matching_section`).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator

import orjson

from ..filters import build as build_filters
from ..readers import iter_input
from ..readers.kaggle import paper_from_dict
from ..records import Drop, Paper
from ..spec import Spec
from .inputs import Unit
from .remote import WorkPath
from .shards import ShardResult

_ID_PREFIX = b'{"id":"'


def _line_id(line: bytes) -> str | None:
    if line.startswith(_ID_PREFIX):
        j = line.find(b'"', len(_ID_PREFIX))
        if j > 0:
            return line[len(_ID_PREFIX):j].decode()
    return None


def source_ids(units: list[Unit], work_dir: WorkPath) -> set[str]:
    ids: set[str] = set()
    for u in units:
        with (work_dir / f"{u.name}.ids").open("r", encoding="utf-8") as f:
            ids.update(x for x in f.read().split("\n") if x)
    return ids


class Metadata:
    """Metadata of the papers that have sources: for each id, the `Paper` when it passes the
    spec's filters, else the filter's drop reason (memory: only papers with sources)."""

    def __init__(self, spec: Spec):
        self.checks = build_filters(spec.filters)
        self.by_id: dict[str, Paper | str] = {}
        self.report: Counter[str] = Counter()

    def check(self, p: Paper) -> Paper | str:
        for _, check in self.checks:
            reason = check(p)
            if reason:
                return reason
        return p

    def load(self, paths: list[str], wanted: set[str]) -> None:
        for path in paths:
            for item in iter_input(path):
                if isinstance(item, Drop):
                    self.report["unusable_records"] += 1
                    continue
                self.report["records"] += 1
                if item.id in wanted and item.id not in self.by_id:
                    self.by_id[item.id] = self.check(item)
        self.report["joined"] = len(self.by_id)


def iter_papers(units: list[Unit], work_dir: WorkPath, meta: Metadata, counts: Counter, *,
                require_metadata: bool = True, limit: int | None = None) -> Iterator[Paper]:
    """Papers of the work dir, in unit order, with metadata joined; counts what it drops."""
    read = 0
    for u in units:
        with (work_dir / f"{u.name}.jsonl").open("rb") as f:
            for line in f:
                if limit is not None and read >= limit:
                    return
                read += 1
                counts["read"] += 1
                aid = _line_id(line)
                rec = None
                m = meta.by_id.get(aid) if aid else None
                if m is None:
                    rec = orjson.loads(line)
                    aid = rec.get("id")
                    if aid is None:
                        counts["drop:" + rec.get("error", "no_id")] += 1
                        continue
                    m = meta.by_id.get(aid)
                    if m is None and isinstance(rec.get("meta"), dict):  # unarXive's own metadata
                        pm = paper_from_dict(rec["meta"], u.label)
                        m = meta.check(pm) if isinstance(pm, Paper) else None
                    if m is None and not require_metadata and "error" not in rec:
                        m = meta.check(Paper(id=aid, title=rec.get("title") or "", abstract=rec.get("abstract") or "",
                                             categories=[], source=u.label))
                    if m is None:
                        counts["drop:no_metadata"] += 1
                        continue
                if isinstance(m, str):
                    counts["drop:" + m] += 1
                    continue
                if rec is None:
                    rec = orjson.loads(line)
                if "error" in rec:
                    counts["drop:" + rec["error"]] += 1
                    continue
                yield dataclasses.replace(m, extra={"fulltext": rec})


def shard_summary(results: list[ShardResult]) -> dict:
    members: Counter = Counter()
    stats: Counter = Counter()
    for r in results:
        members.update(r.member_issues)
        stats.update(r.stats)
    return {
        "units": [{"input": r.label, "papers": r.records, "cleaned": r.cleaned, "failed": r.errors}
                  for r in results],
        "archive_members_skipped": dict(sorted(members.items())),
        "cleaner": dict(sorted(stats.items())),
    }
