"""Readers turn one input (a file, a folder of OAI pages, a Hugging Face dataset id) into
`Paper` records, or `Drop`s that say why a record could not be read."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from ..records import Drop, InputError, Paper
from . import hf, kaggle, oai
from .compression import sniff_encoding


def inside(root: Path, path: Path) -> bool:
    """True when `path`, with every link resolved, lies within the folder `root`."""
    r = os.path.realpath(root)
    return os.path.realpath(path).startswith(r.rstrip(os.sep) + os.sep)


def oai_pages(folder: Path) -> list[Path]:
    """The OAI-PMH page files of a folder (sorted; links leading outside it are not followed)."""
    return sorted(p for p in folder.rglob("*") if p.suffix in (".xml", ".gz") and ".xml" in p.name
                  and inside(folder, p) and p.is_file())


def check_inputs(inputs: list[str], what: str = "input") -> None:
    """Before any work: every input exists, is of a known form, is given once, and a snapshot
    file is UTF-8 (one line naming the problem otherwise)."""
    if not inputs:
        raise InputError(f"no {what} given: pass --{what} PATH (repeatable) or hf:<dataset id>")
    seen: dict[tuple[int, int], str] = {}
    for spec in inputs:
        kind = input_kind(spec)
        if kind == "hf":
            continue
        path = Path(spec)
        if not path.exists():
            raise InputError(f"{what} not found: {spec} (give a Kaggle snapshot .json/.jsonl[.gz|.zst], "
                             "a folder or file of OAI-PMH pages (.xml), or hf:<dataset id>)")
        if kind is None:
            raise InputError(f"unknown {what} format: {spec} (expected .json/.jsonl[.gz|.zst] or .xml)")
        st = path.stat()
        key = (st.st_dev, st.st_ino)
        if key in seen:
            raise InputError(f"{spec} is the same {what} as {seen[key]}: give each {what} once")
        seen[key] = spec
        if kind == "oai-dir" and not oai_pages(path):
            raise InputError(f"{spec} is a folder without OAI-PMH pages (*.xml / *.xml.gz)")
        if kind == "kaggle":
            enc = sniff_encoding(path)
            if enc is not None:
                raise InputError(f"{spec} is {enc}-encoded; the snapshot must be UTF-8: convert it first "
                                 f"(iconv -f {enc} -t UTF-8 {spec} > snapshot.jsonl)")
    for a in inputs:
        for b in inputs:
            if a != b and input_kind(a) == "oai-dir" and input_kind(b) not in (None, "hf") \
                    and inside(Path(a), Path(b)):
                raise InputError(f"{b} is inside the input folder {a}: give it once")


def check_metadata(paths: list[str]) -> None:
    """The metadata of a full-text build: snapshot files or OAI-PMH pages (checked before work)."""
    local = [p for p in paths if not p.startswith("hf:")]
    if local:
        check_inputs(local, "metadata")


def input_kind(spec: str) -> str | None:
    """`hf` (a Hugging Face dataset id), `oai-dir` (a folder of OAI-PMH pages), `oai` (one page
    file), `kaggle` (a snapshot file), or None: missing or of no known form."""
    if spec.startswith("hf:"):
        return "hf"
    path = Path(spec)
    try:
        if path.is_dir():
            return "oai-dir"
        if not path.is_file():
            return None
    except PermissionError:
        raise InputError(f"{spec}: cannot read it (permission denied); check its permissions") from None
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

        yield from hf.iter_papers(spec[3:], limit=limit)
        return
    path = Path(spec)
    if not path.exists():
        raise InputError(f"input not found: {spec} (give a Kaggle snapshot .json/.jsonl[.gz|.zst], "
                         "a folder or file of OAI-PMH pages (.xml), or hf:<dataset id>)")
    if kind == "oai-dir":
        pages = oai_pages(path)
        if not pages:
            raise InputError(f"{spec} is a folder without OAI-PMH pages (*.xml / *.xml.gz)")
        yield from oai.iter_pages(pages, limit=limit)
    elif kind == "oai":
        yield from oai.iter_pages([path], limit=limit)
    elif kind == "kaggle":
        yield from kaggle.iter_papers(path, limit=limit, prefilter=prefilter)
    else:
        raise InputError(f"unknown input format: {spec} (expected .json/.jsonl[.gz|.zst] or .xml)")
