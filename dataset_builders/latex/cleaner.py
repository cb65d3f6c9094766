"""``clean_project``: a LaTeX project (path -> bytes) to a :class:`CleanedPaper`."""

from __future__ import annotations

import re

from .macros import Definitions, Expander, harvest
from .model import CleanedPaper, LatexError, Limits, render_markdown
from .project import Project
from .render import Renderer
from .tex import read_group, read_optional, resolve_conditionals, strip_tex_programming

_BEGIN_DOC = re.compile(r"\\begin\s*\{document\}")
_DOCCLASS_LINE = re.compile(r"\\document(?:class|style)(?![A-Za-z@])")
_BIB = re.compile(
    r"\\begin\s*\{(?:thebibliography|references)\}|\\bibliography\s*\{|"
    r"\\printbibliography(?![A-Za-z@])"
)
# The bibliography and appendix markers at once (group 1: an appendix): one pass over the
# body instead of two.
_BACK_MATTER = re.compile(
    r"\\(?:(appendix(?![A-Za-z@])|begin\s*\{(?:appendix|appendices)\})"
    r"|begin\s*\{(?:thebibliography|references)\}|bibliography\s*\{|printbibliography(?![A-Za-z@]))"
)
_FRONT = re.compile(r"\\(title|abstract)(?![A-Za-z@])|\\begin\s*\{abstract\}")

DEFAULT_LIMITS = Limits()


def clean_project(
    files: dict[str, bytes], *, keep_appendix: bool = False, limits: Limits = DEFAULT_LIMITS
) -> CleanedPaper:
    """Turn the files of one LaTeX project into Markdown text.

    Raises :class:`LatexError` with a short ``reason`` (``no_tex_source``,
    ``binary``, ``no_main_file``, ``too_large``, ``macro_recursion``,
    ``empty_after_cleaning``).
    """
    stats: dict = {}
    project = Project(files, limits, stats)
    main = project.find_main()
    text = project.resolve(main)
    text = resolve_conditionals(text, stats)

    preamble, body = _split_document(text)
    defs = Definitions()
    for sty in project.local_packages(preamble):
        harvest(sty, defs, keep_text=False)
    harvest(preamble, defs, keep_text=False)
    body = harvest(body, defs)
    stats["macros_defined"] = len(defs.macros)
    stats["macro_defs_unsupported"] = defs.unsupported

    body = _cut_back_matter(body, keep_appendix, stats)
    body = strip_tex_programming(body, stats)
    source = _front_matter(preamble) + "\n\n" + body

    expander = Expander(defs.macros, limits)
    source = expander.expand(source)
    stats["macros_expanded"] = expander.expanded

    renderer = Renderer(source, defs, keep_appendix=keep_appendix)
    title, abstract, sections = renderer.finish(renderer.run())
    stats.update(renderer.n)
    if not any(sec.text for sec in sections):
        raise LatexError("empty_after_cleaning")
    markdown = render_markdown(title, abstract, sections)
    stats["sections"] = sum(1 for s in sections if s.level > 0)
    stats["output_chars"] = len(markdown)
    return CleanedPaper(
        title=title, abstract=abstract, sections=sections, text=markdown, stats=stats
    )


def _split_document(text: str) -> tuple[str, str]:
    m = _BEGIN_DOC.search(text)
    if m is None:
        # no \begin{document}: everything after the \documentclass line is body
        d = _DOCCLASS_LINE.search(text)
        if d is None:
            return "", text
        nl = text.find("\n", d.end())
        return text[: nl if nl >= 0 else len(text)], text[nl + 1 :] if nl >= 0 else ""
    preamble, body = text[: m.start()], text[m.end() :]
    e = _end_document(body)
    if e >= 0:
        body = body[:e]
    return preamble, body


def _end_document(body: str) -> int:
    """Start of the first match of ``\\\\end\\s*\\{document\\}`` in ``body``, or -1.

    Found from the rare ``{document}`` with str.find, then a look back: a regex search
    would stop at every backslash of the body on the way.
    """
    i = body.find("{document}")
    while i >= 0:
        j = i
        while j > 0 and body[j - 1].isspace():  # what \s matches
            j -= 1
        if j >= 4 and body.startswith("\\end", j - 4):
            return j - 4
        i = body.find("{document}", i + 1)
    return -1


def _first_back_matter(body: str) -> tuple[re.Match | None, re.Match | None]:
    """First bibliography and first appendix marker, in one scan."""
    bib = app = None
    for m in _BACK_MATTER.finditer(body):
        if m.group(1) is not None:
            if app is None:
                app = m
        elif bib is None:
            bib = m
        if bib is not None and app is not None:
            break
    return bib, app


def _cut_back_matter(body: str, keep_appendix: bool, stats: dict) -> str:
    """Drop the bibliography and everything after it; drop appendices unless kept."""
    bib, app = _first_back_matter(body)
    stats["bibliography_dropped"] = int(bib is not None)
    stats["appendix_dropped"] = int(app is not None and not keep_appendix)
    if not keep_appendix:
        cuts = [m.start() for m in (bib, app) if m is not None]
        return body[: min(cuts)] if cuts else body
    if bib is None:
        return body
    head = body[: bib.start()]
    if app is not None and app.start() > bib.start():
        tail = body[app.start() :]
        again = _BIB.search(tail)
        if again is not None:
            tail = tail[: again.start()]
        return head + "\n\n" + tail
    return head


def _front_matter(preamble: str) -> str:
    """``\\title``/abstract given in the preamble, as snippets to render with the body."""
    if "\\title" not in preamble and "abstract" not in preamble:
        return ""
    parts = []
    for m in _FRONT.finditer(preamble):
        if m.group(1) is None:  # \begin{abstract} in the preamble
            end = preamble.find("\\end{abstract}", m.end())
            if end > 0:
                parts.append(preamble[m.start() : end + len("\\end{abstract}")])
            continue
        i = m.end()
        if m.group(1) == "title":
            _, i = read_optional(preamble, i)
        g = read_group(preamble, i)
        if g is not None and (m.group(1) == "title" or preamble[i:].lstrip().startswith("{")):
            parts.append("\\" + m.group(1) + "{" + g[0] + "}")
    return "\n\n".join(parts)
