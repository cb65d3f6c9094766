"""Body rendering: expanded LaTeX body -> Markdown paragraphs and headings.

A single left-to-right scan over "interesting" tokens (control sequences,
braces, ``$``) found with one compiled regex; plain text between tokens is
copied as slices. Math and verbatim material is cut out verbatim into a side
table and referenced by private placeholder characters, so whitespace
normalisation never touches it.

pylatexenc supplies data, not parsing, here: the argument signatures of the
standard macros we discard (its default ``latexwalker`` context) and the
Unicode replacements of text symbols such as ``\\ss`` or ``\\textendash`` (its
default ``latex2text`` context). Running its walker over whole papers measured
~0.25 MB/s, far below the throughput this stage needs.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from pylatexenc.latex2text import get_default_latex_context_db as l2t_db
from pylatexenc.latexwalker import get_default_latex_context_db
from pylatexenc.latexwalker import get_default_latex_context_db as lw_db

from .macros import Definitions
from .model import Section
from .tex import _CS, _NESTED_GROUP, _NEXT_BRACE, PCT, find_env_end, match_bracket, skip_ws

# private markers (the input is scrubbed of control characters beforehand)
HEAD = "\x01"  # \x01<level>\x01<title>\x01
# raw (math/verbatim) text is replaced by \x02<index>\x03, or by \x02<index>\x04 when
# it must sit on its own line (display math, code blocks)
RAW_OPEN, RAW_CLOSE, BLOCK_CLOSE = "\x02", "\x03", "\x04"
NEWLINE = "\x05"  # forced line break inside a paragraph (list items)

CITE_MARK = "[cite]"
REF_MARK = "[ref]"

# Scanning patterns are alternations whose branches all start with a literal character:
# the regex engine then skips ahead with a fast first-character test (a branch starting with
# a character class, like "[{}$]", disables that and costs ~1.5x on every byte scanned).
# A "$" token is the whole inline formula when one follows ("$" only, then "$$" or an
# unbalanced "$"); that branch starts with a literal too.
_TOKEN = re.compile(
    r"\\(?:[A-Za-z@]+|.)|\{|\}|\$(?!\$)(?:[^$\\\n]++|\\.|\n(?![ \t]*\n))*+\$|\$", re.S
)
_BRACE_OR_ESC = re.compile(r"\\[\\{}]|\{|\}")
_LABEL = re.compile(r"\\label\s*\{[^{}]*\}")
_FLAT_GROUP = re.compile(r"\{(?:[^{}\\]++|\\[^{}])*+\}")  # a group without nested or escaped braces
_BLANK_LINE = re.compile(r"\n[ \t]*(?=\n)")
_ICON = re.compile(r"fa[A-Z][A-Za-z]*$")  # fontawesome icons: \faGithub, \faFileCode
_INLINE_DOLLAR = re.compile(r"(?:[^$\\\n]++|\\.|\n(?![ \t]*\n))*+\$", re.S)
_DISPLAY_DOLLAR = re.compile(r"(?:[^$\\]++|\\.|\$(?!\$))*+\$\$", re.S)
_CLOSE_PAREN = re.compile(r"(?:[^\\]++|\\[^)])*+\\\)", re.S)
_CLOSE_BRACKET = re.compile(r"(?:[^\\]++|\\[^\]])*+\\\]", re.S)
_CAPTION = re.compile(r"\\(caption|captionof|subcaption)(?![A-Za-z@])\*?")
_ENV_NAME = re.compile(r"\s*\{([^{}\\]{1,64})\}")

SECTION_LEVELS = {
    "part": 1,
    "chapter": 1,
    "section": 2,
    "subsection": 3,
    "subsubsection": 4,
    "paragraph": 5,
    "subparagraph": 6,
}

MATH_ENVS = frozenset(
    "equation equation* align align* alignat alignat* flalign flalign* gather gather* "
    "multline multline* eqnarray eqnarray* displaymath math dmath dmath* dgroup dgroup* "
    "IEEEeqnarray IEEEeqnarray* split aligned gathered cases array subeqnarray".split()
)
FLOAT_ENVS = {
    **dict.fromkeys(
        "figure figure* wrapfigure SCfigure sidewaysfigure floatingfigure subfigure".split(),
        "Figure",
    ),
    **dict.fromkeys("table table* wraptable sidewaystable longtable longtable*".split(), "Table"),
    **dict.fromkeys("algorithm algorithm* algorithm2e".split(), "Algorithm"),
}
DROP_ENVS = frozenset(
    "tikzpicture pgfpicture picture pspicture tabular tabular* tabularx tabulary "
    "thebibliography references filecontents filecontents* keywords tocentry overpic "
    "comment".split()
)
VERBATIM_ENVS = frozenset("verbatim verbatim* Verbatim lstlisting minted alltt".split())
LIST_ENVS = frozenset(
    "itemize enumerate description list compactitem compactenum compactdesc inparaenum "
    "asparaenum asparaitem".split()
)
BLOCK_ENVS = frozenset(
    "center flushleft flushright quote quotation minipage verse multicols multicols* "
    "titlepage frontmatter abstract* mdframed tcolorbox framed".split()
)
ACK_ENVS = frozenset("acknowledgments acknowledgements acknowledgment acknowledgement acks".split())
THEOREM_DEFAULTS = {
    n: n.capitalize()
    for n in "theorem lemma proposition corollary definition remark example conjecture claim "
    "assumption hypothesis observation problem question exercise fact note".split()
}
ENV_ARGSPECS = {
    "minipage": "[[[{",
    "multicols": "{",
    "multicols*": "{",
    "list": "{{",
    "enumerate": "[",
    "itemize": "[",
    "description": "[",
    "minted": "[{",
    "lstlisting": "[",
    "otherlanguage": "{",
    "otherlanguage*": "{",
    "CJK": "[{{",
    "CJK*": "[{{",
    "spacing": "{",
    "mdframed": "[",
    "tcolorbox": "[",
    "array": "[{",
    "alignat": "{",
    "alignat*": "{",
}

# Macros rendered as (part of) their argument: name -> (argspec, index of the kept argument)
UNWRAP = {
    **{
        n: ("{", 0)
        for n in "emph textbf textit texttt textsc textsf textrm textup textsl textmd textnormal "
        "mbox fbox hbox text textsuperscript textsubscript uline underline uuline enquote "
        "centerline textbi software".split()
    },
    "textcolor": ("[{{", 2),
    "colorbox": ("[{{", 2),
    "fcolorbox": ("{{{", 2),
    "href": ("{{", 1),
    "hyperref": ("[{", 1),
    "hyperlink": ("{{", 1),
    "hypertarget": ("{{", 1),
    "texorpdfstring": ("{{", 0),
    "foreignlanguage": ("[{{", 2),
    "makebox": ("[[{", 2),
    "framebox": ("[[{", 2),
    "raisebox": ("{[[{", 3),
    "parbox": ("[[[{{", 4),
    "scalebox": ("{[{", 2),
}

CITE_NAMES = frozenset(
    "cite citep citet citealt citealp citeauthor citeyear citeyearpar citenum parencite "
    "textcite autocite footcite Cite Citep Citet Citealt Citealp Citeauthor onlinecite "
    "supercite smartcite cites citetext".split()
)
REF_NAMES = frozenset(
    "ref eqref autoref Autoref cref Cref pageref nameref vref Vref cpageref subref "
    "labelcref Eqref".split()
)

# Discarded macros: argument signatures come from pylatexenc where it knows the
# macro; LOCAL_DROP_SPECS covers journal classes (aastex, revtex, amsart, elsarticle)
# and the cases where their argument forms differ from the generic LaTeX ones.
_DROP_NAMES = (
    "label vspace hspace setlength addtolength setcounter addtocounter stepcounter "
    "refstepcounter includegraphics bibliographystyle pagestyle thispagestyle pagenumbering "
    "newpage clearpage cleardoublepage pagebreak nopagebreak maketitle noindent indent "
    "centering raggedright raggedleft color date keywords tableofcontents listoffigures "
    "listoftables linenumbers nolinenumbers medskip smallskip bigskip vfill hfill hfil vfil "
    "protect relax footnotemark nocite marginpar graphicspath usepackage RequirePackage "
    "documentclass bibliography printbibliography addbibresource input include makeatletter "
    "makeatother selectfont fontsize small footnotesize scriptsize tiny large Large LARGE huge "
    "Huge normalsize bf it rm sf tt sc sl em bfseries itshape upshape mdseries rmfamily "
    "sffamily ttfamily scshape slshape normalfont boldmath unboldmath frenchspacing sloppy "
    "fussy allowbreak break nobreak ignorespaces xspace null strut leavevmode phantom "
    "hphantom vphantom enlargethispage twocolumngrid onecolumngrid balance newline linebreak "
    "title author affiliation affil address email thanks pacs received accepted published "
    "submitted shorttitle shortauthors correspondingauthor orcid altaffiliation institute "
    "subjclass curraddr urladdr dedicatory titlerunning authorrunning tnotetext fntext "
    "cortext ead journal volume doi arxiv preprint reportnum vskip hskip kern "
    "eject hline cline toprule midrule bottomrule noalign rule resizebox FloatBarrier "
    "appendix nolinenumbers today newif"
).split()
LOCAL_DROP_SPECS = {
    "author": "[{",
    "affiliation": "{",
    "affil": "[{",
    "address": "[{",
    "email": "[{",
    "thanks": "{",
    "pacs": "{",
    "received": "{",
    "accepted": "{",
    "published": "{",
    "submitted": "{",
    "shorttitle": "{",
    "shortauthors": "{",
    "correspondingauthor": "{",
    "orcid": "{",
    "altaffiliation": "{",
    "institute": "{",
    "subjclass": "[{",
    "curraddr": "{",
    "urladdr": "{",
    "dedicatory": "{",
    "titlerunning": "{",
    "authorrunning": "{",
    "tnotetext": "[{",
    "fntext": "[{",
    "cortext": "[{",
    "ead": "[{",
    "journal": "{",
    "volume": "{",
    "doi": "{",
    "arxiv": "{",
    "preprint": "{",
    "reportnum": "{",
    "keywords": "{",
    "date": "{",
    "title": "[{",
    "includegraphics": "*[[{",
    "setlength": "{{",
    "addtolength": "{{",
    "setcounter": "{{",
    "addtocounter": "{{",
    "stepcounter": "{",
    "refstepcounter": "{",
    "bibliographystyle": "{",
    "bibliography": "{",
    "addbibresource": "[{",
    "printbibliography": "[",
    "pagestyle": "{",
    "thispagestyle": "{",
    "pagenumbering": "{",
    "graphicspath": "{",
    "usepackage": "[{[",
    "RequirePackage": "[{[",
    "documentclass": "[{[",
    "input": "{",
    "include": "{",
    "fontsize": "{{",
    "phantom": "{",
    "hphantom": "{",
    "vphantom": "{",
    "enlargethispage": "*{",
    "marginpar": "[{",
    "nocite": "{",
    "footnotemark": "[",
    "linebreak": "[",
    "newline": "",
    "pagebreak": "[",
    "nopagebreak": "[",
    "cline": "{",
    "rule": "[{{",
    "resizebox": "*{{{",
    "color": "[{",
    "label": "{",
    "newif": "{",
    "vspace": "*{",
    "hspace": "*{",
}


def _build_drop_specs() -> dict[str, str]:
    specs: dict[str, str] = {}
    try:
        ctx = get_default_latex_context_db()
    except Exception:  # pragma: no cover - pylatexenc is a core dependency
        ctx = None
    for name in _DROP_NAMES:
        if name in LOCAL_DROP_SPECS:
            specs[name] = LOCAL_DROP_SPECS[name]
            continue
        spec = ""
        if ctx is not None:
            ms = ctx.get_macro_spec(name)
            if ms is not None and getattr(ms.args_parser, "argspec", None):
                spec = ms.args_parser.argspec
        specs[name] = spec
    return specs


def _build_symbols() -> dict[str, str]:
    """Zero-argument text symbols with a fixed Unicode replacement (from pylatexenc)."""
    table: dict[str, str] = {}
    try:
        walker = lw_db()
        for spec in l2t_db().iter_macro_specs():
            repl = spec.simplify_repl
            name = spec.macroname
            if not isinstance(repl, str) or "%" in repl or not name[:1].isalpha():
                continue
            ws = walker.get_macro_spec(name)
            if ws is not None and getattr(ws.args_parser, "argspec", None):
                continue
            table[name] = repl
    except Exception:  # pragma: no cover
        pass
    for name in ("today", "vspace", "hspace", "par", "newline", "linebreak", "quad", "qquad"):
        table.pop(name, None)  # handled elsewhere, or not deterministic
    table.update(
        {
            "LaTeX": "LaTeX",
            "TeX": "TeX",
            "LaTeXe": "LaTeX2e",
            "S": "§",
            "P": "¶",
            "copyright": "©",
            "dag": "†",
            "ddag": "‡",
            "quad": " ",
            "qquad": " ",
            "etal": "et al.",
            "ie": "i.e.",
            "eg": "e.g.",
            "etc": "etc.",
        }
    )
    return table


DROP_SPECS = _build_drop_specs()
SYMBOLS = _build_symbols()

# control symbols in text mode
CONTROL_SYMBOLS = {
    "%": "%",
    "&": "&",
    "#": "#",
    "_": "_",
    "{": "{",
    "}": "}",
    " ": " ",
    "\n": " ",
    "\t": " ",
    ",": " ",
    ";": " ",
    ":": " ",
    ">": " ",
    "!": "",
    "/": "",
    "-": "",
    "@": "",
    "$": "\\$",
    "|": "‖",
}
ACCENTS = {
    "'": "\u0301",
    "`": "\u0300",
    "^": "\u0302",
    '"': "\u0308",
    "~": "\u0303",
    "=": "\u0304",
    ".": "\u0307",
    "u": "\u0306",
    "v": "\u030c",
    "H": "\u030b",
    "c": "\u0327",
    "k": "\u0328",
    "r": "\u030a",
    "d": "\u0323",
    "b": "\u0331",
}
_DOTLESS = {"\\i": "ı", "\\j": "ȷ"}

MAX_DEPTH = 100

# dispatch kinds of text-mode control sequences
K_TEXT, K_DROP, K_HANDLER, K_UNWRAP, K_CITE, K_REF, K_SECTION, K_ACCENT, K_LINEBREAK, K_MATH = (
    range(10)
)


def _static_dispatch() -> dict[str, tuple[int, Any]]:
    """name -> (kind, data); later updates take precedence over earlier ones. The type of data
    depends on the kind (text, argument spec, handler, ...)."""
    d: dict[str, tuple[int, Any]] = {}
    d.update((n, (K_TEXT, t)) for n, t in CONTROL_SYMBOLS.items())
    d.update((n, (K_TEXT, t)) for n, t in SYMBOLS.items())
    d.update((n, (K_ACCENT, None)) for n in ACCENTS)
    d.update((n, (K_REF, None)) for n in REF_NAMES)
    d.update((n, (K_CITE, None)) for n in CITE_NAMES)
    d.update((n, (K_UNWRAP, spec)) for n, spec in UNWRAP.items())
    d.update((n, (K_DROP, spec)) for n, spec in DROP_SPECS.items())
    d.update((n, (K_SECTION, level)) for n, level in SECTION_LEVELS.items())
    d["\\"] = (K_LINEBREAK, None)
    d["("] = (K_MATH, (_CLOSE_PAREN, False))
    d["["] = (K_MATH, (_CLOSE_BRACKET, True))
    d["]"] = d[")"] = (K_TEXT, "")
    return d


STATIC_DISPATCH = _static_dispatch()

# Simple complete forms matched at a token position in one step (no Python argument
# parsing): the token regex itself keeps branches that start with a literal so the engine
# can skip quickly to the next backslash, brace or dollar.
_CITE_ARGS_AT = re.compile(r"\*?(?:[ \t]*\[[^\[\]{}\\]*\]){0,2}[ \t]*\{[^{}\\]*\}")
_ONE_ARG_AT = re.compile(r"\*?[ \t]*\{[^{}\\]*\}")
_PLAIN_ARG_AT = re.compile(r"[ \t]*\{[^{}\\]*\}")  # a brace group without braces or escapes
_TEXT_ARG_AT = re.compile(r"[ \t]*\{([^{}\\$]*)\}")  # ... and without anything to render


class Renderer:
    """Renders one expanded body string. Call :meth:`run`, then :meth:`finish`."""

    def __init__(self, s: str, defs: Definitions, *, keep_appendix: bool = False):
        self.s = s
        self.defs = defs
        self.keep_appendix = keep_appendix
        self.raw: list[str] = []
        self.title: str | None = None
        self.abstract: str | None = None
        self.theorems = {**THEOREM_DEFAULTS, **defs.theorems}
        self._close_map: dict[int, int] | None = None
        self._inner_closes: dict[int, int] = {}  # nested "{" met while matching -> its end
        self._scan_budget = 4 * len(s) + 100_000  # brace-matching work before building a full map
        self.n = dict(
            math_blocks=0,
            figures_dropped=0,
            captions_kept=0,
            cites=0,
            refs=0,
            unknown_macros=0,
            dropped_envs=0,
            unbalanced=0,
            too_deep=0,
        )
        self._dispatch = _DISPATCH  # handlers are plain functions there, called with self

    # ------------------------------------------------------------------ helpers

    def _close(self, j: int) -> int:
        """Index after the ``}`` matching the ``{`` at ``j``, or -1.

        Matched on demand (most groups are short): text, escapes and whole groups without
        nested braces are consumed by one regex match, so the loop runs once per nested
        group boundary; the nested groups met on the way are remembered, so rendering them
        later looks them up instead of scanning again. Once the work spent exceeds a budget
        proportional to the text (deeply nested or unbalanced input), one full pass builds
        a map, so total work stays linear.
        """
        m = self._close_map
        if m is not None:
            return m.get(j, -1)
        inner = self._inner_closes
        e = inner.get(j)
        if e is not None:
            return e
        s = self.s
        g = _FLAT_GROUP.match(s, j)  # most groups hold no nested or escaped braces
        if g is None:
            g = _NESTED_GROUP.match(s, j)  # most others nest a few levels at most
        if g is not None:
            return g.end()
        match = _NEXT_BRACE.match
        opens: list[int] = []  # nested "{" still open
        pos = j + 1
        steps = 0
        while True:
            t = match(s, pos)
            if t is None:
                break
            pos = t.end()
            steps += 1
            if t.group(1) == "{":
                opens.append(pos - 1)
            elif opens:
                inner[opens.pop()] = pos
            else:
                self._scan_budget -= steps
                if self._scan_budget < 0:
                    self._close_map = self._brace_map(s)
                return pos
        self._close_map = self._brace_map(s)  # unbalanced: never scan to the end twice
        return -1

    @staticmethod
    def _brace_map(s: str) -> dict[int, int]:
        close: dict[int, int] = {}
        stack: list[int] = []
        for m in _BRACE_OR_ESC.finditer(s):
            c = m.group()
            if c == "{":
                stack.append(m.start())
            elif c == "}":
                if stack:
                    close[stack.pop()] = m.end()
        return close

    def _group(self, i: int, end: int) -> tuple[int, int, int] | None:
        """Mandatory argument at i: (content start, content end, after) or None."""
        s = self.s
        j = i
        if j < end and s[j] in " \t\n":
            j = skip_ws(s, i)
        if j >= end:
            return None
        c = s[j]
        if c == "{":
            e = self._close(j)
            if e < 0 or e > end:
                return None
            return j + 1, e - 1, e
        if c == "}":
            return None
        if c == "\\":
            m = _CS.match(s, j)
            if m is None:  # a lone backslash at the very end
                return None
            return j, m.end(), m.end()
        return j, j + 1, j + 1

    def _optional(self, i: int, end: int) -> tuple[int, int, int] | None:
        s = self.s
        if i >= end:
            return None
        c = s[i]
        if c != "[":
            if c not in " \t\n":
                return None
            i = skip_ws(s, i)
            if i >= end or s[i] != "[":
                return None
        e = match_bracket(s[: min(end, i + 4096)], i)
        if e > 0:
            return i + 1, e - 1, e
        return None

    def _skip(self, i: int, end: int, spec: str) -> int:
        """Position after the arguments described by ``spec`` (their content is dropped)."""
        if not spec:
            return i
        _, pos = self._args(i, end, spec)
        return pos

    def _args(self, i: int, end: int, spec: str) -> tuple[list, int]:
        out: list = []
        s = self.s
        for c in spec:
            d = s[i] if i < end else ""
            if c == "*":
                if d == "*":
                    out.append(True)
                    i += 1
                else:
                    out.append(False)
            elif c == "[":
                o = self._optional(i, end) if d == "[" or (d and d in " \t\n") else None
                out.append(o)
                if o:
                    i = o[2]
            elif d == "{":  # a brace group right here: what _group does for it, inline
                g = _FLAT_GROUP.match(s, i)
                e = g.end() if g is not None else self._close(i)
                if e < 0 or e > end:
                    out.append(None)
                else:
                    out.append((i + 1, e - 1, e))
                    i = e
            else:
                a = self._group(i, end)
                out.append(a)
                if a:
                    i = a[2]
        return out, i

    def _placeholder(self, raw: str, block: bool) -> str:
        self.raw.append(raw)
        return RAW_OPEN + str(len(self.raw) - 1) + (BLOCK_CLOSE if block else RAW_CLOSE)

    def _math(self, raw: str, block: bool) -> str:
        if "\\label" in raw:
            raw = _LABEL.sub("", raw)
            raw = _BLANK_LINE.sub("", raw)  # a line that only held the label
        self.n["math_blocks"] += 1
        self.raw.append(raw)
        return RAW_OPEN + str(len(self.raw) - 1) + (BLOCK_CLOSE if block else RAW_CLOSE)

    # ------------------------------------------------------------------ main loop

    def run(self) -> str:
        return self.render(0, len(self.s), 0)

    def render(self, start: int, end: int, depth: int) -> str:
        if depth > MAX_DEPTH:
            self.n["too_deep"] += 1
            return self.s[start:end]
        s = self.s
        out: list[str] = []
        pos = start
        search = _TOKEN.search
        dispatch = self._dispatch
        raw = self.raw
        n = self.n
        while True:
            m = search(s, pos, end)
            if m is None:
                out.append(s[pos:end])
                break
            out.append(s[pos : m.start()])
            tok = m.group()
            i = m.end()
            c = tok[0]
            if c == "\\":
                name = tok[1:]
                kd = dispatch.get(name)
                if kd is None:
                    if _ICON.match(name):
                        pos = i
                    else:
                        pos = self._unknown(tok, i, end, out, depth)
                    continue
                kind, data = kd
                if kind == K_CITE:
                    a = _CITE_ARGS_AT.match(s, i, end)
                    pos = a.end() if a else self._skip(i, end, "*[[{")
                    out.append(CITE_MARK)
                    n["cites"] += 1
                elif kind == K_REF:
                    a = _ONE_ARG_AT.match(s, i, end)
                    pos = a.end() if a else self._skip(i, end, "*{")
                    out.append(REF_MARK)
                    n["refs"] += 1
                elif kind == K_HANDLER:
                    pos = data(self, i, end, out, depth)
                elif kind == K_UNWRAP:
                    spec, k = data
                    if spec == "{":  # \emph{plain words}: the text as it is
                        a = _TEXT_ARG_AT.match(s, i, end)
                        if a is not None:
                            out.append(a.group(1))
                            pos = a.end()
                            continue
                    args, pos = self._args(i, end, spec)
                    a = args[k]
                    if a:
                        if search(s, a[0], a[1]) is None:  # plain text: no need to recurse
                            out.append(s[a[0] : a[1]])
                        else:
                            out.append(self.render(a[0], a[1], depth + 1))
                elif kind == K_TEXT:
                    out.append(data)
                    pos = i
                elif kind == K_DROP:
                    if data == "{":
                        a = _ONE_ARG_AT.match(s, i, end)
                        pos = a.end() if a else self._skip(i, end, data)
                    elif data == "[{":  # most often no optional argument, a simple group
                        a = _PLAIN_ARG_AT.match(s, i, end)
                        pos = a.end() if a else self._skip(i, end, data)
                    else:
                        pos = self._skip(i, end, data)
                elif kind == K_SECTION:
                    pos = self._section(name, i, end, out, depth)
                elif kind == K_ACCENT:
                    if len(name) == 1 or self._accent_follows(i, end):
                        pos = self._accent(name, i, end, out)
                    elif name in SYMBOLS:
                        out.append(SYMBOLS[name])
                        pos = i
                    else:
                        pos = self._unknown(tok, i, end, out, depth)
                elif kind == K_LINEBREAK:
                    pos = self._skip(i, end, "*[")
                    out.append(" ")
                else:  # K_MATH: \( or \[
                    pos = self._delimited_math(m.start(), i, end, out, *data)
            elif c == "$":
                if len(tok) > 1:  # inline math, matched whole by the token pattern
                    if "\\label" in tok:
                        tok = _LABEL.sub("", tok)
                    raw.append(tok)
                    out.append(RAW_OPEN + str(len(raw) - 1) + RAW_CLOSE)
                    n["math_blocks"] += 1
                    pos = i
                else:
                    pos = self._dollar(m.start(), end, out)
            elif c == "{":
                if i < end and s[i] == "}":  # empty group, e.g. after "\\name{}"
                    pos = i + 1
                    continue
                e = self._close(m.start())
                if e < 0 or e > end:
                    self.n["unbalanced"] += 1
                    pos = i
                elif e - i == 1:  # empty group
                    pos = e
                else:
                    if depth < MAX_DEPTH and search(s, i, e - 1) is None:  # plain text
                        out.append(s[i : e - 1])
                    else:
                        out.append(self.render(i, e - 1, depth + 1))
                    pos = e
            else:  # stray '}'
                self.n["unbalanced"] += 1
                pos = i
        return "".join(out)

    # ------------------------------------------------------------------ math

    def _dollar(self, start: int, end: int, out: list[str]) -> int:
        s = self.s
        if s.startswith("$$", start):
            m = _DISPLAY_DOLLAR.match(s, start + 2, end)
            if m:
                out.append(self._math(s[start : m.end()], True))
                return m.end()
        else:
            m = _INLINE_DOLLAR.match(s, start + 1, end)
            if m:
                out.append(self._math(s[start : m.end()], False))
                return m.end()
        self.n["unbalanced"] += 1
        return start + (2 if s.startswith("$$", start) else 1)

    def _delimited_math(self, start, i, end, out, pattern, block) -> int:
        m = pattern.match(self.s, i, end)
        if not m:
            self.n["unbalanced"] += 1
            return i
        out.append(self._math(self.s[start : m.end()], block))
        return m.end()

    def _ensuremath(self, i, end, out, depth) -> int:
        g = self._group(i, end)
        if not g:
            return i
        out.append(self._math("$" + self.s[g[0] : g[1]] + "$", False))
        return g[2]

    # ------------------------------------------------------------------ structure

    def _section(self, name, i, end, out, depth) -> int:
        (star, short, title), pos = self._args(i, end, "*[{")
        text = self.render(title[0], title[1], depth + 1) if title else ""
        text = " ".join(text.replace(HEAD, " ").split())
        out.append(f"\n\n{HEAD}{SECTION_LEVELS[name]}{HEAD}{text}{HEAD}\n\n")
        return pos

    def _ack(self, i, end, out, depth) -> int:
        out.append(f"\n\n{HEAD}2{HEAD}Acknowledgments{HEAD}\n\n")
        return i

    def _appendix(self, i, end, out, depth) -> int:
        return i  # only reached when appendices are kept

    def _par(self, i, end, out, depth) -> int:
        out.append("\n\n")
        return i

    def _title(self, i, end, out, depth) -> int:
        (short, title), pos = self._args(i, end, "[{")
        if title and self.title is None:
            self.title = self.render(title[0], title[1], depth + 1)
        return pos

    def _abstract_macro(self, i, end, out, depth) -> int:
        j = skip_ws(self.s, i)
        if j < end and self.s[j] == "{":
            g = self._group(i, end)
            if g:
                self._set_abstract(self.render(g[0], g[1], depth + 1), out)
                return g[2]
        return i

    def _set_abstract(self, text: str, out: list[str]) -> None:
        if self.abstract is None:
            self.abstract = text
        else:
            out.append("\n\n" + text + "\n\n")

    def _item(self, i, end, out, depth) -> int:
        o = self._optional(i, end)
        if o:
            label = self.render(o[0], o[1], depth + 1).strip()
            out.append(f"{NEWLINE}- **{label}** " if label else f"{NEWLINE}- ")
            return o[2]
        out.append(f"{NEWLINE}- ")
        return i

    def _footnote(self, i, end, out, depth) -> int:
        (num, body), pos = self._args(i, end, "[{")
        if body:
            text = self.render(body[0], body[1], depth + 1).strip()
            if text:
                out.append(" (" + text + ")")
        return pos

    def _url(self, i, end, out, depth) -> int:
        g = self._group(i, end)
        if not g:
            return i
        url = (
            self.s[g[0] : g[1]].strip().replace("\\%", "%").replace("\\#", "#").replace("\\_", "_")
        )
        out.append(self._placeholder(url, False))
        return g[2]

    def _verb(self, i, end, out, depth) -> int:
        s = self.s
        if i < end and s[i] == "*":
            i += 1
        if i >= end:
            return i
        delim = s[i]
        j = s.find(delim, i + 1, end)
        if j < 0 or "\n" in s[i + 1 : j]:
            return i
        out.append(self._placeholder("`" + s[i + 1 : j] + "`", False))
        return j + 1

    def _caption_outside(self, i, end, out, depth) -> int:
        (short, body), pos = self._args(i, end, "[{")
        if body:
            text = self.render(body[0], body[1], depth + 1).strip()
            if text:
                out.append("\n\n" + text + "\n\n")
                self.n["captions_kept"] += 1
        return pos

    def _accent_follows(self, i: int, end: int) -> bool:
        """Letter-named accents (\\c, \\v, ...) only when used as accents: `\\c{c}` or `\\v s`."""
        s = self.s
        return i < end and (s[i] == "{" or (s[i] == " " and i + 1 < end and s[i + 1].isalpha()))

    def _accent(self, name, i, end, out) -> int:
        g = self._group(i, end)
        if not g:
            return i
        base = self.s[g[0] : g[1]].strip()
        base = _DOTLESS.get(base, base)
        if len(base) != 1:
            # \"{\i} -> ı, anything else: keep the base text without the accent
            out.append(base)
            return g[2]
        out.append(unicodedata.normalize("NFC", base + ACCENTS[name]))
        return g[2]

    def _unknown(self, tok, i, end, out, depth) -> int:
        """Keep an unknown macro verbatim, with the braces of arguments glued to it."""
        self.n["unknown_macros"] += 1
        out.append(tok)
        s = self.s
        pos = i
        for _ in range(9):
            if pos < end and s[pos] == "{":
                e = self._close(pos)
                if e < 0 or e > end:
                    break
                out.append("{" + self.render(pos + 1, e - 1, depth + 1) + "}")
                pos = e
            elif pos < end and s[pos] == "[":
                e = match_bracket(s[: min(end, pos + 4096)], pos)
                if e < 0:
                    break
                out.append(s[pos:e])
                pos = e
            else:
                break
        return pos

    # ------------------------------------------------------------------ environments

    def _begin(self, i, end, out, depth) -> int:
        m = _ENV_NAME.match(self.s, i, end)
        if not m:
            return i
        name = m.group(1).strip()
        after = m.end()
        s = self.s
        if name in MATH_ENVS:
            if name in ENV_ARGSPECS or name in self.defs.envs:  # arguments are left out
                a = self._skip_env_args(name, after, end)
            else:
                a = after
            e0, e1 = find_env_end(s, name, a)
            if e0 < 0 or e1 > end:
                self.n["unbalanced"] += 1
                return after
            raw = s[m.start() - 6 : e1] if a == after else s[m.start() - 6 : after] + s[a:e1]
            out.append(self._math(raw, True))
            return e1
        if name in FLOAT_ENVS:
            e0, e1 = find_env_end(s, name, after)
            if e0 < 0 or e1 > end:
                self.n["unbalanced"] += 1
                return after
            self._float(FLOAT_ENVS[name], after, e0, out, depth)
            return e1
        if name in VERBATIM_ENVS:
            a = self._skip_env_args(name, after, end)
            e0, e1 = find_env_end(s, name, a)
            if e0 < 0 or e1 > end:
                return after
            code = s[a:e0].strip("\n")
            out.append("\n\n" + self._placeholder("```\n" + code + "\n```", True) + "\n\n")
            return e1
        if name in DROP_ENVS:
            e0, e1 = find_env_end(s, name, after)
            self.n["dropped_envs"] += 1
            if e0 < 0 or e1 > end:
                return end if name == "thebibliography" else after
            return e1
        if name == "abstract":
            e0, e1 = find_env_end(s, name, after)
            if e0 < 0 or e1 > end:
                return after
            self._set_abstract(self.render(after, e0, depth + 1), out)
            return e1
        if name in ACK_ENVS:
            out.append(f"\n\n{HEAD}2{HEAD}Acknowledgments{HEAD}\n\n")
            return after
        if name in self.theorems or name == "proof":
            o = self._optional(after, end)
            note = self.render(o[0], o[1], depth + 1).strip() if o else ""
            if name == "proof":
                out.append(f"\n\n*{note or 'Proof'}.* ")
            else:
                head = self.theorems[name] + (f" ({note})" if note else "")
                out.append(f"\n\n**{head}.** ")
            return o[2] if o else after
        if name in ("appendix", "appendices"):
            return after
        a = self._skip_env_args(name, after, end)
        if name in LIST_ENVS or name in BLOCK_ENVS:
            out.append("\n\n")
        return a

    def _end(self, i, end, out, depth) -> int:
        m = _ENV_NAME.match(self.s, i, end)
        if not m:
            return i
        name = m.group(1).strip()
        if name in LIST_ENVS or name in BLOCK_ENVS or name in self.theorems or name == "proof":
            out.append("\n\n")
        return m.end()

    def _skip_env_args(self, name: str, i: int, end: int) -> int:
        user = self.defs.envs.get(name)
        if user is not None:
            spec = ("[" if user.has_optional else "") + "{" * (user.nargs - user.has_optional)
        else:
            spec = ENV_ARGSPECS.get(name, "")
        if not spec:
            return i
        _, pos = self._args(i, end, spec)
        return pos

    def _float(self, label: str, start: int, end: int, out: list[str], depth: int) -> None:
        s = self.s
        found = False
        pos = start
        for m in _CAPTION.finditer(s, start, end):
            if m.start() < pos:
                continue
            spec = "{[{" if m.group(1) == "captionof" else "[{"
            args, pos = self._args(m.end(), end, spec)
            body = args[-1]
            if not body:
                continue
            text = self.render(body[0], body[1], depth + 1).strip()
            if text:
                out.append(f"\n\n{label}: {text}\n\n")
                self.n["captions_kept"] += 1
                found = True
        if not found:
            self.n["figures_dropped"] += 1

    # ------------------------------------------------------------------ output

    def finish(self, rendered: str) -> tuple[str | None, str | None, list[Section]]:
        """Normalise whitespace and split the rendered body into sections."""
        sections: list[Section] = []
        current: Section | None = None
        buf: list[str] = []
        resolve = self._resolve

        def flush() -> None:
            text = resolve("\n\n".join(buf))
            if current is not None:
                current.text = text
                sections.append(current)
            elif text:
                sections.append(Section(level=0, title="", text=text))
            buf.clear()

        for para in _paragraphs(rendered):
            if HEAD in para:
                hm = _HEADING.search(para)
                if hm:
                    p = para[: hm.start()].strip()
                    if p:
                        buf.append(p)
                    flush()
                    heading = resolve(hm.group(2).strip()).replace("\n", " ")
                    current = Section(level=int(hm.group(1)), title=heading, text="")
                    p = para[hm.end() :].strip()
                    if p:
                        buf.append(p)
                    continue
                para = para.replace(HEAD, " ").strip()
                if not para:
                    continue
            buf.append(para)
        flush()
        title = None
        if self.title is not None:
            title = resolve(" ".join(_paragraphs(_flat(self.title)))).replace("\n", " ") or None
        abstract = None
        if self.abstract is not None:
            abstract = resolve("\n\n".join(_paragraphs(_flat(self.abstract)))) or None
        return title, abstract, sections

    def _resolve(self, text: str) -> str:
        """Put raw math/verbatim back in place of the placeholders.

        A block placeholder gets a line of its own: the single spaces left
        around it by whitespace normalisation become line breaks.
        """
        if RAW_OPEN not in text:
            return text.replace(PCT, "%") if PCT in text else text
        parts = text.split(RAW_OPEN)
        raw = self.raw
        out = [parts[0]]
        for part in parts[1:]:
            k, sep, rest = part.partition(RAW_CLOSE)
            if sep:
                out.append(raw[int(k)])
                out.append(rest)
                continue
            k, _, rest = part.partition(BLOCK_CLOSE)
            prev = out[-1]
            if prev and not prev.endswith("\n"):
                out[-1] = prev.rstrip(" ") + "\n"
            out.append(raw[int(k)])
            if rest and not rest.startswith("\n"):
                rest = "\n" + rest.lstrip(" ")
            out.append(rest)
        text = "".join(out)
        return text.replace(PCT, "%") if PCT in text else text


_HANDLERS = {
    "begin": Renderer._begin,
    "end": Renderer._end,
    "item": Renderer._item,
    "caption": Renderer._caption_outside,
    "footnote": Renderer._footnote,
    "footnotetext": Renderer._footnote,
    "url": Renderer._url,
    "verb": Renderer._verb,
    "ensuremath": Renderer._ensuremath,
    "title": Renderer._title,
    "abstract": Renderer._abstract_macro,
    "par": Renderer._par,
    "acknowledgments": Renderer._ack,
    "acknowledgements": Renderer._ack,
    "appendix": Renderer._appendix,
}
_DISPATCH = {**STATIC_DISPATCH, **{n: (K_HANDLER, h) for n, h in _HANDLERS.items()}}


def _flat(t: str) -> str:
    """Headings met inside a title or abstract become plain text."""
    if HEAD not in t:
        return t
    return _HEADING.sub(lambda m: " " + m.group(2) + " ", t).replace(HEAD, " ")


def _typography(t: str) -> str:
    """Text-mode ties, quotes and dashes (math and verbatim are placeholders here)."""
    if "~" in t:
        t = t.replace("~", " ")
    # quotes: their first character is rare in prose, so it is looked for (a byte search)
    # before the pair; dashes: a regex search, as `in` and str.replace are slower for
    # two-character needles and hyphens are common
    t = _replace_pair(t, "``", '"', _OPEN_QUOTES)
    t = _replace_pair(t, "''", '"', _CLOSE_QUOTES)
    if _DASHES.search(t):
        t = _DASHES.sub("\u2013", _EM_DASHES.sub("\u2014", t))
    return t


_OPEN_QUOTES, _CLOSE_QUOTES, _DASHES = re.compile("``"), re.compile("''"), re.compile("--")
_EM_DASHES = re.compile("---")
_PAIR_MISSES = 32  # lone first characters looked at before the regex takes over


def _replace_pair(t: str, pair: str, repl: str, pattern: re.Pattern) -> str:
    """``pattern.sub(repl, t)`` for the two-character literal ``pair`` (``pattern``).

    Occurrences of its first character are found with str.find while few of them are not
    the pair (apostrophes, for "''"); past that many, the regex replaces in the rest.
    """
    c = pair[0]
    i = t.find(c)
    if i < 0:
        return t
    parts: list[str] = []
    pos = 0
    misses = 0
    while i >= 0:
        if t.startswith(pair, i):
            parts.append(t[pos:i])
            parts.append(repl)
            pos = i + 2
            i = t.find(c, pos)
            continue
        misses += 1
        if misses > _PAIR_MISSES:
            parts.append(pattern.sub(repl, t[pos:]))
            return "".join(parts)
        i = t.find(c, i + 1)
    if not parts:
        return t
    parts.append(t[pos:])
    return "".join(parts)


PARA = "\x07"  # paragraph break while whitespace is being normalised


def _paragraphs(t: str) -> list[str]:
    """Typography, whitespace normalisation and paragraph split of rendered text.

    Done on the whole text in a few C-level passes (mark paragraph breaks,
    collapse whitespace runs, split), which is several times faster than
    normalising paragraph by paragraph. Raw material is still a placeholder.
    """
    t = _PARA_SPLIT.sub(PARA, _typography(t))
    if "\t" in t:
        t = t.replace("\t", " ")
    if "\xa0" in t:
        t = t.replace("\xa0", " ")
    t = t.replace("\n", " ")
    t = _collapse_spaces(t)
    if NEWLINE in t:
        # a forced line break takes the (single) spaces on both sides; runs of them become
        # one "\n" (the text holds no other newline at this point)
        segs = t.split(NEWLINE)
        last = len(segs) - 1
        for k, seg in enumerate(segs):
            if k and seg[:1] == " ":
                seg = seg[1:]
            if k < last and seg[-1:] == " ":
                seg = seg[:-1]
            segs[k] = seg
        t = "\n".join(segs)
        if not all(segs[1:last]):
            t = _MULTI_NL.sub("\n", t)
        return [p for p in (q.strip() for q in t.split(PARA)) if p]
    return [p for p in (q.strip(" ") for q in t.split(PARA)) if p]


_PARA_SPLIT = re.compile(r"\n[ \t]*\n\s*")
_HEADING = re.compile(HEAD + r"(\d)" + HEAD + "(.*?)" + HEAD, re.S)
_MULTI_NL = re.compile(r"\n{2,}")
_SPACE_RUN = re.compile("  +")
_SPACES = re.compile(" *")
_SPACE_RUNS_FOUND = 64  # runs replaced one by one before the regex takes over


def _collapse_spaces(t: str) -> str:
    """``_SPACE_RUN.sub(" ", t)``: a run of spaces becomes one.

    Rendered text holds few such runs: each is found with str.find, which beats the regex
    engine stopping at every single space; past many runs the regex does the rest.
    split()/join() would build an object per word.
    """
    i = t.find("  ")
    if i < 0:
        return t
    parts: list[str] = []
    pos = 0
    runs = 0
    spaces = _SPACES.match
    while i >= 0:
        parts.append(t[pos : i + 1])
        r = spaces(t, i + 2)
        assert r is not None  # " *" matches anywhere
        pos = r.end()
        runs += 1
        if runs > _SPACE_RUNS_FOUND:
            parts.append(_SPACE_RUN.sub(" ", t[pos:]))
            return "".join(parts)
        i = t.find("  ", pos)
    parts.append(t[pos:])
    return "".join(parts)
