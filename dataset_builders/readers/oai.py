"""Saved OAI-PMH ListRecords pages in arXiv's `arXiv` and `arXivRaw` metadata formats.

The harvester (`dataset_builders.harvest`) saves each response page verbatim, so a build is
reproducible from disk; this module reads such pages (or any saved by other tools).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..records import Drop, Paper
from ..split import base_id, canonical_id
from .compression import STREAM_ERRORS, open_binary
from .kaggle import _withdrawn, rfc2822_date

OAI_NS = "http://www.openarchives.org/OAI/2.0/"
ARXIV_NS = "http://arxiv.org/OAI/arXiv/"
ARXIVRAW_NS = "http://arxiv.org/OAI/arXivRaw/"


def _t(el: ET.Element | None, tag: str, ns: str) -> str | None:
    if el is None:
        return None
    child = el.find(f"{{{ns}}}{tag}")
    if child is None or child.text is None:
        return None
    return child.text


def _authors_arxiv(meta: ET.Element) -> str:
    names = []
    for a in meta.iterfind(f"{{{ARXIV_NS}}}authors/{{{ARXIV_NS}}}author"):
        fore = _t(a, "forenames", ARXIV_NS)
        key = _t(a, "keyname", ARXIV_NS) or ""
        suffix = _t(a, "suffix", ARXIV_NS)
        name = " ".join(p for p in (fore, key, suffix) if p)
        if name:
            names.append(name)
    return ", ".join(names)


def _required(meta: ET.Element, ns: str) -> tuple[str, str, str, str] | Drop:
    """id, title, abstract, categories of a record, or the Drop naming the first one missing."""
    raw = _t(meta, "id", ns)
    if not raw:
        return Drop("missing_field:id")
    rid = canonical_id(raw)
    if rid is None:
        return Drop("bad_id")
    title, abstract, cats = _t(meta, "title", ns), _t(meta, "abstract", ns), _t(meta, "categories", ns)
    for name, v in (("title", title), ("abstract", abstract), ("categories", cats)):
        if not v or not v.strip():
            return Drop(f"missing_field:{name}", rid)
    assert title is not None and abstract is not None and cats is not None  # checked just above
    return rid, title, abstract, cats


def paper_from_arxiv(meta: ET.Element, source: str) -> Paper | Drop:
    ns = ARXIV_NS
    req = _required(meta, ns)
    if isinstance(req, Drop):
        return req
    rid, title, abstract, cats = req
    comments = _t(meta, "comments", ns)
    return Paper(
        id=rid, title=title, abstract=abstract, categories=cats.split(),
        license=_t(meta, "license", ns), created=(_t(meta, "created", ns) or None),
        authors=_authors_arxiv(meta), comments=comments, doi=_t(meta, "doi", ns),
        journal_ref=_t(meta, "journal-ref", ns), withdrawn=_withdrawn(comments, abstract), source=source,
    )


def paper_from_arxivraw(meta: ET.Element, source: str) -> Paper | Drop:
    ns = ARXIVRAW_NS
    req = _required(meta, ns)
    if isinstance(req, Drop):
        return req
    rid, title, abstract, cats = req
    versions = meta.findall(f"{{{ns}}}version")
    created = None
    if versions:
        created = rfc2822_date(_t(versions[0], "date", ns) or "")
    comments = _t(meta, "comments", ns)
    # A withdrawn paper's last version is a ~1kb stub whose comments say so.
    last_size = (_t(versions[-1], "size", ns) or "") if versions else ""
    withdrawn = _withdrawn(comments, abstract) or (last_size.strip() in ("0kb", "1kb") and
                                                    "withdraw" in (comments or "").lower())
    return Paper(
        id=rid, title=title, abstract=abstract, categories=cats.split(),
        license=_t(meta, "license", ns), created=created, authors=_t(meta, "authors", ns) or "",
        comments=comments, doi=_t(meta, "doi", ns), journal_ref=_t(meta, "journal-ref", ns),
        withdrawn=withdrawn, source=source,
    )


def iter_records(root: ET.Element, source: str) -> Iterator[Paper | Drop]:
    for rec in root.iter(f"{{{OAI_NS}}}record"):
        header = rec.find(f"{{{OAI_NS}}}header")
        if header is not None and header.get("status") == "deleted":
            ident = _t(header, "identifier", OAI_NS) or ""
            yield Drop("deleted", base_id(ident.rsplit(":", 1)[-1]) if ident else None)
            continue
        md = rec.find(f"{{{OAI_NS}}}metadata")
        if md is None or len(md) == 0:
            yield Drop("missing_field:metadata")
            continue
        meta = md[0]
        if meta.tag == f"{{{ARXIV_NS}}}arXiv":
            yield paper_from_arxiv(meta, source)
        elif meta.tag == f"{{{ARXIVRAW_NS}}}arXivRaw":
            yield paper_from_arxivraw(meta, source)
        else:
            yield Drop("unsupported_metadata_format")


def parse_page(data: bytes) -> ET.Element:
    return ET.fromstring(data)


MAX_PAGE_BYTES = 256 << 20  # a ListRecords page of arXiv is 1-3 MB; anything this large is not one


def iter_pages(pages: Iterable[Path], limit: int | None = None) -> Iterator[Paper | Drop]:
    n = 0
    for page in pages:
        try:
            with open_binary(page) as f:
                data = f.read(MAX_PAGE_BYTES + 1)
        except STREAM_ERRORS:
            yield Drop("truncated_input", page.name)
            continue
        if len(data) > MAX_PAGE_BYTES:
            yield Drop("page_too_large", page.name)
            continue
        if not data.strip():
            yield Drop("empty_input", page.name)
            continue
        try:
            root = parse_page(data)
        except ET.ParseError:
            yield Drop("malformed_xml_page", page.name)
            continue
        for item in iter_records(root, page.name):
            if limit is not None and n >= limit:
                return
            n += 1
            yield item


def resumption_token(root: ET.Element) -> str | None:
    tok = root.find(f"{{{OAI_NS}}}ListRecords/{{{OAI_NS}}}resumptionToken")
    if tok is None:
        return None
    return (tok.text or "").strip() or None


def oai_error(root: ET.Element) -> tuple[str, str] | None:
    err = root.find(f"{{{OAI_NS}}}error")
    if err is None:
        return None
    return err.get("code", ""), (err.text or "").strip()
