"""User macro definitions: harvesting and bounded expansion.

Definitions are parsed by hand (brace/bracket matching from ``tex``): the
syntax of ``\\newcommand``/``\\def`` is small and fixed, and this code runs for
every definition of every paper, where a pylatexenc walker costs ~0.5 ms each.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from .model import LatexError, Limits
from .tex import _CS, match_brace, odd_backslashes, read_group, read_optional, skip_ws

# Commands whose meaning the cleaner relies on; user redefinitions of them are
# recorded but never expanded (a redefined \section is still a section).
PROTECTED = frozenset(
    "begin end section subsection subsubsection paragraph subparagraph chapter part "
    "item caption label ref eqref cite citep citet title author maketitle appendix "
    "bibliography input include footnote url href includegraphics "
    "newcommand renewcommand providecommand def gdef edef xdef let".split()
)


@dataclass
class Macro:
    nargs: int
    default: str | None  # default of the optional first argument, None if it has none
    body: str


@dataclass
class EnvDef:
    nargs: int
    has_optional: bool


class Definitions:
    """Everything harvested from ``\\newcommand`` & co."""

    def __init__(self) -> None:
        self.macros: dict[str, Macro] = {}
        self.envs: dict[str, EnvDef] = {}
        self.theorems: dict[str, str] = {}  # environment name -> printed title
        self.unsupported = 0
        self.protected_skipped = 0

    def define(self, name: str, macro: Macro, *, provide: bool = False) -> None:
        if provide and name in self.macros:
            return
        if name in PROTECTED:
            self.protected_skipped += 1
            return
        self.macros[name] = macro


_DEF_CMD = re.compile(
    r"\\(newcommand|renewcommand|providecommand|DeclareRobustCommand|def|gdef|edef|xdef|let|"
    r"DeclareMathOperator|newenvironment|renewenvironment|newtheorem)(?![A-Za-z@])(\*?)"
)
_NAME_IN_BRACES = re.compile(r"\{\s*(\\(?:[A-Za-z@]+|.))\s*\}", re.S)
_LET_TAIL = re.compile(r"\s*(\\(?:[A-Za-z@]+|.))\s*=?\s*(\\(?:[A-Za-z@]+|.))", re.S)
_INT = re.compile(r"\s*(\d)\s*$")
_MEMO_ENTRIES = 4096  # distinct macro calls remembered per paper
_MEMO_CHARS = 512  # longest arguments / expansion remembered
_SIMPLE_GROUP = re.compile(r"\{((?:[^{}\\]++|\\[^{}])*+)\}")  # a group without nested braces


def harvest(text: str, defs: Definitions, *, keep_text: bool = True) -> str:
    """Record every definition in ``text``; return the text with definitions removed."""
    if "\\" not in text:
        return text
    out: list[str] = []
    pos = 0
    for m in _DEF_CMD.finditer(text):
        if m.start() < pos:
            continue
        cmd, star = m.group(1), m.group(2)
        end = _parse_definition(text, m.end(), cmd, star, defs)
        if end < 0:  # malformed: leave it in place
            defs.unsupported += 1
            continue
        if keep_text:
            out.append(text[pos : m.start()])
        pos = end
    if not keep_text:
        return ""
    out.append(text[pos:])
    return "".join(out)


def _read_arg_spec(s: str, i: int) -> tuple[int, str | None, int] | None:
    """``[n][default]`` after a definition's name: (n, default or None, end); None if malformed."""
    nargs, default = 0, None
    opt, j = read_optional(s, i)
    if opt is not None:
        n = _INT.match(opt)
        if not n:
            return None
        nargs, i = int(n.group(1)), j
        opt, j = read_optional(s, i)
        if opt is not None:
            default, i = opt, j
    return nargs, default, i


def _parse_definition(s: str, i: int, cmd: str, star: str, defs: Definitions) -> int:
    """Parse one definition whose command ends at ``i``; return its end or -1."""
    if cmd in ("newcommand", "renewcommand", "providecommand", "DeclareRobustCommand"):
        name, i = _read_name(s, i)
        if name is None:
            return -1
        spec = _read_arg_spec(s, i)
        if spec is None:
            return -1
        nargs, default, i = spec
        g = read_group(s, i)
        if g is None:
            return -1
        if nargs == 0 and default is not None:
            return -1
        defs.define(name[1:], Macro(nargs, default, g[0]), provide=cmd == "providecommand")
        return g[1]
    if cmd in ("def", "gdef", "edef", "xdef"):
        j = skip_ws(s, i)
        n = _CS.match(s, j)
        if not n:
            return -1
        brace = s.find("{", n.end())
        if brace < 0:
            return -1
        params = s[n.end() : brace].strip()
        end = match_brace(s, brace)
        if end < 0:
            return -1
        params = params.replace(" ", "").replace("\n", "")
        nargs = len(params) // 2
        if params != "".join(f"#{k}" for k in range(1, nargs + 1)):
            defs.unsupported += 1  # delimited parameters (\def\a#1.{...}) are not supported
            return end
        defs.define(n.group()[1:], Macro(nargs, None, s[brace + 1 : end - 1]))
        return end
    if cmd == "let":
        t = _LET_TAIL.match(s, i)
        if not t:
            return -1
        new, old = t.group(1)[1:], t.group(2)[1:]
        if old in defs.macros:
            defs.define(new, defs.macros[old])
        return t.end()
    if cmd == "DeclareMathOperator":
        name, i = _read_name(s, i)
        if name is None:
            return -1
        g = read_group(s, i)
        if g is None:
            return -1
        op = "\\operatorname*" if star else "\\operatorname"
        defs.define(name[1:], Macro(0, None, op + "{" + g[0] + "}"))
        return g[1]
    if cmd in ("newenvironment", "renewenvironment"):
        g = read_group(s, i)
        if g is None:
            return -1
        env = g[0].strip()
        i = g[1]
        spec = _read_arg_spec(s, i)
        if spec is None:
            return -1
        nargs, default, i = spec
        has_opt = default is not None
        for _ in range(2):  # begin code, end code
            g = read_group(s, i)
            if g is None:
                return -1
            i = g[1]
        defs.envs[env] = EnvDef(nargs, has_opt)
        return i
    if cmd == "newtheorem":
        g = read_group(s, i)
        if g is None:
            return -1
        env, i = g[0].strip(), g[1]
        _, i = read_optional(s, i)  # shared counter
        g = read_group(s, i)
        if g is None:
            return -1
        title, i = g[0].strip(), g[1]
        _, i = read_optional(s, i)  # numbered within
        defs.theorems[env] = title
        return i
    return -1


def _read_name(s: str, i: int) -> tuple[str | None, int]:
    j = skip_ws(s, i)
    if j < len(s) and s[j] == "{":
        m = _NAME_IN_BRACES.match(s, j)
        if not m:
            return None, i
        return m.group(1), m.end()
    m = _CS.match(s, j)
    if not m:
        return None, i
    return m.group(), m.end()


# --------------------------------------------------------------------------- expansion

_PARAM = re.compile(r"#(#|[1-9])")
_ENDS_WITH_CW = re.compile(r"(?<!\\)(?:\\\\)*\\[A-Za-z@]+$")
_LETTER = re.compile(r"[A-Za-z@]")


_CSEQ = re.compile(r"\\([A-Za-z@]+|[^A-Za-z@])")  # every control sequence, escapes included


@functools.lru_cache(maxsize=512)
def _scan_pattern(prefixes: frozenset, other_names: bool) -> re.Pattern:
    """Control sequences that may be user macros: group 1 is the full name."""
    alts = []
    if prefixes:
        alts.append("(?:" + "|".join(map(re.escape, sorted(prefixes))) + ")[A-Za-z@]*")
    if other_names:
        alts.append("[^A-Za-z@]")
    return re.compile(r"\\(" + "|".join(alts) + ")") if alts else re.compile(r"(?!x)x")


class _Template:
    """A macro body split at its parameters, ready to be filled."""

    __slots__ = ("nargs", "default", "parts", "rescan", "literal")

    def __init__(self, macro: Macro, names) -> None:
        self.nargs = macro.nargs
        self.default = macro.default
        body = macro.body
        if "\\@if" in body:
            body = _no_branch(body)
        parts: list = []  # literal strings and (arg index, glue) tuples
        pos = 0
        for m in _PARAM.finditer(body):
            lit = body[pos : m.start()]
            if m.group(1) == "#":
                parts.append(lit + "#")
            else:
                # "\hat#1" with #1 = "a" must not become the control word \hata
                glue = _ends_with_cw(lit) or (
                    not lit and parts and isinstance(parts[-1], str) and _ends_with_cw(parts[-1])
                )
                parts.append(lit)
                parts.append((int(m.group(1)) - 1, glue))
            pos = m.end()
        parts.append(body[pos:])
        self.parts = parts
        # the filled body needs another pass only if the body itself calls user macros
        self.rescan = any(
            isinstance(p, str) and "\\" in p and any(n in names for n in _CSEQ.findall(p))
            for p in parts
        )
        # a body without parameters that calls no user macro: the call is replaced by it
        plain = len(parts) == 1 and not self.nargs and self.default is None and not self.rescan
        self.literal = parts[0] if plain else None

    def fill(self, args: list[str]) -> str:
        out = []
        for p in self.parts:
            if p.__class__ is str:
                out.append(p)
            else:
                k, glue = p
                a = args[k] if k < len(args) else ""
                if glue and a and _LETTER.match(a):
                    out.append(" ")
                out.append(a)
        return "".join(out)


class Expander:
    """Expands user macros with a total budget and a nesting limit.

    Arguments are expanded first, then placed in the body; the result is
    scanned again only when the body itself calls user macros. Runaway
    definitions (``\\def\\a{\\a\\a}``, or chains where each macro calls the next
    twice) exhaust the nesting limit or the total budget and raise
    ``LatexError("macro_recursion")``: the paper is dropped with a counted reason
    after a bounded amount of work. ``\\@ifnextchar c{yes}{no}`` and
    ``\\@ifstar{yes}{no}`` inside bodies take their "no" branch (the usual call
    has no optional form), which also ends the common self-calling
    ``\\@ifnextchar`` loops that TeX terminates by peeking at the input.

    Scanning uses a small regex on the first two letters of the macro names
    (cached across papers) plus a dict lookup: a regex of the full names costs
    ~1 ms to compile per paper, and visiting every control sequence is slower.
    """

    def __init__(self, macros: dict[str, Macro], limits: Limits):
        self.templates = {name: _Template(m, macros) for name, m in macros.items()}
        self.pattern = _scan_pattern(
            frozenset(n[:2] for n in macros if _LETTER.match(n)),
            any(not _LETTER.match(n) for n in macros),
        )
        self.budget = limits.expansion_budget
        self.max_depth = limits.expansion_depth
        self.max_chars = limits.max_text_chars
        self.expanded = 0
        self.produced = 0
        # (template, *arguments) -> (result, nested expansions, characters produced), for
        # top-level calls: counting the nested work again keeps the budgets exact
        self.memo: dict[tuple, tuple[str, int, int]] = {}

    def expand(self, s: str, depth: int = 0) -> str:
        templates = self.templates
        if not templates or "\\" not in s:
            return s
        out: list[str] = []
        pos = 0
        n = len(s)
        for m in self.pattern.finditer(s):
            t = templates.get(m.group(1))
            if t is None:
                continue
            start = m.start()
            if start < pos:
                continue
            if start and s[start - 1] == "\\" and odd_backslashes(s, start):
                continue  # "\\name" is a line break followed by text
            i = m.end()
            literal = t.literal
            if literal is not None:  # no arguments, no nested calls: nothing to read or memoise
                self.expanded += 1
                if self.expanded > self.budget:
                    raise LatexError(
                        "macro_recursion", f"expansion budget of {self.budget} exhausted"
                    )
                if depth >= self.max_depth:
                    raise LatexError(
                        "macro_recursion", f"expansion nested deeper than {self.max_depth}"
                    )
                result = literal
                self.produced += len(result)
            else:
                result, i = self._call(t, s, i, n, depth)
            if self.produced > self.max_chars:
                raise LatexError("macro_recursion", "expansion output too large")
            if start > pos:
                out.append(s[pos:start])
            if result:
                c = result[0]
                if c.isascii() and c.isalpha() and out and _ends_with_cw(out[-1]):
                    out.append(" ")
                out.append(result)
                if i < n and s[i].isascii() and s[i].isalpha() and _ends_with_cw(result):
                    out.append(" ")
            pos = i
        if not out and pos == 0:
            return s
        out.append(s[pos:])
        return "".join(out)

    def _call(self, t: _Template, s: str, i: int, n: int, depth: int) -> tuple[str, int]:
        """Read the arguments of a call of ``t`` ending at ``i``; (expansion, end of the call)."""
        memo = self.memo
        args: list[str] = []
        if t.default is not None:
            opt, i = read_optional(s, i)
            args.append(t.default if opt is None else opt)
        need = t.nargs
        while len(args) < need:
            if i < n and s[i] == "{":  # fast path: the argument follows directly
                g = _SIMPLE_GROUP.match(s, i)  # no nested or escaped braces: one C call
                if g is not None:
                    args.append(g.group(1))
                    i = g.end()
                    continue
                e = match_brace(s, i)
                if e < 0:
                    break
                args.append(s[i + 1 : e - 1])
                i = e
                continue
            group = read_group(s, i)
            if group is None:
                break
            args.append(group[0])
            i = group[1]
        self.expanded += 1
        if self.expanded > self.budget:
            raise LatexError("macro_recursion", f"expansion budget of {self.budget} exhausted")
        if depth >= self.max_depth:
            raise LatexError(
                "macro_recursion", f"expansion nested deeper than {self.max_depth}"
            )
        hit = key = None
        if args and depth == 0 and sum(map(len, args)) <= _MEMO_CHARS:
            key = (t, *args)  # a call repeated in the text (same arguments) is reused
            hit = memo.get(key)
        if hit is not None:
            result, nested, produced = hit
            self.expanded += nested
            if self.expanded > self.budget:
                raise LatexError(
                    "macro_recursion", f"expansion budget of {self.budget} exhausted"
                )
            self.produced += produced
        else:
            e0, p0 = self.expanded, self.produced
            if args:
                for k, a in enumerate(args):
                    if "\\" in a:
                        args[k] = self.expand(a, depth + 1)
                result = t.fill(args)
            else:
                result = t.fill(args) if len(t.parts) > 1 else t.parts[0]
            if t.rescan:
                result = self.expand(result, depth + 1)
            self.produced += len(result)
            if key is not None and len(memo) < _MEMO_ENTRIES and len(result) <= _MEMO_CHARS:
                memo[key] = (result, self.expanded - e0, self.produced - p0)
        return result, i


_IF_NEXT = re.compile(r"\\@if(nextchar|star)(?![A-Za-z@])")


def _no_branch(body: str) -> str:
    """Replace ``\\@ifnextchar c{yes}{no}`` / ``\\@ifstar{yes}{no}`` by ``no``."""
    out: list[str] = []
    pos = 0
    for m in _IF_NEXT.finditer(body):
        if m.start() < pos:
            continue
        i = m.end()
        if m.group(1) == "nextchar":
            g = read_group(body, i)  # the character (or \bgroup) to test
            if g is None:
                continue
            i = g[1]
        yes = read_group(body, i)
        if yes is None:
            continue
        no = read_group(body, yes[1])
        if no is None:
            continue
        out.append(body[pos : m.start()])
        out.append(no[0])
        pos = no[1]
    out.append(body[pos:])
    return "".join(out)


def _ends_with_cw(seg: str) -> bool:
    """True when ``seg`` ends with a control word (so a following letter would join it)."""
    if not seg or not (seg[-1].isascii() and (seg[-1].isalpha() or seg[-1] == "@")):
        return False
    return _ENDS_WITH_CW.search(seg[-64:]) is not None
