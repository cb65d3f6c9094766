"""Readers turn one input (a file, a folder of OAI pages, a Hugging Face dataset id) into
`Paper` records, or `Drop`s that say why a record could not be read."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..records import Drop, InputError, Paper
from . import kaggle, oai


def describe(spec: str) -> str:
    return spec


def input_kind(spec: str) -> str | None:
    """`hf` (a Hugging Face dataset id), `oai-dir` (a folder of OAI-PMH pages), `oai` (one page
    file), `kaggle` (a snapshot file), or None: missing or of no known form."""
    if spec.startswith("hf:"):
        return "hf"
    path = Path(spec)
    if path.is_dir():
        return "oai-dir"
    if not path.is_file():
        return None
    name = path.name.lower()
    if ".xml" in name:
        return "oai"
    if ".json" in name:  # .json, .jsonl, and either compressed
        return "kaggle"
    return None


def iter_input(spec: str, limit: int | None = None, prefilter=None) -> Iterator[Paper | Drop]:
    """Dispatch on the input's form. `hf:<dataset id>[@split]` streams through `datasets`."""
    kind = input_kind(spec)
    if kind == "hf":
        from . import hf

        yield from hf.iter_papers(spec[3:], limit=limit)
        return
    path = Path(spec)
    if not path.exists():
        raise InputError(f"input not found: {spec} (give a Kaggle snapshot .json/.jsonl[.gz|.zst], "
                         "a folder or file of OAI-PMH pages (.xml), or hf:<dataset id>)")
    if kind == "oai-dir":
        pages = sorted(p for p in path.rglob("*") if p.suffix in (".xml", ".gz") and ".xml" in p.name)
        if not pages:
            raise InputError(f"{spec} is a folder without OAI-PMH pages (*.xml / *.xml.gz)")
        yield from oai.iter_pages(pages, limit=limit)
    elif kind == "oai":
        yield from oai.iter_pages([path], limit=limit)
    elif kind == "kaggle":
        yield from kaggle.iter_papers(path, limit=limit, prefilter=prefilter)
    else:
        raise InputError(f"unknown input format: {spec} (expected .json/.jsonl[.gz|.zst] or .xml)")
