"""Low-level LaTeX scanning: comments, conditionals, braces and arguments.

Hand-written with compiled regular expressions because these helpers run over
every byte of every paper; a full pylatexenc parse is far too slow for that
(see the package docstring for measurements).
"""

from __future__ import annotations

import re

# Private characters used inside the pipeline. Decoding drops all C0 controls
# except tab/newline (project.decode), so these cannot collide with input.
PCT = (
    "\x06"  # a '%' that is literal (inside \url, \verb, verbatim) and must survive comment removal
)

# --------------------------------------------------------------------------- comments

_VERB_LIKE = re.compile(
    r"\\(?:url|path|href)\s*\{[^{}\n]*%[^{}\n]*\}"  # % inside a URL is a literal
    r"|\\verb\*?([^A-Za-z\s*]).*?\1"  # \verb|...|
    r"|\\begin\{(verbatim\*?|lstlisting|minted|Verbatim)\}.*?\\end\{\2\}",
    re.S,
)
_COMMENT_ENV = re.compile(
    r"^[ \t]*\\begin\{comment\}.*?^[ \t]*\\end\{comment\}[^\n]*\n?", re.S | re.M
)


def _protect_pct(m: re.Match) -> str:
    return m.group(0).replace("%", PCT)


_ESCAPED_PCT = "\x0f"  # the '%' of an escaped percent (\%), while comments are being removed
# A line holding only a comment goes with its line break (the one before it, so that a
# comment on the last line keeps the previous line's break) ...
_LINE_COMMENT = re.compile(r"\n[ \t]*%[^\n]*(?=\n)")
# ... an inline one also takes the line end and the next line's indentation (TeX
# semantics), except before a blank line or the end, so paragraph breaks survive.
_INLINE_COMMENT = re.compile(r"%[^\n]*(?:\n[ \t]*+(?=[^\n]))?")
_FIRST_LINE_COMMENT = re.compile(r"[ \t]*%")
# a '%' right after a backslash; it is escaped when the run of backslashes is odd. The
# pattern starts with '%' (rare) rather than the backslash (frequent in LaTeX), so the scan
# skips ahead quickly.
_PCT_AFTER_BS = re.compile(r"%(?<=\\%)")
# Comment passes find each '%' with str.find (a byte search; the regex engine tests every
# character on the way) while there are few; past this many, the regex does the rest.
_PCT_FOUND_ONE_BY_ONE = 64


def _drop_line_comments(text: str) -> tuple[str, int]:
    """``_LINE_COMMENT.subn("", text)``: lines holding only a comment, found from their '%'."""
    parts: list[str] = []
    pos = 0
    n = 0
    seen = 0
    k = text.find("%")
    while k >= 0:
        seen += 1
        if seen > _PCT_FOUND_ONE_BY_ONE:
            rest, more = _LINE_COMMENT.subn("", text[pos:])
            parts.append(rest)
            return "".join(parts), n + more
        j = k
        while j > pos and text[j - 1] in " \t":
            j -= 1
        if j > pos and text[j - 1] == "\n":  # the first thing on its line
            e = text.find("\n", k)
            if e < 0:  # the last line: the pattern needs a line break after the comment
                break
            parts.append(text[pos : j - 1])
            pos = e
            n += 1
            k = text.find("%", e)
            continue
        k = text.find("%", k + 1)
    if not n:
        return text, 0
    parts.append(text[pos:])
    return "".join(parts), n


def _drop_inline_comments(text: str) -> tuple[str, int]:
    """``_INLINE_COMMENT.subn("", text)``: every '%' left starts a comment."""
    parts: list[str] = []
    pos = 0
    n = 0
    k = text.find("%")
    while k >= 0:
        if n >= _PCT_FOUND_ONE_BY_ONE:
            rest, more = _INLINE_COMMENT.subn("", text[k:])
            parts.append(text[pos:k])
            parts.append(rest)
            return "".join(parts), n + more
        m = _INLINE_COMMENT.match(text, k)
        assert m is not None  # it matches at any '%'
        parts.append(text[pos:k])
        pos = m.end()
        n += 1
        k = text.find("%", pos)
    if not n:
        return text, 0
    parts.append(text[pos:])
    return "".join(parts), n


def _set_aside_escaped_pct(text: str) -> tuple[str, bool]:
    """Replace the ``%`` of every ``\\%`` (odd run of backslashes) by a private character."""
    cuts = []
    k = text.find("%")
    seen = 0
    while k >= 0:  # '%' is rare: a byte search per occurrence beats a regex scan of the text
        seen += 1
        if seen > _PCT_FOUND_ONE_BY_ONE:  # many: the regex looks at the rest
            cuts += [m.start() for m in _PCT_AFTER_BS.finditer(text, k) if odd_backslashes(text, m.start())]
            break
        if k and text[k - 1] == "\\" and odd_backslashes(text, k):
            cuts.append(k)
        k = text.find("%", k + 1)
    if not cuts:
        return text, False
    parts = []
    pos = 0
    for i in cuts:
        parts.append(text[pos:i])
        pos = i + 1
    parts.append(text[pos:])
    return _ESCAPED_PCT.join(parts), True


def odd_backslashes(s: str, i: int) -> bool:
    """True when the run of backslashes ending just before ``i`` has odd length."""
    j = i - 1
    while j >= 0 and s[j] == "\\":
        j -= 1
    return (i - 1 - j) % 2 == 1


def strip_comments(text: str) -> tuple[str, int]:
    """Remove ``%`` comments (``\\%`` is kept). Returns (text, comments removed).

    A line that is only a comment disappears with its newline; an inline
    comment also takes the line end and the next line's indentation (TeX
    semantics), except before a blank line, so paragraph breaks survive (also when
    whole-line comments sit between the two). Escaped percents are set aside first (a
    ``%`` after an odd run of backslashes; ``\\\\%`` is a line break, then a comment), so
    two C-level substitutions do the work; a Python loop over every ``%`` is ~3x slower.
    """
    if "%" not in text:
        return text, 0
    # Always one regex pass: it is cheaper than testing for its five triggers with `in`,
    # and regex searches beat str.replace/`in` on text full of backslashes.
    text = _VERB_LIKE.sub(_protect_pct, text)
    text, escaped = _set_aside_escaped_pct(text)
    first = _FIRST_LINE_COMMENT.match(text) is not None  # give it a line break to go with
    if first:
        text = "\n" + text
    text, n_lines = _drop_line_comments(text)
    if first:
        text = text[1:]
    text, n_inline = _drop_inline_comments(text)
    if escaped:
        text = text.replace(_ESCAPED_PCT, "%")
    return text, n_lines + n_inline


def strip_comment_envs(text: str) -> tuple[str, int]:
    """Remove ``comment`` environments; run before :func:`strip_comments`."""
    if "\\begin{comment}" not in text:  # a long needle: str search beats the regex engine
        return text, 0
    return _COMMENT_ENV.subn("", text)


# --------------------------------------------------------------------------- conditionals

# TeX primitives (and common package switches) that need a matching \fi.
_PRIMITIVE_IFS = frozenset(
    "if ifcat ifnum ifdim ifodd ifvmode ifhmode ifmmode ifinner ifvoid ifhbox ifvbox ifx "
    "ifeof ifcase ifdefined ifcsname iffontchar ifincsname ifpdf ifxetex ifluatex "
    "ifpdftex ifLuaTeX ifXeTeX ifPDFTeX ifpdfprimitive".split()
)
# `\NAMEtrue`/`\NAMEfalse`: the whole word, then a look back at its ending (a lazy
# `[A-Za-z@]+?(?:true|false)` retries at every letter of every control word).
_COND_TOKEN = re.compile(
    r"\\(newif|let|if[A-Za-z@]*|else|fi|[A-Za-z@]++(?:(?<=[A-Za-z@]true)|(?<=[A-Za-z@]false)))"
    r"(?![A-Za-z@])"
)
_COND_TOKEN_NO_SWITCH = re.compile(r"\\(newif|let|if[A-Za-z@]*|else|fi)(?![A-Za-z@])")
_IF_HINT = re.compile(r"\\if")
_NEWIF_TAIL = re.compile(r"\s*\\if([A-Za-z@]+)")
_LET_IF_TAIL = re.compile(r"\s*\\if([A-Za-z@]+)\s*=?\s*\\if(true|false)(?![A-Za-z@])")
_LET_ANY_TAIL = re.compile(r"\s*\\if[A-Za-z@]+")


def resolve_conditionals(text: str, stats: dict, _rounds: int = 0) -> str:
    """Evaluate ``\\iffalse``/``\\iftrue`` and ``\\newif`` switches with known state.

    ``\\iffalse A \\else B \\fi`` keeps B; ``\\iftrue A \\else B \\fi`` keeps A;
    ``\\newif\\ifdraft ... \\drafttrue ... \\ifdraft A \\fi`` follows the switch
    (also ``\\let\\ifdraft\\iftrue``). Other conditionals (``\\ifx``, ``\\ifmmode``...)
    stay in the text but are counted for nesting, so the right ``\\fi`` closes a
    dropped block. An unterminated evaluated block loses only its opening token.
    """
    if _IF_HINT.search(text) is None:
        return text
    switches: dict[str, bool] = {}
    out: list[str] = []
    pos = 0  # start of text not yet emitted
    consumed = 0  # tokens before this index were already handled
    stack: list[list] = []  # [evaluated, branch_kept, token_start, token_end]
    skip = 0  # evaluated entries whose current branch is dropped
    removed = 0
    # \NAMEtrue / \NAMEfalse only matter once a switch exists: until then a cheaper
    # pattern without that branch scans the text.
    tokens = _COND_TOKEN_NO_SWITCH.finditer(text)
    while True:
        m = next(tokens, None)
        if m is None:
            break
        if m.start() < consumed:
            continue
        name = m.group(1)
        if name == "newif":
            t = _NEWIF_TAIL.match(text, m.end())
            if t:
                if not skip:
                    if not switches:
                        tokens = _COND_TOKEN.finditer(text, t.end())
                    switches.setdefault(t.group(1), False)
                consumed = t.end()
            continue
        if name == "let":
            t = _LET_IF_TAIL.match(text, m.end())
            if t:
                if not skip:
                    if not switches:
                        tokens = _COND_TOKEN.finditer(text, t.end())
                    switches[t.group(1)] = t.group(2) == "true"
                    out.append(text[pos : m.start()])
                pos = consumed = t.end()
                continue
            t = _LET_ANY_TAIL.match(text, m.end())
            if t:  # \let\iffoo<something else>: a definition, not an opener
                consumed = t.end()
            continue
        if name.startswith("if"):
            if name == "iftrue" or name == "iffalse" or name[2:] in switches:
                value = name == "iftrue" if name in ("iftrue", "iffalse") else switches[name[2:]]
                if not skip:
                    out.append(text[pos : m.start()])
                pos = m.end()
                stack.append([True, value, m.start(), m.end()])
                if not value:
                    skip += 1
            elif name in _PRIMITIVE_IFS:
                stack.append([False, True, m.start(), m.end()])
            continue
        if name == "else":
            if stack and stack[-1][0]:
                entry = stack[-1]
                if not skip:
                    out.append(text[pos : m.start()])
                pos = m.end()
                skip += 1 if entry[1] else -1
                entry[1] = not entry[1]
            continue
        if name == "fi":
            if stack:
                entry = stack.pop()
                if entry[0]:
                    if not skip:
                        out.append(text[pos : m.start()])
                    pos = m.end()
                    if not entry[1]:
                        skip -= 1
                    removed += 1
            continue
        # \NAMEtrue / \NAMEfalse for a declared switch
        key, value = (name[:-4], True) if name.endswith("true") else (name[:-5], False)
        if key in switches:
            if not skip:
                switches[key] = value
                out.append(text[pos : m.start()])
            pos = m.end()

    unterminated = [e for e in stack if e[0]]
    if unterminated:
        stats["conditionals_unterminated"] = stats.get("conditionals_unterminated", 0) + len(
            unterminated
        )
        if _rounds >= 2:
            return text
        pieces, last = [], 0
        for e in unterminated:
            pieces.append(text[last : e[2]])
            last = e[3]
        pieces.append(text[last:])
        return resolve_conditionals("".join(pieces), stats, _rounds + 1)
    if not skip:
        out.append(text[pos:])
    stats["conditionals_removed"] = stats.get("conditionals_removed", 0) + removed
    return "".join(out)


# --------------------------------------------------------------------------- braces & arguments

# Branches start with literals so that searching skips ahead fast (see render._TOKEN).
_BRACKET_TOKEN = re.compile(r"\\.|\{|\}|\]", re.S)
_WS = re.compile(
    r"[ \t]*\n?[ \t]*"
)  # spaces and at most one newline (a blank line ends the search)
_CS = re.compile(r"\\(?:[A-Za-z@]+|.)", re.S)


# Up to the next brace that matters for nesting: text, escapes (``\\.``) and whole groups
# without nested braces are consumed in C, so the Python loop runs once per nested group
# boundary instead of once per brace or control sequence.
_NEXT_BRACE = re.compile(r"(?:[^{}\\]++|\\.|\{(?:[^{}\\]++|\\.)*+\})*+([{}])", re.S)


def _nested_group(levels: int) -> str:
    """A group holding groups nested up to ``levels`` deep (escapes: ``\\`` + any character)."""
    inner = ""
    for _ in range(levels + 1):
        inner = r"\{(?:[^{}\\]++|\\." + ("|" + inner if inner else "") + r")*+\}"
    return inner


# A whole group in one C-level match when it nests at most four levels deep (most do).
_NESTED_GROUP = re.compile(_nested_group(4), re.S)


def match_brace(s: str, i: int) -> int:
    """``s[i] == '{'``; index just after the matching ``}``, or -1."""
    g = _NESTED_GROUP.match(s, i)
    if g is not None:
        return g.end()
    depth = 1
    pos = i + 1
    while True:
        m = _NEXT_BRACE.match(s, pos)
        if m is None:
            return -1
        pos = m.end()
        if m.group(1) == "{":
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return pos


def match_bracket(s: str, i: int) -> int:
    """``s[i] == '['``; index just after the matching ``]`` (braces nest), or -1."""
    depth = 0
    for m in _BRACKET_TOKEN.finditer(s, i + 1):
        c = m.group()
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth < 0:
                return -1
        elif c == "]" and depth == 0:
            return m.end()
    return -1


def skip_ws(s: str, i: int) -> int:
    m = _WS.match(s, i)
    assert m is not None  # every part of _WS is optional: it matches anywhere
    return m.end()


def read_group(s: str, i: int) -> tuple[str, int] | None:
    """Mandatory argument at ``i`` (after optional spaces): brace group or one token."""
    j = skip_ws(s, i)
    if j >= len(s):
        return None
    c = s[j]
    if c == "{":
        e = match_brace(s, j)
        if e < 0:
            return None
        return s[j + 1 : e - 1], e
    if c == "}":
        return None
    if c == "\\":
        m = _CS.match(s, j)
        if m is None:  # a lone backslash at the very end
            return None
        return m.group(), m.end()
    return c, j + 1


def read_optional(s: str, i: int) -> tuple[str | None, int]:
    """Optional ``[...]`` argument at ``i``; (None, i) when absent."""
    j = skip_ws(s, i)
    if j < len(s) and s[j] == "[":
        e = match_bracket(s, j)
        if e > 0:
            return s[j + 1 : e - 1], e
    return None, i


def find_env_end(s: str, name: str, i: int) -> tuple[int, int]:
    """From ``i`` (just after ``\\begin{name}``), find the matching ``\\end{name}``.

    Returns (start of ``\\end``, index after it), or (-1, -1). ``\\begin`` and ``\\end``
    may have spaces before the brace. The rare ``{name}`` is found with str.find and the
    command looked up behind it: a regex search would stop at every backslash on the way.
    """
    needle = "{" + name + "}"
    depth = 1
    k = s.find(needle, i)
    while k >= 0:
        j = k
        while j > i and s[j - 1].isspace():  # what \s matches
            j -= 1
        if j - 4 >= i and s.startswith("\\end", j - 4):
            depth -= 1
            if depth == 0:
                return j - 4, k + len(needle)
        elif j - 6 >= i and s.startswith("\\begin", j - 6):
            depth += 1
        k = s.find(needle, k + len(needle))
    return -1, -1


# --------------------------------------------------------------------------- TeX programming

# Low-level TeX that changes how TeX reads the file rather than saying anything: category
# codes, control sequences built from text, expansion order, assignment prefixes. None of it
# renders as prose; left in, it reaches the training text as raw TeX.
_TEX_PROGRAMMING = re.compile(
    r"\\catcode\s*(?:`\\?.|\d+|\"[0-9A-Fa-f]+)\s*=?\s*\d*"
    r"|\\csname(?![A-Za-z@])(?:(?!\\endcsname)[^\n]){0,400}?\\endcsname(?![A-Za-z@])"
    r"|\\(?:csname|endcsname|expandafter|noexpand|global|long|outer|protected|afterassignment|aftergroup"
    r"|futurelet|makeatletter|makeatother)(?![A-Za-z@])",
    re.S,
)
_TEX_PROGRAMMING_HINT = re.compile(r"\\(?:catcode|csname|endcsname|expandafter|noexpand|global|long|outer|"
                                   r"protected|aftergroup|afterassignment|futurelet|makeat)")


def strip_tex_programming(text: str, stats: dict) -> str:
    """Remove `\\catcode` assignments, `\\csname ... \\endcsname` names and expansion or
    assignment prefixes (`\\expandafter`, `\\global`, ...); counted in `tex_programming_dropped`."""
    if _TEX_PROGRAMMING_HINT.search(text) is None:
        return text
    text, n = _TEX_PROGRAMMING.subn("", text)
    stats["tex_programming_dropped"] = stats.get("tex_programming_dropped", 0) + n
    return text
