"""Throughput and output quality of the LaTeX cleaner against a regex baseline.

Builds a deterministic synthetic corpus of LaTeX papers (preamble with macros,
many sections, math, comments, figures, appendix, bibliography), then:

* times ``clean_project`` and a simple regex cleaner (in this file) on the
  same corpus in the same run, single process, and prints MB/s and the ratio;
* checks the output of both for expanded macros, removed comments, kept
  ``\\%``, dropped bibliography/appendix, every section kept and intact math;
* times ``clean_project`` with 1 and 2 worker processes;
* times both cleaners on real papers read at run time (``--real``; by default the
  LEGWORK paper and the arxiv-latex-cleaner fixture under
  ``../shared/data/arxiv-samples`` next to the repository, skipped with a note when
  absent), prints MB/s of both and the ratio per paper, and checks their output
  against facts read from each paper's source.

Usage: python benchmarks/bench_latex_cleaner.py [--mb 4] [--seed 0] [--repeat 3]
       [--real PATH ...] [--real-repeat 20]
Timings are printed, never asserted. Single-process figures are CPU time, so
other load on the machine does not distort the ratio; the worker-process
figures are wall time and do depend on free cores.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import re
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from dataset_builders.latex import LatexError, clean_project  # noqa: E402

# ----------------------------------------------------------------------------- corpus

WORDS = (
    "the of and a in to is we that for with as on by this are be which from at an it can "
    "energy field quantum state spin lattice model phase transition temperature magnetic "
    "coupling scattering amplitude particle mass density dark matter galaxy cluster redshift "
    "neutrino detector signal noise spectrum frequency gravitational wave black hole orbit "
    "entropy correlation function operator symmetry gauge boson fermion vacuum fluctuation "
    "simulation estimate parameter measurement uncertainty observed predicted analysis sample "
    "distribution regime limit order perturbation expansion numerical result approach method"
).split()
GREEK = ["alpha", "beta", "gamma", "omega", "theta", "lambda", "sigma", "mu", "nu", "phi"]


def _sentence(rng: random.Random, macros: list[str]) -> str:
    n = rng.randint(8, 22)
    words = [rng.choice(WORDS) for _ in range(n)]
    if rng.random() < 0.35:
        words.insert(rng.randrange(n), f"${_inline_math(rng)}$")
    if rng.random() < 0.25:
        words.insert(rng.randrange(n), "\\" + rng.choice(macros) + "{}")
    if rng.random() < 0.2:
        words.append(f"\\cite{{ref{rng.randrange(999)},ref{rng.randrange(999)}}}")
    if rng.random() < 0.1:
        words.append(f"(see Fig.~\\ref{{fig:{rng.randrange(99)}}})")
    if rng.random() < 0.08:
        words.append(f"at {rng.randint(50, 99)}\\% confidence")
    if rng.random() < 0.1:
        words.insert(0, "\\emph{" + rng.choice(WORDS) + "}")
    s = " ".join(words)
    return s[0].upper() + s[1:] + "."


def _inline_math(rng: random.Random) -> str:
    g = rng.choice(GREEK)
    return rng.choice(
        [
            f"\\{g}_{{{rng.randint(1, 9)}}}",
            f"\\vect{{x}} \\cdot \\vect{{{rng.choice('pqk')}}}",
            f"\\norm{{\\psi}} < {rng.randint(1, 9)}",
            "\\norm[1]{v}^2",
            f"\\Tr \\rho_{{{rng.randint(1, 9)}}}",
            f"E = m c^{rng.randint(2, 3)}",
            "\\expect{\\hat{H}}",
        ]
    )


def make_paper(k: int, rng: random.Random) -> tuple[bytes, dict]:
    text_macros = [
        f"zz{chr(97 + i)}{chr(97 + k % 26)}" for i in range(rng.randint(4, 10))
    ]  # letters only, as in TeX
    pre = ["\\documentclass[aps,prd,twocolumn]{revtex4-2}", "% COMMENTMARK preamble note"]
    pre += [f"\\usepackage{{{p}}}" for p in ("amsmath", "amssymb", "graphicx", "hyperref")]
    for i, name in enumerate(text_macros):
        value = f"Instrument{k}x{i}"
        pre.append(f"\\newcommand{{\\{name}}}{{{value}}}" if i % 2 else f"\\def\\{name}{{{value}}}")
    pre += [
        "\\newcommand{\\vect}[1]{\\mathbf{#1}}",
        "\\newcommand{\\norm}[2][2]{\\left\\| #2 \\right\\|_{#1}}",
        "\\newcommand{\\expect}[1]{\\left\\langle #1 \\right\\rangle}",
        "\\DeclareMathOperator{\\Tr}{Tr}",
        "\\newcommand{\\be}{\\begin{equation}}",
        "\\newcommand{\\ee}{\\end{equation}}",
    ]
    body = [
        "\\begin{document}",
        f"\\title{{Synthetic study {k} of {rng.choice(WORDS)} {rng.choice(WORDS)}}}",
        "\\author{A. Author}\\affiliation{Institute}",
        "\\begin{abstract}",
        " ".join(_sentence(rng, text_macros) for _ in range(4)),
        "\\end{abstract}",
        "\\maketitle",
    ]
    titles: list[str] = []
    equations: list[str] = []
    raw_equations: list[str] = []
    for s in range(rng.randint(6, 11)):
        title = f"Part {s} on {rng.choice(WORDS)} {rng.choice(WORDS)}"
        titles.append(title)
        body.append(f"\\section{{{title}}}\\label{{sec:{s}}}")
        for sub in range(rng.randint(0, 3) + 1):
            if sub:
                st = f"Topic {s}.{sub} {rng.choice(WORDS)}"
                titles.append(st)
                body.append(f"\\subsection{{{st}}}")
            for _ in range(rng.randint(2, 5)):
                lines = []
                for _ in range(rng.randint(3, 7)):
                    sent = _sentence(rng, text_macros)
                    if rng.random() < 0.15:
                        sent += " % COMMENTMARK inline remark"
                    lines.append(sent)
                body.append("\n".join(lines))
                body.append("")
                if rng.random() < 0.15:
                    body.append("% COMMENTMARK a whole-line comment\n")
                if rng.random() < 0.3:
                    eq = f"\\omega_{{{len(equations)}}} = \\sum_{{n}} \\frac{{\\vect{{k}}_n}}{{{rng.randint(2, 9)}}}"
                    equations.append(eq.replace("\\vect{k}", "\\mathbf{k}"))
                    raw_equations.append(eq)
                    if rng.random() < 0.5:
                        body.append(
                            f"\\begin{{equation}}\n  {eq}\n  \\label{{eq:{len(equations)}}}\n\\end{{equation}}"
                        )
                    else:
                        body.append(f"\\be\n  {eq}\n\\ee")
                if rng.random() < 0.12:
                    body.append(
                        "\\begin{figure}[t]\n\\centering\n\\includegraphics[width=\\columnwidth]{fig.pdf}\n"
                        f"\\caption{{Caption {rng.choice(WORDS)} of $\\{rng.choice(GREEK)}$.}}\n"
                        f"\\label{{fig:{rng.randrange(99)}}}\n\\end{{figure}}"
                    )
                if rng.random() < 0.05:
                    body.append("\\iffalse\nCOMMENTMARK disabled draft text\n\\fi")
    body.append("\\appendix\n\\section{Extra derivation}\nAPPENDIXMARK details here.")
    if rng.random() < 0.5:
        body.append("\\begin{thebibliography}{99}")
        body += [f"\\bibitem{{ref{i}}} BIBMARK Author {i}, Journal {i} (2020)." for i in range(30)]
        body.append("\\end{thebibliography}")
    else:
        body.append("\\bibliographystyle{apsrev4-2}\n\\bibliography{BIBMARK}")
    body.append("\\end{document}")
    src = "\n".join(pre + body) + "\n"
    truth = {
        "titles": titles,
        "equations": equations,
        "raw_equations": raw_equations,
        "macros": text_macros + ["vect", "norm", "expect", "Tr", "be", "ee"],
    }
    return src.encode(), truth


def make_corpus(mb: float, seed: int) -> list[tuple[bytes, dict]]:
    rng = random.Random(seed)
    corpus, total, k = [], 0, 0
    while total < mb * 1e6:
        data, truth = make_paper(k, rng)
        corpus.append((data, truth))
        total += len(data)
        k += 1
    return corpus


# ----------------------------------------------------------------------------- regex baseline

_HEADER = re.compile(
    r"\\(?:chapter|part|section|subsection|subsubsection|paragraph|subparagraph)\*?\{"
)
_COMMENT_LINE = re.compile(r"^[ \t]*%.*\n?", re.M)
_INLINE = re.compile(r"(?<!\\)%.*")
_CUT = re.compile(r"\\appendix|\\begin\{thebibliography\}|\\bibliography\{")
_NEWCOMMAND = re.compile(r"\\(?:newcommand|renewcommand)\*?\{(\\[A-Za-z]+)\}\{(.*)\}\s*$", re.M)
_DEF = re.compile(r"\\def(\\[A-Za-z]+)\{(.*)\}\s*$", re.M)


def regex_clean(data: bytes) -> str:
    """A regex-only cleaner in the style of large web/arXiv corpora (reference only)."""
    text = data.decode("utf-8", errors="replace")
    macros = {}
    for pat in (_NEWCOMMAND, _DEF):
        for m in pat.finditer(text):
            macros[m.group(1)] = m.group(2)
    m = _HEADER.search(text)  # the FIRST header: a greedy ".*\\section" would keep only the last
    if m is None:
        return ""
    text = text[m.start() :]
    text = _COMMENT_LINE.sub("", text)
    text = _INLINE.sub("", text)
    c = _CUT.search(text)
    if c is not None:
        text = text[: c.start()]
    for name, value in macros.items():
        text = re.sub(re.escape(name) + r"(?![A-Za-z])", lambda _m, v=value: v, text)
    return text


# ----------------------------------------------------------------------------- quality

CHECKS = (
    "macros expanded",
    "no comments left",
    "\\% kept as percent",
    "bibliography dropped",
    "appendix dropped",
    "all sections kept",
    "display math intact",
)


def quality(out: str, src: bytes, truth: dict) -> dict[str, bool]:
    pct_in = b"\\%" in src
    return {
        "macros expanded": not any(
            re.search(r"\\" + n + r"(?![A-Za-z])", out) for n in truth["macros"]
        ),
        "no comments left": "COMMENTMARK" not in out,
        "\\% kept as percent": (not pct_in) or re.search(r"\d\\?%", out) is not None,
        "bibliography dropped": "BIBMARK" not in out,
        "appendix dropped": "APPENDIXMARK" not in out,
        "all sections kept": all(t in out for t in truth["titles"]),
        # either expanded or as written (expansion is checked separately)
        "display math intact": all(
            e in out or r in out for e, r in zip(truth["equations"], truth["raw_equations"])
        ),
    }


# ----------------------------------------------------------------------------- real papers

SAMPLES = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "arxiv-samples"))
DEFAULT_REAL = (
    os.path.join(SAMPLES, "TeamLEGWORK__LEGWORK-paper", "ms.tex"),
    os.path.join(SAMPLES, "google-research__arxiv-latex-cleaner", "input_main.tex"),
)
REAL_CHECKS = (
    "macros expanded",
    "no comments left",
    "\\% kept as percent",
    "back matter dropped",
    "all sections kept",
    "display math kept",
)
_DEFINED = re.compile(
    r"\\(?:(?:re)?newcommand|providecommand|DeclareMathOperator)\*?\s*\{?\s*\\([A-Za-z]+)"
    r"|\\def\s*\\([A-Za-z]+)"
)
_COMMENT_TEXT = re.compile(r"(?<!\\)%[ \t]*([^\n]*\S)")
_BACK = re.compile(
    r"\\appendix(?![A-Za-z])|\\begin\{(?:thebibliography|appendix|appendices)\}|\\bibliography\{"
)
_SIMPLE_TITLE = re.compile(
    r"\\(?:section|subsection|subsubsection)\*?\{([^{}\\$%]{3,})\}"
)
_DISPLAY = re.compile(
    r"\\begin\{(equation|align|gather|multline|eqnarray)(\*?)\}(.*?)\\end\{\1\2\}", re.S
)
_USER_CS = re.compile(r"\\([A-Za-z]+)")


def real_facts(src: str) -> dict:
    """What a clean version of a paper should show, read from its source with simple rules."""
    body_start = src.find("\\begin{document}")
    macros = sorted({a or b for a, b in _DEFINED.findall(src)})
    uncommented = _COMMENT_TEXT.sub("", src)
    comments = [
        c
        for c in _COMMENT_TEXT.findall(src[max(body_start, 0) :])
        if len(c) >= 16 and c not in uncommented  # text that only a comment holds
    ]
    back = _BACK.search(src, max(body_start, 0))
    front = uncommented[: back.start()] if back is not None else uncommented
    user = set(macros)
    maths = []
    for m in _DISPLAY.finditer(uncommented[: len(front)]):
        lines = [ln.strip() for ln in m.group(3).splitlines()]
        lines = [
            ln
            for ln in lines
            if len(ln) >= 8 and "\\label" not in ln and not user & set(_USER_CS.findall(ln))
        ]
        if lines:
            maths.append(max(lines, key=len))
    return {
        "macros": macros,
        "comments": comments,
        "pct": "\\%" in uncommented,
        "back": back is not None,
        "titles": _SIMPLE_TITLE.findall(front),
        "maths": maths,
    }


def real_quality(out: str, facts: dict) -> dict[str, tuple[int, int]]:
    """(items passing, items checked) per check."""
    heads = out.splitlines()
    flat = " ".join(out.split())
    return {
        "macros expanded": (
            sum(re.search(r"\\" + n + r"(?![A-Za-z])", out) is None for n in facts["macros"]),
            len(facts["macros"]),
        ),
        "no comments left": (
            sum(c not in out for c in facts["comments"]),
            len(facts["comments"]),
        ),
        "\\% kept as percent": (int(facts["pct"] and "%" in out), int(facts["pct"])),
        "back matter dropped": (
            int(re.search(r"\\bibitem|\\appendix|\\bibliography\{", out) is None)
            if facts["back"]
            else 0,
            int(facts["back"]),
        ),
        "all sections kept": (
            sum(" ".join(t.split()) in flat or any(t in h for h in heads) for t in facts["titles"]),
            len(facts["titles"]),
        ),
        "display math kept": (sum(m in out for m in facts["maths"]), len(facts["maths"])),
    }


def real_papers(paths: list[str], repeat: int, given: bool) -> None:
    print("\nreal papers, 1 process, CPU time (best of 3 passes of", repeat, "runs each):")
    found = [p for p in paths if os.path.isfile(p)]
    for p in paths:
        if p not in found:
            print(f"  skipped: {p} not found" + ("" if given else " (pass --real PATH ...)"))
    if not found:
        return
    print(f"  {'paper':<44}{'KB':>7}{'ours MB/s':>11}{'regex MB/s':>12}{'ratio':>8}")
    tables = []
    for p in found:
        with open(p, "rb") as f:
            data = f.read()
        name = os.path.join(os.path.basename(os.path.dirname(p)), os.path.basename(p))
        ours(data), regex_clean(data)  # warm caches
        t_ours = best_time(ours, [data] * repeat, 3) / repeat
        t_regex = best_time(regex_clean, [data] * repeat, 3) / repeat
        mb = len(data) / 1e6
        print(
            f"  {name[-44:]:<44}{len(data) / 1e3:>7.1f}{mb / t_ours:>11.2f}{mb / t_regex:>12.2f}"
            f"{t_regex / t_ours:>7.2f}x"
        )
        if not regex_clean(data):
            print("    (the regex baseline returns no text for this paper: it has no section heading)")
        facts = real_facts(data.decode("utf-8", errors="replace"))
        tables.append((name, real_quality(ours(data), facts), real_quality(regex_clean(data), facts)))
    print("  (goal: ratio >= 0.5x)")
    for name, q_ours, q_regex in tables:
        print(f"\noutput quality on {name} (items passing, of items found in the source):")
        print(f"  {'check':<24}{'clean_project':>15}{'regex':>10}")
        for c in REAL_CHECKS:
            (a, n), (b, _) = q_ours[c], q_regex[c]
            if n:
                print(f"  {c:<24}{f'{a}/{n}':>15}{f'{b}/{n}':>10}")
            else:
                print(f"  {c:<24}{'n/a':>15}{'n/a':>10}")


# ----------------------------------------------------------------------------- timing


def ours(data: bytes) -> str:
    try:
        return clean_project({"main.tex": data}).text
    except LatexError as e:
        return f"<error {e.reason}>"


def _ours_len(data: bytes) -> int:
    return len(ours(data))


def _noop(_x):
    return 0


def best_time(fn, items, repeat: int) -> float:
    """Best CPU time of ``repeat`` passes (CPU time is not inflated by a busy machine)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        for x in items:
            fn(x)
        best = min(best, time.process_time() - t)
    return best


def pool_time(items, workers: int, repeat: int) -> float:
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    best = float("inf")
    with ctx.Pool(workers) as pool:
        pool.map(_noop, range(workers * 4))  # start-up outside the timing
        for _ in range(repeat):
            t = time.perf_counter()
            for _ in pool.imap_unordered(_ours_len, items, chunksize=4):
                pass
            best = min(best, time.perf_counter() - t)
    return best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=4.0, help="corpus size in MB (default 4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="timing repeats, best is reported")
    ap.add_argument(
        "--real",
        nargs="*",
        metavar="PATH",
        default=None,
        help="real .tex files to time as well (read at run time; default: the LEGWORK paper "
        "and input_main.tex under ../shared/data/arxiv-samples, when present)",
    )
    ap.add_argument(
        "--real-repeat", type=int, default=20, help="runs per timing pass on each real paper"
    )
    args = ap.parse_args(argv)

    corpus = make_corpus(args.mb, args.seed)
    items = [d for d, _ in corpus]
    total_mb = sum(len(d) for d in items) / 1e6
    print(
        f"corpus: {len(items)} papers, {total_mb:.2f} MB (seed {args.seed}); cpus: {os.cpu_count()}"
    )

    ours(items[0]), regex_clean(items[0])  # warm caches/imports
    t_ours = best_time(ours, items, args.repeat)
    t_regex = best_time(regex_clean, items, args.repeat)
    r_ours, r_regex = total_mb / t_ours, total_mb / t_regex
    print(f"\nthroughput, 1 process, CPU time (best of {args.repeat}):")
    print(f"  {'cleaner':<24}{'cpu s':>9}{'MB/s/worker':>13}")
    print(f"  {'clean_project':<24}{t_ours:>9.3f}{r_ours:>13.2f}")
    print(f"  {'regex baseline':<24}{t_regex:>9.3f}{r_regex:>13.2f}")
    print(f"  ratio ours/regex: {r_ours / r_regex:.2f}x (goal >= 0.5x)")

    q_ours = {c: 0 for c in CHECKS}
    q_regex = {c: 0 for c in CHECKS}
    for data, truth in corpus:
        for table, out in ((q_ours, ours(data)), (q_regex, regex_clean(data))):
            for c, ok in quality(out, data, truth).items():
                table[c] += ok
    n = len(corpus)
    print(f"\noutput quality (papers passing, of {n}):")
    print(f"  {'check':<24}{'clean_project':>15}{'regex':>10}")
    for c in CHECKS:
        print(f"  {c:<24}{q_ours[c]:>15}{q_regex[c]:>10}")

    real_papers(
        list(args.real) if args.real is not None else list(DEFAULT_REAL),
        args.real_repeat,
        args.real is not None,
    )

    t1 = pool_time(items, 1, args.repeat)
    t2 = pool_time(items, 2, args.repeat)
    try:
        load = f" (1-min load average {os.getloadavg()[0]:.1f})"
    except OSError:
        load = ""
    print(f"\nclean_project with worker processes, wall time{load}:")
    print(f"  1 worker : {t1:.3f} s  {total_mb / t1:.2f} MB/s")
    print(
        f"  2 workers: {t2:.3f} s  {total_mb / t2:.2f} MB/s  speed-up {t1 / t2:.2f}x "
        f"(efficiency {t1 / t2 / 2:.0%})"
    )


if __name__ == "__main__":
    main()
