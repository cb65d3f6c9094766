"""Readers turn one input (a file, a folder of OAI pages, a Hugging Face dataset id) into
`Paper` records, or `Drop`s that say why a record could not be read."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..records import Drop, InputError, Paper
from . import kaggle, oai


def describe(spec: str) -> str:
    return spec


def iter_input(spec: str, limit: int | None = None, prefilter=None) -> Iterator[Paper | Drop]:
    """Dispatch on the input's form. `hf:<dataset id>[@split]` streams through `datasets`."""
    if spec.startswith("hf:"):
        from . import hf

        yield from hf.iter_papers(spec[3:], limit=limit)
        return
    path = Path(spec)
    if not path.exists():
        raise InputError(f"input not found: {spec} (give a Kaggle snapshot .json/.jsonl[.gz|.zst], "
                         "a folder or file of OAI-PMH pages (.xml), or hf:<dataset id>)")
    if path.is_dir():
        pages = sorted(p for p in path.rglob("*") if p.suffix in (".xml", ".gz") and ".xml" in p.name)
        if not pages:
            raise InputError(f"{spec} is a folder without OAI-PMH pages (*.xml / *.xml.gz)")
        yield from oai.iter_pages(pages, limit=limit)
        return
    name = path.name.lower()
    if ".xml" in name:
        yield from oai.iter_pages([path], limit=limit)
    elif any(s in name for s in (".json", ".jsonl")):
        yield from kaggle.iter_papers(path, limit=limit, prefilter=prefilter)
    else:
        raise InputError(f"unknown input format: {spec} (expected .json/.jsonl[.gz|.zst] or .xml)")
