"""Public data types of the LaTeX cleaner: results, errors and resource limits."""

from __future__ import annotations

from dataclasses import dataclass, field

MB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Resource caps for reading and cleaning one paper.

    Every cap turns into a counted, named outcome (a skipped member or a
    ``LatexError`` with a short reason), never into unbounded memory or time.
    """

    # archive reading
    max_member_bytes: int = 20 * MB  # largest single file kept from an archive
    max_paper_bytes: int = 50 * MB  # sum of the files kept for one paper
    max_scan_bytes: int = 128 * MB  # decompressed bytes read per e-print, skipped members included
    max_eprint_bytes: int = 256 * MB  # compressed size of one e-print inside a bulk shard
    max_files: int = 2000  # archive members per paper
    # LaTeX processing
    include_depth: int = 8  # nesting of \input/\include
    expansion_budget: int = 200_000  # macro expansions per paper
    expansion_depth: int = 32  # nesting of one macro expansion inside another
    max_text_chars: int = 30_000_000  # characters after includes / after macro expansion


@dataclass
class Section:
    """One heading and the text under it.

    ``level`` is the number of ``#`` of the Markdown heading (``\\section`` = 2,
    ``\\subsection`` = 3, ...). Level 0 with an empty title holds body text that
    comes before the first heading.
    """

    level: int
    title: str
    text: str


@dataclass
class CleanedPaper:
    title: str | None
    abstract: str | None
    sections: list[Section]
    text: str  # the full Markdown document: title, abstract, then every section
    stats: dict = field(default_factory=dict)


class LatexError(Exception):
    """A paper that cannot be turned into text; ``reason`` is a short machine tag."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    def __reduce__(self):  # keep reason/detail across process boundaries
        return (type(self), (self.reason, self.detail))


def render_markdown(title: str | None, abstract: str | None, sections: list[Section]) -> str:
    """Assemble the Markdown document used for ``CleanedPaper.text``."""
    parts: list[str] = []
    if title:
        parts.append("# " + title)
    if abstract:
        parts.append("## Abstract")
        parts.append(abstract)
    for sec in sections:
        if sec.level > 0 and sec.title:
            parts.append("#" * sec.level + " " + sec.title)
        if sec.text:
            parts.append(sec.text)
    return "\n\n".join(parts) + ("\n" if parts else "")
