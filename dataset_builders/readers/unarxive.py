"""Reader for unarXive-style JSONL (one paper per line; plain, ``.gz`` or ``.zst``).

Each line holds ``paper_id``, ``metadata`` (arXiv/Kaggle metadata schema),
``abstract`` (``{"text": ...}``), ``body_text`` (paragraphs, each with
``section``, ``sec_number``, ``sec_type`` and ``text``) and ``ref_entries``.
Paragraph texts carry placeholders: ``{{formula:<id>}}`` (LaTeX kept in
``ref_entries``), ``{{cite:<id>}}``, ``{{figure:<id>}}``/``{{table:<id>}}``.

:func:`iter_unarxive` yields one dict per usable paper::

    {"id": "2212.11867",            # base arXiv id, version suffix removed
     "metadata": {...},             # the metadata dict as stored
     "title": str | None,
     "abstract": str | None,
     "sections": [Section, ...],    # consecutive paragraphs of a section, in order
     "text": str}                   # the same Markdown layout as CleanedPaper.text

Formulas are put back as TeX (``$...$``; environments as they are),
citations become ``[cite]`` and figure/table references ``[ref]``, matching
the LaTeX cleaner's markers.

Dropped lines are not yielded. Pass a ``collections.Counter`` as ``drops`` to
learn why: ``bad_json``, ``not_object``, ``missing_id``, ``bad_body``,
``empty_body``; ``decode_error`` counts a compressed stream that broke
(reading stops there).
"""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dataset_builders.latex.model import Section, render_markdown

from ..split import canonical_id
from .compression import STREAM_ERRORS, open_binary

_loads: Callable[[str], Any]  # orjson's when installed, else the standard library's
try:
    import orjson

    _loads = orjson.loads
    _JSONError: tuple = (orjson.JSONDecodeError, ValueError)
except ImportError:  # pragma: no cover
    _loads = json.loads
    _JSONError = (ValueError,)

_PLACEHOLDER = re.compile(r"\{\{(formula|cite|figure|table|ref):([^{}\s]+)\}\}")
_LEVELS = {"section": 2, "subsection": 3, "subsubsection": 4, "paragraph": 5}
_SPACES = re.compile(r"[ \t]*\n[ \t]*|[ \t]{2,}")


def _open(path: Path):
    return io.TextIOWrapper(open_binary(path), encoding="utf-8", errors="replace")


def iter_unarxive(
    path: str | Path, drops: Counter | None = None, *, resolve_placeholders: bool = True
) -> Iterator[dict]:
    """Yield one paper dict per valid line of an unarXive JSONL file (see module doc)."""
    drops = drops if drops is not None else Counter()
    path = Path(path)
    with _open(path) as fh:
        try:
            for line in fh:
                if not line.strip():
                    continue
                paper = _paper(line, drops, resolve_placeholders)
                if paper is not None:
                    yield paper
        except STREAM_ERRORS:  # truncated/corrupt stream
            drops["decode_error"] += 1


def _paper(line: str, drops: Counter, resolve: bool) -> dict | None:
    try:
        d = _loads(line)
    except _JSONError:
        drops["bad_json"] += 1
        return None
    if not isinstance(d, dict):
        drops["not_object"] += 1
        return None
    meta = d.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    pid = d.get("paper_id") or meta.get("id")
    if not isinstance(pid, str) or not pid.strip():
        drops["missing_id"] += 1
        return None
    pid = canonical_id(pid)
    if pid is None:
        drops["bad_id"] += 1
        return None
    body = d.get("body_text")
    if not isinstance(body, list):
        drops["bad_body"] += 1
        return None
    refs = d.get("ref_entries") if resolve else None
    refs = refs if isinstance(refs, dict) else {}

    sections: list[Section] = []
    key = None
    paras: list[str] = []
    for para in body:
        if not isinstance(para, dict):
            continue
        text = para.get("text")
        if not isinstance(text, str):
            continue
        text = _fill(text, refs) if resolve else text
        text = _SPACES.sub(" ", text).strip()
        if not text:
            continue
        section, sec_number = para.get("section"), para.get("sec_number")
        sec_title = section if isinstance(section, str) else ""
        number = sec_number if isinstance(sec_number, str) else ""
        k = (sec_title, number)
        if k != key:
            if paras:
                sections[-1].text = "\n\n".join(paras)
            paras = []
            sections.append(
                Section(
                    level=_level(para.get("sec_type"), number, sec_title), title=sec_title.strip(), text=""
                )
            )
            key = k
        paras.append(text)
    if paras:
        sections[-1].text = "\n\n".join(paras)
    if not sections:
        drops["empty_body"] += 1
        return None

    title = meta.get("title")
    title = " ".join(title.split()) if isinstance(title, str) and title.strip() else None
    abstract = None
    ab = d.get("abstract")
    if isinstance(ab, dict) and isinstance(ab.get("text"), str):
        abstract = ab["text"]
    elif isinstance(meta.get("abstract"), str):
        abstract = meta["abstract"]
    if abstract is not None:
        abstract = _SPACES.sub(" ", abstract).strip() or None
    return {
        "id": pid,
        "metadata": meta,
        "title": title,
        "abstract": abstract,
        "sections": sections,
        "text": render_markdown(title, abstract, sections),
    }


def _level(sec_type, number: str, title: str) -> int:
    if isinstance(sec_type, str) and sec_type in _LEVELS:
        return _LEVELS[sec_type]
    if number:
        return min(2 + number.count("."), 6)
    return 2 if title else 0


def _fill(text: str, refs: dict) -> str:
    if "{{" not in text:
        return text

    def repl(m: re.Match) -> str:
        kind = m.group(1)
        if kind == "cite":
            return "[cite]"
        if kind == "formula":
            entry = refs.get(m.group(2))
            latex = entry.get("latex") if isinstance(entry, dict) else None
            if not isinstance(latex, str) or not latex.strip():
                return "[formula]"
            latex = latex.strip()
            if latex.startswith("\\begin{") or latex.startswith("$"):
                return latex
            return "$" + latex + "$"
        return "[ref]"

    return _PLACEHOLDER.sub(repl, text)
