"""A small arXiv-format sample that the project writes itself, for demos and tests.

`python -m dataset_builders sample --out data/sample` writes:
* `arxiv-metadata-sample.jsonl`: Kaggle-snapshot lines (the exact 14-key schema, hard-wrapped
  abstracts with indentation, raw TeX, accented names in TeX, mixed licences, cross-lists,
  a few non-physics, withdrawn and duplicate records so every filter has work);
* `src/arXiv_src_2401_001.tar`: a bulk source shard (`2401/<id>.gz` members: gzipped tars
  of multi-file LaTeX projects and single gzipped .tex files) for papers of the sample.
The text is generated from phrase banks with a fixed seed: plausible, deterministic, and
nobody's paper.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import tarfile
import textwrap
from pathlib import Path

from .split import split_of

BANKS = {
    "hep-th": (["conformal field theories", "string compactifications", "holographic dualities",
                "supersymmetric gauge theories", "black hole microstates"],
               ["the bootstrap equations", "a worldsheet analysis", "the AdS/CFT correspondence",
                "localization techniques", "an effective field theory"],
               ["$c = 24$", "$\\mathcal{N}=4$", "$\\Delta \\geq d/2 - 1$", "$S = A/4G_N$"]),
    "hep-ph": (["the muon anomalous magnetic moment", "dark matter freeze-out", "neutrino mass ordering",
                "Higgs boson pair production", "axion-like particles"],
               ["next-to-leading order QCD corrections", "a global fit to collider data",
                "lattice-informed form factors", "a Boltzmann-equation treatment"],
               ["$\\sqrt{s} = 13$ TeV", "$m_\\nu < 0.8$ eV", "$\\Omega h^2 \\simeq 0.12$", "$g_{a\\gamma\\gamma}$"]),
    "astro-ph.CO": (["the Hubble tension", "baryon acoustic oscillations", "the cosmic microwave background",
                     "primordial gravitational waves", "reionization"],
                    ["Markov chain Monte Carlo inference", "N-body simulations", "a Fisher-matrix forecast",
                     "weak-lensing cross-correlations"],
                    ["$H_0 = 73$ km s$^{-1}$ Mpc$^{-1}$", "$r < 0.036$", "$\\sigma_8$", "$z \\sim 7$"]),
    "astro-ph.GA": (["spiral arm formation", "the stellar halo of the Milky Way", "galactic bars",
                     "star formation in dwarf galaxies"],
                    ["Gaia proper motions", "hydrodynamical simulations", "integral-field spectroscopy"],
                    ["$M_\\star \\sim 10^{9} M_\\odot$", "$R_e$", "$\\Sigma_{\\rm SFR}$"]),
    "astro-ph.HE": (["binary black hole mergers", "fast radio bursts", "gamma-ray burst afterglows",
                     "pulsar wind nebulae"],
                    ["matched filtering of detector data", "general-relativistic MHD simulations",
                     "population synthesis"],
                    ["$M_{\\rm chirp}$", "$L \\sim 10^{42}$ erg s$^{-1}$", "$\\Gamma \\gg 1$"]),
    "gr-qc": (["gravitational wave memory", "the Kerr metric", "quasinormal modes", "cosmic censorship"],
              ["perturbation theory", "numerical relativity", "a post-Newtonian expansion"],
              ["$g_{\\mu\\nu}$", "$R_{\\mu\\nu} - \\frac{1}{2} R g_{\\mu\\nu} = 8\\pi G T_{\\mu\\nu}$", "$a/M$"]),
    "quant-ph": (["entanglement in many-body systems", "quantum error correction", "superconducting qubits",
                  "quantum metrology", "Bell inequality violations"],
                 ["tensor-network simulations", "randomized benchmarking", "a variational algorithm"],
                 ["$|\\psi\\rangle$", "$F > 0.99$", "$\\hat{H} = \\sum_i \\sigma^z_i$", "$T_2$"]),
    "cond-mat.str-el": (["high-temperature superconductivity", "quantum spin liquids", "Mott insulators",
                         "the Hubbard model"],
                        ["dynamical mean-field theory", "density-matrix renormalization group",
                         "angle-resolved photoemission"],
                        ["$U/t = 8$", "$T_c$", "$J_1$-$J_2$"]),
    "cond-mat.mes-hall": (["topological insulators", "twisted bilayer graphene", "quantum dots",
                           "the quantum Hall effect"],
                          ["transport measurements", "tight-binding calculations", "scanning tunneling spectroscopy"],
                          ["$\\sigma_{xy} = e^2/h$", "$\\theta \\approx 1.1^\\circ$", "$\\nu = 5/2$"]),
    "cond-mat.stat-mech": (["non-equilibrium phase transitions", "active matter", "the Ising model",
                            "fluctuation theorems"],
                           ["Monte Carlo simulations", "renormalization group arguments", "exact solutions"],
                           ["$\\langle W \\rangle \\geq \\Delta F$", "$\\nu \\approx 0.63$", "$k_B T$"]),
    "physics.optics": (["frequency combs", "metasurfaces", "nonlinear waveguides", "optical tweezers"],
                       ["finite-difference time-domain simulations", "pump-probe spectroscopy",
                        "coupled-mode theory"],
                       ["$\\chi^{(3)}$", "$\\lambda = 1550$ nm", "$Q \\sim 10^6$"]),
    "physics.flu-dyn": (["turbulent boundary layers", "Rayleigh-Benard convection", "droplet impact"],
                        ["direct numerical simulation", "particle image velocimetry", "lattice Boltzmann methods"],
                        ["$Re = 10^4$", "$Ra$", "$\\nabla \\cdot \\mathbf{u} = 0$"]),
    "nucl-th": (["neutron star equations of state", "nuclear pairing", "the neutron skin"],
                ["chiral effective field theory", "ab initio coupled-cluster methods"],
                ["$\\rho_0 = 0.16$ fm$^{-3}$", "$E/A$", "$R_{1.4}$"]),
}
NON_PHYSICS = {
    "math.CO": (["graph colourings", "sparse hypergraphs"], ["probabilistic arguments"], ["$\\chi(G)$"]),
    "cs.LG": (["transformer language models", "gradient descent"], ["empirical scaling laws"], ["$O(n^2)$"]),
    "q-bio.PE": (["epidemic spreading", "population genetics"], ["compartmental models"], ["$R_0$"]),
}
CROSS = {"hep-th": "gr-qc", "astro-ph.CO": "gr-qc", "quant-ph": "cond-mat.mes-hall", "hep-ph": "astro-ph.HE",
         "cond-mat.str-el": "cond-mat.supr-con", "physics.optics": "quant-ph"}
NAMES = ["M. M\\\"uller", "J. Garc\\'ia", "A. N. Petrov", "L. Chen", "S. {\\O}stergaard", "F. Dupr\\'e",
         "K. Tanaka", "R. \\v{S}ime\\v{c}ek", "E. Rossi", "P. Kowalski", "H. Nguyen", "I. Andersson",
         "C. O'Neil", "T. Becker", "Y. Kim", "D. Silva", "N. G\\\"orlitz", "B. Ad\\'amek"]
LICENSES = [None] * 5 + ["http://arxiv.org/licenses/nonexclusive-distrib/1.0/"] * 3 + [
    "http://creativecommons.org/licenses/by/4.0/"] * 3 + [
    "http://creativecommons.org/licenses/by-sa/4.0/", "http://creativecommons.org/publicdomain/zero/1.0/",
    "http://creativecommons.org/licenses/by-nc-nd/4.0/"]
DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def _wrap(text: str) -> str:
    """Hard-wrap like the snapshot: 2-space indent on the first line, lines at ~80 columns."""
    return "  " + "\n".join(textwrap.wrap(text, 79, break_long_words=False, break_on_hyphens=False)) + "\n"


def _abstract(rng: random.Random, subject: str, method: str, maths: list[str]) -> str:
    m1, m2 = rng.sample(maths, 2) if len(maths) > 1 else (maths[0], maths[0])
    s = [
        f"We study {subject} using {method}.",
        f"{rng.choice(['Building on recent work', 'Motivated by new data', 'In contrast to earlier approaches'])}, "
        f"we show that the relevant observables are controlled by {m1} and derive their scaling with {m2}.",
        f"The results {rng.choice(['agree with', 'are in tension with', 'sharpen'])} existing measurements and "
        f"{rng.choice(['clarify the role of', 'place new bounds on', 'offer a simple picture of'])} {subject}.",
        f"We discuss implications for {rng.choice(['future experiments', 'numerical studies', 'related models'])}.",
    ]
    return " ".join(s[: rng.randint(3, 4)])


def records(n: int = 300, seed: int = 1234) -> list[dict]:
    rng = random.Random(seed)
    cats = list(BANKS)
    out = []
    for i in range(n):
        non_physics = i % 10 == 9
        bank = NON_PHYSICS if non_physics else BANKS
        cat = rng.choice(list(bank)) if non_physics else cats[i % len(cats)]
        subjects, methods, maths = bank[cat]
        subject, method = rng.choice(subjects), rng.choice(methods)
        year, month = 2019 + (i % 6), 1 + (i % 12)
        rid = f"{year % 100:02d}{month:02d}.{10000 + i:05d}"
        categories = cat
        if cat in CROSS and rng.random() < 0.4:
            categories += " " + CROSS[cat]
        title = rng.choice([
            f"{method.capitalize()} of {subject}",
            f"On {subject} and {rng.choice(methods)}",
            f"Constraints on {subject} from {method}",
            f"A note on {subject}: the case of {rng.choice(maths)}",
        ])
        abstract = _abstract(rng, subject, method, maths)
        comments = f"{rng.randint(6, 40)} pages, {rng.randint(1, 12)} figures"
        if i % 37 == 5:  # withdrawn papers look like this in the snapshot
            comments = "This paper has been withdrawn by the author due to an error in Section 3"
            abstract = "This paper has been withdrawn by the author due to a crucial error in the derivation."
        authors = ", ".join(rng.sample(NAMES, rng.randint(1, 4)))
        day = 1 + (i * 7) % 28
        created = f"{DAYS[i % 7]}, {day} {MONTHS[month - 1]} {year} 10:{i % 60:02d}:00 GMT"
        versions = [{"version": "v1", "created": created}]
        if i % 3 == 0:
            revised = (f"{DAYS[(i + 3) % 7]}, {min(28, day + 14)} {MONTHS[month % 12]} "
                       f"{year + (month == 12)} 09:00:00 GMT")
            versions.append({"version": "v2", "created": revised})
        out.append({
            "id": rid, "submitter": authors.split(",")[0].strip(), "authors": authors,
            "title": "\n  ".join(textwrap.wrap(title, 70)),
            "comments": comments, "journal-ref": None, "doi": None, "report-no": None,
            "categories": categories, "license": LICENSES[i % len(LICENSES)], "abstract": _wrap(abstract),
            "versions": versions, "update_date": f"{year}-{month:02d}-{min(28, day + 1):02d}",
            "authors_parsed": [[a.strip().split()[-1], " ".join(a.strip().split()[:-1]), ""]
                               for a in authors.split(",")],
        })
    # Duplicate content under a new id (a re-submission), caught by content dedup.
    dup = dict(out[3])
    dup["id"] = "2412.99999"
    out.append(dup)
    return out


MAIN_TEX = r"""\documentclass[twocolumn]{revtex4-2}
\usepackage{amsmath}
% Macros used throughout
\newcommand{\Tc}{T_{\mathrm{c}}}
\newcommand{\ket}[1]{\left|#1\right\rangle}
\newcommand{\vect}[2][\mathbf]{#1{#2}}
\def\eps{\varepsilon}
\DeclareMathOperator{\Tr}{Tr}
\title{<<title>>}
\begin{document}
\begin{abstract}
<<abstract>>
\end{abstract}
\maketitle
\section{Introduction}
<<intro>> % a remark for the co-authors
The critical temperature $\Tc$ and the state $\ket{\psi}$ enter through $\Tr \rho = 1$ with $\eps \ll 1$.
\input{sections/model}
\section{Results}
We find 50\% agreement at $\vect{k}$ and $\vect[\hat]{n}$.
\begin{figure}
\centering
\includegraphics[width=\columnwidth]{fig1.pdf}
\caption{The phase diagram as a function of $\Tc$.}
\end{figure}
\iffalse
An abandoned paragraph that must not reach the training data.
\fi
\section{Conclusions}
<<conclusion>>
\appendix
\section{Details}
Lengthy algebra.
\begin{thebibliography}{9}
\bibitem{a} A. Author, Phys. Rev. B \textbf{1}, 1 (2020).
\end{thebibliography}
\end{document}
"""

MODEL_TEX = r"""\section{Model}
\label{sec:model}
The Hamiltonian reads
\begin{equation}
H = -t \sum_{\langle ij \rangle} c^\dagger_i c_j + U \sum_i n_{i\uparrow} n_{i\downarrow},
\end{equation}
% TODO: cite the original paper
and we work at $\Tc/t = 0.1$.
"""


def _targz(files: dict[str, str]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, text in sorted(files.items()):
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1700000000, 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def source_shard(recs: list[dict], n_papers: int = 8) -> bytes:
    """A bulk source tar: YYMM/<id>.gz members for the first physics papers of `recs`."""
    out = io.BytesIO()

    usable = [r for r in recs if r["categories"].split()[0] in BANKS and "withdrawn" not in r["comments"]]
    # every split gets full texts, so each context has validation and test examples too
    held_out = [next(r for r in usable if split_of(r["id"]) == s) for s in ("validation", "test")]
    chosen = [r for r in usable if split_of(r["id"]) == "train"][: n_papers - len(held_out)] + held_out
    with tarfile.open(fileobj=out, mode="w") as tar:
        for k, r in enumerate(chosen):
            fields = {
                "title": " ".join(r["title"].split()),
                "abstract": " ".join(r["abstract"].split()),
                "intro": f"Understanding {r['title'].split(' of ')[-1].split(':')[0].lower()} is a long-standing goal.",
                "conclusion": "We have presented a consistent picture; open questions remain.",
            }
            main = MAIN_TEX
            for key, val in fields.items():
                main = main.replace(f"<<{key}>>", val)
            if k % 2 == 0:  # multi-file project: gzipped tar
                payload = _targz({"main.tex": main, "sections/model.tex": MODEL_TEX})
            else:  # single-file submission: one gzipped .tex (the \input is inlined)
                payload = gzip.compress(main.replace(r"\input{sections/model}", MODEL_TEX).encode(), mtime=0)
            info = tarfile.TarInfo(f"2401/{r['id']}.gz")
            info.size, info.mtime, info.mode = len(payload), 1700000000, 0o644
            tar.addfile(info, io.BytesIO(payload))
    return out.getvalue()


def write_sample(out: Path, n: int = 300, seed: int = 1234) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    recs = records(n, seed)
    meta = out / "arxiv-metadata-sample.jsonl"
    tmp = meta.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=True, separators=(",", ":")) + "\n" for r in recs))
    tmp.replace(meta)
    src = out / "src" / "arXiv_src_2401_001.tar"
    src.parent.mkdir(exist_ok=True)
    tmp = src.with_suffix(".tmp")
    tmp.write_bytes(source_shard(recs))
    tmp.replace(src)
    return {"metadata": meta, "sources": src}


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="write the project's own small arXiv-format sample (metadata + LaTeX sources)")
    p.add_argument("--out", type=Path, default=Path("data/sample"))
    p.add_argument("-n", type=int, default=300, help="number of metadata records")
    p.add_argument("--seed", type=int, default=1234)
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    paths = write_sample(args.out, args.n, args.seed)
    for k, v in paths.items():
        print(f"wrote {k}: {v}")
    return 0
