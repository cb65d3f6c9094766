"""Canonical token form of a TeX (or plain-text) formula, for matching model answers.

The normaliser is deliberately small and predictable. It makes these spellings equal:

* layout: spaces, ``\\left``/``\\right``, ``\\,``, ``\\displaystyle``, ``\\limits``, ``$``;
* braces around single tokens: ``c^{2}`` = ``c^2``, ``\\sum_{n=1}^{\\infty}`` = ``\\sum_{n=1}^\\infty``;
* the order of scripts: ``x^2_i`` = ``x_i^2``;
* fractions: ``\\frac{a}{b}`` = ``a/b`` (multi-term parts get parentheses:
  ``\\frac{a+b}{c}`` = ``(a+b)/c``); ``\\dfrac``/``\\tfrac`` = ``\\frac``;
* reciprocal powers: ``1/n^s`` = ``n^{-s}``;
* scalar products: ``\\cdot``, ``*`` and ``·`` are dropped (``m\\cdot c^2`` = ``mc^2``);
  ``\\times`` is kept (it is the cross product in vector formulas);
* vectors: ``\\mathbf{B}`` = ``\\vec{B}`` = ``\\boldsymbol{B}``; font commands
  (``\\mathrm``, ``\\text``, ``\\operatorname``) vanish around their argument;
* Unicode and plain words: ``ζ`` = ``\\zeta``, ``∞`` = ``\\infty`` = ``infty``, ``√`` =
  ``sqrt`` = ``\\sqrt``, ``²`` = ``^2``, ``≥`` = ``\\ge`` = ``\\geq``; ``sqrt(x)`` =
  ``\\sqrt{x}``.

It does no algebra beyond that: ``mv^2/2`` and ``\\frac{1}{2}mv^2`` stay different, so a
question lists each accepted form. Matching is on token sequences
(:func:`contains`), so an answer matches when a target formula appears anywhere in it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

IGNORED = {
    r"\left", r"\right", r"\bigl", r"\bigr", r"\big", r"\Big", r"\Bigl", r"\Bigr",
    r"\bigg", r"\Bigg", r"\biggl", r"\biggr", r"\Biggl", r"\Biggr", r"\displaystyle",
    r"\textstyle", r"\limits", r"\nolimits", r"\,", r"\;", r"\:", r"\!", "\\ ", r"\quad",
    r"\qquad", r"\cdot", r"\ast", "*", "$", "&", r"\\", r"\rm", r"\it", r"\bf",
}
# commands whose argument is rendered inline, without the command
TRANSPARENT = {r"\mathrm", r"\textrm", r"\text", r"\mathit", r"\operatorname", r"\mathcal"}
# commands that keep their (parenthesised) argument
ARG_COMMANDS = {r"\sqrt", r"\vec", r"\hat", r"\bar", r"\dot", r"\ddot", r"\tilde", r"\overline"}
ALIASES = {
    r"\dfrac": r"\frac", r"\tfrac": r"\frac", r"\cfrac": r"\frac",
    r"\mathbf": r"\vec", r"\boldsymbol": r"\vec", r"\bm": r"\vec", r"\vb": r"\vec",
    r"\ge": r"\geq", r"\geqslant": r"\geq", r"\le": r"\leq", r"\leqslant": r"\leq",
    r"\ne": r"\neq", r"\varepsilon": r"\epsilon", r"\varphi": r"\phi", r"\hslash": r"\hbar",
    r"\lvert": "|", r"\rvert": "|", r"\vert": "|", r"\ldots": r"\dots", r"\cdots": r"\dots",
    r"\to": r"\rightarrow",
}
# whole runs of letters read as the command of the same name ("sqrt(pi)" -> \sqrt(\pi))
WORDS = {
    "sum": r"\sum", "int": r"\int", "sqrt": r"\sqrt", "infty": r"\infty", "inf": r"\infty",
    "infinity": r"\infty", "pi": r"\pi", "hbar": r"\hbar", "zeta": r"\zeta",
    "lambda": r"\lambda", "alpha": r"\alpha", "beta": r"\beta", "gamma": r"\gamma",
    "delta": r"\delta", "Delta": r"\Delta", "theta": r"\theta", "sigma": r"\sigma",
    "omega": r"\omega", "epsilon": r"\epsilon", "psi": r"\psi", "Psi": r"\Psi",
    "phi": r"\phi", "nabla": r"\nabla", "partial": r"\partial", "cos": r"\cos",
    "sin": r"\sin", "tan": r"\tan", "exp": r"\exp", "ln": r"\ln", "log": r"\log",
}
UNICODE = {
    "∞": r"\infty", "ζ": r"\zeta", "π": r"\pi", "ħ": r"\hbar", "Σ": r"\sum", "∑": r"\sum",
    "∫": r"\int", "√": r"\sqrt", "−": "-", "–": "-", "·": r"\cdot", "⋅": r"\cdot",
    "×": r"\times", "≥": r"\geq", "≤": r"\leq", "≠": r"\neq", "∂": r"\partial",
    "∇": r"\nabla", "≈": r"\approx", "λ": r"\lambda", "ν": r"\nu", "ω": r"\omega",
    "ψ": r"\psi", "Ψ": r"\Psi", "Δ": r"\Delta", "δ": r"\delta", "σ": r"\sigma",
    "γ": r"\gamma", "β": r"\beta", "ε": r"\epsilon", "ϵ": r"\epsilon", "ρ": r"\rho",
    "μ": r"\mu", "η": r"\eta", "θ": r"\theta", "φ": r"\phi", "ϕ": r"\phi", "α": r"\alpha",
    "τ": r"\tau", "Ω": r"\Omega", "⟨": r"\langle", "⟩": r"\rangle", "→": r"\rightarrow",
    "∝": r"\propto", "⊙": r"\odot", "☉": r"\odot",
}
SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺", "0123456789-+")
_SUPER_RUN = re.compile(r"[⁻⁺]?[⁰¹²³⁴⁵⁶⁷⁸⁹]+")
_TOKEN = re.compile(r"\\(?:[A-Za-z]+|.)|\d+(?:\.\d+)?|[A-Za-z]+|\S", re.S)


@dataclass
class Group:
    items: list = field(default_factory=list)


def _preprocess(text: str) -> str:
    text = _SUPER_RUN.sub(lambda m: "^{" + m.group(0).translate(SUPERSCRIPTS) + "}", text)
    return "".join(" " + UNICODE[c] + " " if c in UNICODE else c for c in text)


def tokenize(text: str) -> list[str]:
    """Split into commands, numbers, single letters (or known words) and symbols."""
    out: list[str] = []
    for tok in _TOKEN.findall(_preprocess(text)):
        if tok[0].isalpha():
            out.extend([WORDS[tok]] if tok in WORDS else list(tok))
        else:
            out.append(tok)
    # `\left.` / `\right.` are invisible delimiters
    cleaned: list[str] = []
    skip_dot = False
    for tok in out:
        if skip_dot and tok == ".":
            skip_dot = False
            continue
        skip_dot = tok in (r"\left", r"\right")
        tok = ALIASES.get(tok, tok)
        if tok in IGNORED:
            continue
        cleaned.append(tok)
    return cleaned


def _parse(tokens: list[str], i: int = 0, closer: str | None = None) -> tuple[list, int]:
    items: list = []
    while i < len(tokens):
        tok = tokens[i]
        if tok == closer:
            return items, i + 1
        if tok == "{":
            group, i = _parse(tokens, i + 1, "}")
            items.append(Group(group))
            continue
        items.append(tok)
        i += 1
    return items, i


def _take_arg(nodes: list, i: int, single_digit: bool = False) -> tuple[list, int]:
    """The argument starting at nodes[i]: a group, a parenthesised run, or one token."""
    if i >= len(nodes):
        return [], i
    node = nodes[i]
    if isinstance(node, Group):
        return node.items, i + 1
    if node == "(":
        depth, j = 0, i
        while j < len(nodes):
            if nodes[j] == "(":
                depth += 1
            elif nodes[j] == ")":
                depth -= 1
                if depth == 0:
                    return nodes[i + 1 : j], j + 1
            j += 1
        return [node], i + 1
    if single_digit and isinstance(node, str) and node[:1].isdigit() and len(node) > 1:
        # TeX reads \frac12 as \frac{1}{2}: split off one digit, leave the rest in place
        nodes[i] = node[1:]
        return [node[0]], i
    if node in TRANSPARENT:
        arg, j = _take_arg(nodes, i + 1)
        return arg, j
    if node in ARG_COMMANDS:
        arg, j = _take_arg(nodes, i + 1)
        return [node, Group(arg)], j
    return [node], i + 1


def _wrap(items: list[list[str]]) -> list[str]:
    flat = [t for item in items for t in item]
    return flat if len(items) == 1 else ["(", *flat, ")"]


def _render(nodes: list) -> list[list[str]]:
    """Render into items (one base with its scripts each)."""
    nodes = list(nodes)
    items: list[list[str]] = []
    i = 0
    while i < len(nodes):
        node = nodes[i]
        i += 1
        if isinstance(node, Group):
            items.extend(_render(node.items))
            continue
        if node in ("^", "_"):
            base: list[str] = []
            i -= 1
        elif node == r"\frac":
            num, i = _take_arg(nodes, i, single_digit=True)
            den, i = _take_arg(nodes, i, single_digit=True)
            base = [*_wrap(_render(num)), "/", *_wrap(_render(den))]
        elif node in TRANSPARENT:
            arg, i = _take_arg(nodes, i)
            items.extend(_render(arg))
            continue
        elif node in ARG_COMMANDS:
            arg, i = _take_arg(nodes, i, single_digit=True)
            base = [node, "(", *[t for item in _render(arg) for t in item], ")"]
        else:
            base = [node]
        scripts: dict[str, list[str]] = {}
        while i < len(nodes) and nodes[i] in ("^", "_"):
            op = nodes[i]
            arg, i = _take_arg(nodes, i + 1)
            scripts[op] = _wrap(_render(arg)) if arg else []
        for op in ("_", "^"):
            if op in scripts:
                base += [op, *scripts[op]]
        items.append(base)
    return items


def _negate(exponent: list[str]) -> list[str]:
    if len(exponent) == 1:
        return ["(", "-", exponent[0], ")"]
    inner = exponent[1:-1]
    depth = 0
    for tok in inner:
        depth += tok == "("
        depth -= tok == ")"
        if depth == 0 and tok in ("+", "-"):
            return ["(", "-", *exponent, ")"]
    return ["(", "-", *inner, ")"]


def _exponent_at(tokens: list[str], i: int) -> int:
    """End index of the exponent starting at tokens[i] (one token or a parenthesised run)."""
    if i >= len(tokens):
        return -1
    if tokens[i] != "(":
        return i + 1
    depth = 0
    for j in range(i, len(tokens)):
        depth += tokens[j] == "("
        depth -= tokens[j] == ")"
        if depth == 0:
            return j + 1
    return -1


def _reciprocal_powers(tokens: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(tokens):
        if (
            tokens[i] == "1"
            and tokens[i + 1 : i + 2] == ["/"]
            and i + 3 < len(tokens)
            and tokens[i + 2] not in ("(", ")", "/", "^", "_")
            and tokens[i + 3] == "^"
        ):
            end = _exponent_at(tokens, i + 4)
            if end > 0:
                out += [tokens[i + 2], "^", *_negate(tokens[i + 4 : end])]
                i = end
                continue
        out.append(tokens[i])
        i += 1
    return out


def normalize(text: str) -> list[str]:
    """The canonical token sequence of a formula."""
    nodes, _ = _parse(tokenize(text))
    flat = [t for item in _render(nodes) for t in item]
    return _reciprocal_powers(flat)


def canonical(text: str) -> str:
    """The canonical form as one string (tokens separated by spaces), for display and tests."""
    return " ".join(normalize(text))


def contains(haystack: list[str], needle: list[str]) -> bool:
    n = len(needle)
    if n == 0:
        return False
    return any(haystack[i : i + n] == needle for i in range(len(haystack) - n + 1))


def formula_in(answer: str, target: str) -> bool:
    """Whether the target formula appears, after normalisation, anywhere in the answer."""
    return contains(normalize(answer), normalize(target))
