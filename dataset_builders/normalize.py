"""Text normalisation for arXiv metadata.

* Titles and abstracts come hard-wrapped with indentation; we unwrap them. A wrapped line
  that starts with indentation right after a sentence end starts a new paragraph (arXiv's own
  convention for multi-paragraph abstracts); otherwise the break is just wrapping.
* TeX stays TeX: math (`$...$`) is kept byte for byte so that answers render as LaTeX.
* TeX accents in author names (`G\\"ahler`, `{\\O}bro`, `\\v{S}r\\'amek`) become Unicode through
  pylatexenc's latex2text; names only, because running it over abstracts would mangle math.
"""

from __future__ import annotations

import re
from functools import lru_cache

from pylatexenc.latex2text import LatexNodes2Text

_PARA_END = frozenset(".!?:;")
_SENTENCE_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ\\$(")
_INDENTED_LINE = re.compile(r"\n[ \t]")


def unwrap(text: str) -> str:
    """Collapse hard wraps and indentation to single spaces (one line); NUL bytes go."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    r = text.strip().replace("\n", " ")
    if "  " in r or "\t" in r or "\r" in r or "\x0b" in r or "\x0c" in r:
        return " ".join(text.split())
    return r


def unwrap_abstract(text: str) -> str:
    """Unwrap an abstract, keeping real paragraph breaks as blank lines; NUL bytes go."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    text = text.strip()
    r = text.replace("\n", " ")
    if "  " not in r and "\t" not in r and "\r" not in r and "\x0b" not in r and "\x0c" not in r:
        return r  # single-spaced once unwrapped, so no line was indented either (the common case)
    if _INDENTED_LINE.search(text) is None:  # no indented line: plain hard wraps
        return unwrap(text)
    paragraphs: list[list[str]] = [[]]
    prev = ""
    for line in text.split("\n"):
        if line[:1] in (" ", "\t") and prev.rstrip()[-1:] in _PARA_END and paragraphs[-1]:
            paragraphs.append([])
        paragraphs[-1].append(line)
        prev = line
    return "\n\n".join(" ".join(" ".join(p).split()) for p in paragraphs if p)


def normalise(p):
    """A paper's title and abstract unwrapped in place (returns the paper)."""
    p.title = unwrap(p.title)
    p.abstract = unwrap_abstract(p.abstract)
    return p


def lead(abstract: str, max_sentences: int = 2) -> str:
    """The first sentence(s) of an abstract: what the paper sets out to do.

    A sentence ends at `.`, `!` or `?` followed by whitespace and then a capital letter, a
    backslash, `$` or `(`. Written as a scan over the punctuation marks (cheap `str.find`s)
    because a regular expression has to try every position of a long abstract.
    """
    end = abstract.find("\n\n")
    first = abstract if end < 0 else abstract[:end]
    n = len(first)
    parts: list[str] = []
    start = 0
    nxt = {c: first.find(c) for c in ".!?"}
    while len(parts) < max_sentences:
        live = [i for i in nxt.values() if i >= 0]
        if not live:
            break
        j = min(live)
        for c, i in nxt.items():
            if i == j:
                nxt[c] = first.find(c, j + 1)
        k = j + 1
        while k < n and first[k].isspace():
            k += 1
        if j + 1 < k < n and first[k] in _SENTENCE_START:
            parts.append(first[start:j + 1])
            start = k
    if len(parts) < max_sentences:
        parts.append(first[start:])
    return " ".join(parts).strip()


@lru_cache(maxsize=1)
def _latex2text():
    return LatexNodes2Text(math_mode="verbatim", strict_latex_spaces=True)


@lru_cache(maxsize=65536)
def authors_to_unicode(authors: str) -> str:
    """`C. Bal\\'azs, Mikkel {\\O}bro` -> `C. Balázs, Mikkel Øbro` (whitespace unwrapped)."""
    s = unwrap(authors)
    if "\\" not in s and "{" not in s:
        return s
    try:
        out = _latex2text().latex_to_text(s)
    except Exception:  # pylatexenc is lenient; anything it still rejects stays as written
        return s
    return unwrap(out)


def content_key(title: str, abstract: str) -> int:
    """Key for 'identical normalised content' dedup: case-insensitive, on unwrapped text."""
    return hash((title.lower(), abstract.lower()))
