"""Behaviour of clean_project on small inline LaTeX projects."""

import pytest

from dataset_builders.latex import CleanedPaper, LatexError, Limits, Section, clean_project


def doc(body: str, preamble: str = "") -> bytes:
    return (
        "\\documentclass{article}\n"
        + preamble
        + "\n\\begin{document}\n"
        + body
        + "\n\\end{document}\n"
    ).encode()


def clean(body: str, preamble: str = "", **kw) -> CleanedPaper:
    return clean_project({"main.tex": doc(body, preamble)}, **kw)


MULTI = r"""
\title{A Study of \emph{Things}}
\maketitle
\begin{abstract}
We study things.
\end{abstract}
\section{Introduction}
Intro text.
\section{Methods}
Method text.
\subsection{Setup}
Setup text.
\subsubsection*{Detail}
Detail text.
\paragraph{Aside}
Aside text.
\section{Results}
Result text.
\section{Discussion}
Discussion text.
\section*{Conclusion}
Conclusion text.
"""


def test_every_section_is_kept_in_order():
    p = clean(MULTI)
    titles = [(s.level, s.title) for s in p.sections]
    assert titles == [
        (2, "Introduction"),
        (2, "Methods"),
        (3, "Setup"),
        (4, "Detail"),
        (5, "Aside"),
        (2, "Results"),
        (2, "Discussion"),
        (2, "Conclusion"),
    ]
    assert [s.text for s in p.sections][0] == "Intro text."
    assert p.sections[-1].text == "Conclusion text."
    # Markdown text carries every heading, in order, with its body
    md = p.text
    order = [
        md.index(h)
        for h in (
            "## Introduction",
            "## Methods",
            "### Setup",
            "#### Detail",
            "##### Aside",
            "## Results",
            "## Discussion",
            "## Conclusion",
        )
    ]
    assert order == sorted(order)
    for t in ("Intro text.", "Method text.", "Setup text.", "Detail text.", "Result text."):
        assert t in md


def test_title_and_abstract_extracted():
    p = clean(MULTI)
    assert p.title == "A Study of Things"
    assert p.abstract == "We study things."
    assert p.text.startswith(
        "# A Study of Things\n\n## Abstract\n\nWe study things.\n\n## Introduction"
    )
    assert isinstance(p.sections[0], Section)


def test_title_in_preamble_and_text_before_first_section():
    p = clean(
        "Lead paragraph without a heading.\n\\section{Next}\nMore.",
        preamble=r"\title[Short]{Long Title}",
    )
    assert p.title == "Long Title"
    assert p.sections[0] == Section(level=0, title="", text="Lead paragraph without a heading.")
    assert p.sections[1].title == "Next"


def test_comments_removed_but_escaped_percent_kept():
    body = "% a whole-line comment\nWe got 50\\% more % trailing comment\nsignal.\n\n100\\%% gone\n\nNext para."
    p = clean("\\section{S}\n" + body)
    text = p.sections[0].text
    assert "comment" not in text and "gone" not in text
    assert "We got 50% more signal." in text
    assert "100%" in text
    assert text.count("\n\n") == 2  # paragraph breaks survive comment removal
    assert p.stats["comments_removed"] >= 3


def test_iffalse_and_comment_environment_dropped():
    body = r"""\section{S}
Keep A.
\iffalse
Hidden B. \iftrue nested \fi still hidden
\fi
\iffalse Hidden C \else Keep D \fi
\begin{comment}
Hidden E.
\end{comment}
Keep F.
"""
    p = clean(body)
    t = p.text
    for keep in ("Keep A.", "Keep D", "Keep F."):
        assert keep in t
    for gone in ("Hidden", "nested"):
        assert gone not in t
    assert p.stats["comment_envs_removed"] == 1


def test_newif_switches_are_followed():
    pre = "\\newif\\ifdraft\n\\draftfalse\n\\newif\\iflong\\longtrue"
    body = "\\section{S}\n\\ifdraft DRAFT\\else FINAL\\fi. \\iflong LONG\\fi."
    t = clean(body, pre).sections[0].text
    assert t == "FINAL. LONG."


def test_bibliography_and_everything_after_dropped():
    body = r"""\section{Main}
Body text \cite{a,b}.
\begin{thebibliography}{9}
\bibitem{a} Author A. Journal.
\end{thebibliography}
\section{After bib}
Trailing material.
"""
    p = clean(body)
    assert "Journal" not in p.text and "Trailing" not in p.text and "bibitem" not in p.text
    assert [s.title for s in p.sections] == ["Main"]
    assert p.stats["bibliography_dropped"] == 1

    p2 = clean("\\section{Main}\nText.\n\\bibliographystyle{plain}\n\\bibliography{refs}\n")
    assert p2.sections[-1].text == "Text."
    assert "refs" not in p2.text


def test_appendix_dropped_by_default_and_kept_on_request():
    body = r"""\section{Main}
Main text.
\appendix
\section{Extra proofs}
Appendix text.
"""
    p = clean(body)
    assert "Appendix text" not in p.text and p.stats["appendix_dropped"] == 1
    kept = clean(body, keep_appendix=True)
    assert [s.title for s in kept.sections] == ["Main", "Extra proofs"]
    assert "Appendix text." in kept.text


def test_appendix_after_bibliography_kept_only_on_request():
    body = "\\section{Main}\nMain.\n\\bibliography{x}\n\\appendix\n\\section{App}\nApp text.\n"
    assert "App text" not in clean(body).text
    kept = clean(body, keep_appendix=True)
    assert kept.sections[-1].title == "App" and kept.sections[-1].text == "App text."


def test_figures_keep_captions_only():
    body = r"""\section{S}
Before.
\begin{figure}[t]
\centering
\includegraphics[width=\linewidth]{plot.pdf}
\caption{The \textbf{measured} spectrum at $T=4\,$K.}
\label{fig:spec}
\end{figure}
\begin{table*}
\caption[short]{Long table caption.}
\begin{tabular}{cc} SECRET & CELL \\ \end{tabular}
\end{table*}
\begin{figure}\includegraphics{nocaption.png}\end{figure}
After.
"""
    p = clean(body)
    t = p.sections[0].text
    assert "Figure: The measured spectrum at $T=4\\,$K." in t
    assert "Table: Long table caption." in t
    assert "plot.pdf" not in t and "SECRET" not in t and "includegraphics" not in t
    assert "fig:spec" not in t
    assert p.stats["captions_kept"] == 2 and p.stats["figures_dropped"] == 1


def test_math_kept_verbatim_with_labels_removed():
    eq = "\\begin{align}\n  a &= b + c \\label{eq:one}\\\\\n  d &= \\frac{e}{f}\n\\end{align}"
    body = (
        "\\section{S}\nInline $x^2 + y_{i}   = z$ and \\(a<b\\) and\n"
        + eq
        + "\nthen $$\\int_0^1 f\\,dx$$ and \\[ E = mc^2 \\] done.\n"
        "\\begin{equation*}\n\\sum_{n} \\frac{1}{n^2}\n\\end{equation*}"
    )
    t = clean(body).sections[0].text
    assert "$x^2 + y_{i}   = z$" in t  # spacing inside math untouched
    assert "\\(a<b\\)" in t
    assert "\\begin{align}\n  a &= b + c \\\\\n  d &= \\frac{e}{f}\n\\end{align}" in t
    assert "$$\\int_0^1 f\\,dx$$" in t
    assert "\\[ E = mc^2 \\]" in t
    assert "\\begin{equation*}\n\\sum_{n} \\frac{1}{n^2}\n\\end{equation*}" in t
    assert "eq:one" not in t


def test_citations_references_and_markup():
    body = (
        "\\section{S}\nAs shown by \\citet[p.~3]{Smith2020} and~\\cite{a,b}, see Eq.~\\eqref{eq:1} "
        "and Fig.~\\ref{f}. \\emph{Note} \\textbf{bold} \\texttt{code} \\href{http://x.org}{link} "
        "\\url{http://y.org/a_b%20c}. Schr\\\"odinger, Poincar\\'{e}, \\ss, ``quoted'' -- ok --- yes."
        "\\footnote{A footnote.}"
    )
    t = clean(body).sections[0].text
    assert "As shown by [cite] and [cite], see Eq. [ref] and Fig. [ref]." in t
    assert "Note bold code link http://y.org/a_b%20c." in t
    assert "Schrödinger, Poincaré, ß" in t
    assert '"quoted" – ok — yes.' in t
    assert "(A footnote.)" in t
    assert "\\" not in t


def test_lists_and_theorems():
    body = r"""\section{S}
\begin{itemize}
\item First point.
\item[Label] Second point.
\end{itemize}
\begin{theorem}[Main]
All is well.
\end{theorem}
\begin{proof}
Trivial.
\end{proof}
"""
    t = clean(body).sections[0].text
    assert "- First point.\n- **Label** Second point." in t
    assert "**Theorem (Main).** All is well." in t
    assert "*Proof.* Trivial." in t


def test_whitespace_normalised():
    body = "\\section{S}\nline one\n   wrapped    here.\n\n\n\n\nNext   paragraph.\n\n\n"
    p = clean(body)
    assert p.sections[0].text == "line one wrapped here.\n\nNext paragraph."
    assert "\n\n\n" not in p.text


def test_multi_file_project_with_cycle_missing_and_subdirs():
    files = {
        "main.tex": doc(
            "\\input{sections/intro}\n\\include{sections/methods.tex}\n\\input{missing}\n\\input{main}"
        ),
        "sections/intro.tex": b"\\section{Intro}\nIntro from file. \\input{sections/loop}",
        "sections/loop.tex": b"Loop text. \\input{sections/intro}",
        "sections/methods.tex": b"\\section{Methods}\nMethods from file.\n% \\input{commented}\n",
        "figs/plot.pdf": b"%PDF-1.5 binary",
    }
    p = clean_project(files)
    assert [s.title for s in p.sections] == ["Intro", "Methods"]
    assert "Intro from file. Loop text." in p.text
    assert "Methods from file." in p.text
    st = p.stats
    assert st["main_file"] == "main.tex"
    assert st["includes_resolved"] == 3
    assert st["includes_missing"] == 1  # \input{missing}; the commented one is not counted
    assert st["include_cycles"] == 2  # loop -> intro, main -> main


def test_include_depth_is_bounded():
    files = {"main.tex": doc("\\section{S}\nTop. \\input{f0}")}
    for k in range(12):
        files[f"f{k}.tex"] = f"L{k} \\input{{f{k + 1}}}".encode()
    p = clean_project(files, limits=Limits(include_depth=3))
    assert "L2" in p.text and "L3" not in p.text
    assert p.stats["includes_too_deep"] == 1


def test_main_file_detection_prefers_root_document_not_included():
    standalone = doc("\\section{Other}\nOther doc.")
    files = {
        "appendix.tex": doc("\\section{Sub}\nSubfile doc."),  # \input by the real main
        "zzz/paper.tex": standalone,
        "paper.tex": doc("\\section{Real}\nReal doc. \\input{appendix}"),
        "notes.tex": b"\\section{Notes} no documentclass here",
    }
    assert clean_project(files).stats["main_file"] == "paper.tex"
    # deterministic tie-break between equivalent candidates
    twin = {"b.tex": doc("\\section{B}\nB."), "a.tex": doc("\\section{A}\nA.")}
    assert (
        clean_project(twin).stats["main_file"]
        == clean_project(dict(reversed(twin.items()))).stats["main_file"]
    )


def test_local_sty_macros_harvested():
    files = {
        "main.tex": doc("\\section{S}\nValue \\myconst.", preamble="\\usepackage{mymacros}"),
        "mymacros.sty": b"\\newcommand{\\myconst}{forty-two}\n",
    }
    assert "Value forty-two." in clean_project(files).text


def test_decoding_and_errors():
    latin = b"\\documentclass{article}\\begin{document}\\section{S}Schr\xf6dinger.\\end{document}"
    assert "Schrödinger." in clean_project({"m.tex": latin}).text

    with pytest.raises(LatexError) as e:
        clean_project({"fig.png": b"\x89PNG....", "data.bin": b"\x00\x01"})
    assert e.value.reason == "no_tex_source"
    with pytest.raises(LatexError) as e:
        clean_project({"main.tex": b"\x00\x01\x02binary junk\x00" * 10})
    assert e.value.reason == "binary"
    with pytest.raises(LatexError) as e:
        clean_project({"part.tex": b"\\section{A} no document here"})
    assert e.value.reason == "no_main_file"
    with pytest.raises(LatexError) as e:
        clean_project({"main.tex": doc("% only a comment\n\\maketitle")})
    assert e.value.reason == "empty_after_cleaning"


def test_heading_inside_abstract_becomes_plain_text():
    p = clean("\\begin{abstract}\\section{Odd} Abstract text.\\end{abstract}\\section{Main}\nBody.")
    assert p.abstract == "Odd\n\nAbstract text."  # the heading is a plain paragraph
    assert "\x01" not in p.text and p.sections[0].title == "Main"


def test_random_fragments_never_crash():
    """Seeded fuzz: broken input gives a LatexError or clean text, never an exception."""
    import random

    pieces = [
        "\\section{",
        "{",
        "}",
        "$",
        "$$",
        "\\[",
        "\\]",
        "\\begin{equation}",
        "\\end{equation}",
        "\\begin{figure}",
        "\\end{figure}",
        "\\caption{",
        "[",
        "]",
        "\\verb|",
        "%",
        "\\%",
        "\\\\",
        "\\iffalse",
        "\\fi",
        "\\else",
        "\\newcommand{\\x}[1]{#1}",
        "\\x{",
        "\\emph{",
        "\\cite[",
        "\\ref{",
        "\\item",
        "\\begin{abstract}",
        "\\end{abstract}",
        "\\title{",
        "\\appendix",
        "\\bibliography{",
        "\\footnote{",
        "\\'",
        "~",
        "--",
        " word ",
        "\n\n",
        "\\begin{",
        "\\end{",
        "\\begin{verbatim}",
        "\\end{verbatim}",
        "#",
        "\\",
        "\\url{",
        "\\ensuremath{",
    ]
    rng = random.Random(1234)
    for _ in range(300):
        body = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 60)))
        try:
            p = clean(body, keep_appendix=rng.random() < 0.5)
        except LatexError as e:
            assert e.reason in ("empty_after_cleaning", "macro_recursion")
            continue
        assert not any(c in p.text for c in "\x01\x02\x03\x04\x05\x06\x07")
