"""Macro harvesting and bounded expansion."""

import time

import pytest

from dataset_builders.latex import LatexError, Limits, clean_project
from dataset_builders.latex.macros import Definitions, Expander, harvest


def clean_text(body: str, preamble: str = "", **kw) -> str:
    src = (
        "\\documentclass{article}\n"
        + preamble
        + "\n\\begin{document}\n\\section{S}\n"
        + body
        + "\n\\end{document}"
    )
    return clean_project({"main.tex": src.encode()}, **kw).sections[0].text


PRE = r"""
\newcommand{\R}{\mathbb{R}}
\newcommand\name{LEGWORK}
\newcommand{\vect}[1]{\mathbf{#1}}
\newcommand{\pd}[3][]{\frac{\partial^{#1} #2}{\partial #3^{#1}}}
\renewcommand*{\abs}[1]{\left|#1\right|}
\providecommand{\name}{not this}
\def\half{\frac{1}{2}}
\def\pair#1#2{\langle #1, #2\rangle}
\DeclareMathOperator{\Tr}{Tr}
\DeclareMathOperator*{\argmax}{arg\,max}
\let\Reals\R
"""


def test_macros_with_args_defaults_def_and_operators():
    body = (
        r"We use \name{} and \name. Let $x\in\R^n$, $\vect{v}$, $\pd{f}{x}$, $\pd[2]{f}{t}$, "
        r"$\abs{z}$, $\half$, $\pair{a}{b}$, $\Tr \rho$, $\argmax_x f$, $\Reals$."
    )
    t = clean_text(body, PRE)
    assert "We use LEGWORK and LEGWORK." in t
    assert r"$x\in\mathbb{R}^n$" in t
    assert r"$\mathbf{v}$" in t
    assert r"$\frac{\partial^{} f}{\partial x^{}}$" in t
    assert r"$\frac{\partial^{2} f}{\partial t^{2}}$" in t
    assert r"$\left|z\right|$" in t
    assert r"$\frac{1}{2}$" in t
    assert r"$\langle a, b\rangle$" in t
    assert r"$\operatorname{Tr} \rho$" in t
    assert r"$\operatorname*{arg\,max}_x f$" in t
    assert r"$\mathbb{R}$." in t
    for name in ("\\name", "\\vect", "\\pd", "\\half", "\\pair", "\\Tr", "\\argmax", "\\Reals"):
        assert name not in t


def test_definitions_in_body_are_removed_and_applied():
    t = clean_text("\\newcommand{\\kw}{keyword}Text with \\kw.")
    assert t == "Text with keyword."


def test_argument_glued_to_control_word_keeps_a_space():
    t = clean_text(r"$\op{a} \op b$", r"\def\op#1{\hat#1}")
    assert r"$\hat a \hat b$" in t


def test_ifnextchar_takes_no_branch_and_terminates():
    pre = r"""\makeatletter
\newcommand{\unit}[1]{\,\mathrm{#1}\checknext}
\newcommand{\checknext}{\@ifnextchar\bgroup{\gobble}{}}
\newcommand{\gobble}[1]{\,\mathrm{#1}\@ifnextchar\bgroup{\gobble}{}}
\makeatother"""
    t = clean_text(r"$f < 3\unit{Hz}$", pre)
    assert t == r"$f < 3\,\mathrm{Hz}$"


def test_same_macro_inside_its_own_argument():
    t = clean_text(r"\hl{outer $\hl{x}$ text}", r"\newcommand{\hl}[1]{{#1}}")
    assert t == "outer ${x}$ text"  # math is kept verbatim, braces included


def test_renewed_math_environment_arguments_are_dropped():
    pre = r"\renewenvironment{equation}[1]{\align}{\endalign}"
    t = clean_text("\\begin{equation}{\\url{http://doc}}\n  a = b\n\\end{equation}", pre)
    assert t == "\\begin{equation}\n  a = b\n\\end{equation}"


def test_protected_commands_are_not_expanded():
    t = clean_text(r"\section{Real heading} text", r"\renewcommand{\section}[1]{BROKEN}")
    assert "BROKEN" not in t


def test_self_recursive_macro_is_bounded():
    start = time.perf_counter()
    with pytest.raises(LatexError) as e:
        clean_text(r"Boom \a.", r"\def\a{\a\a}")
    assert e.value.reason == "macro_recursion"
    assert time.perf_counter() - start < 2


def test_exponential_macro_chain_exhausts_budget():
    # each macro calls the next twice: 2**20 expansions unless stopped
    pre = "".join(f"\\def\\m{chr(97 + k)}{{\\m{chr(98 + k)}\\m{chr(98 + k)}}}\n" for k in range(20))
    start = time.perf_counter()
    with pytest.raises(LatexError) as e:
        clean_text(r"Boom \ma.", pre, limits=Limits(expansion_budget=5000))
    assert e.value.reason == "macro_recursion"
    assert "budget" in str(e.value)
    assert time.perf_counter() - start < 2


def test_expander_counts_and_harvest_reports_unsupported():
    d = Definitions()
    rest = harvest(r"\def\delim#1.{x}\newcommand{\ok}{fine}body", d)
    assert rest == "body"
    assert d.unsupported == 1 and set(d.macros) == {"ok"}
    ex = Expander(d.macros, Limits())
    assert ex.expand(r"\ok\ok{} \okay") == r"finefine{} \okay"
    assert ex.expanded == 2
