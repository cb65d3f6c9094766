"""arXiv's physics taxonomy: which categories count as physics, and their human names."""

from __future__ import annotations

# Active physics categories (51) with the names arXiv gives them.
PHYSICS_CATEGORIES: dict[str, str] = {
    "astro-ph.CO": "Cosmology and Nongalactic Astrophysics",
    "astro-ph.EP": "Earth and Planetary Astrophysics",
    "astro-ph.GA": "Astrophysics of Galaxies",
    "astro-ph.HE": "High Energy Astrophysical Phenomena",
    "astro-ph.IM": "Instrumentation and Methods for Astrophysics",
    "astro-ph.SR": "Solar and Stellar Astrophysics",
    "cond-mat.dis-nn": "Disordered Systems and Neural Networks",
    "cond-mat.mes-hall": "Mesoscale and Nanoscale Physics",
    "cond-mat.mtrl-sci": "Materials Science",
    "cond-mat.other": "Other Condensed Matter",
    "cond-mat.quant-gas": "Quantum Gases",
    "cond-mat.soft": "Soft Condensed Matter",
    "cond-mat.stat-mech": "Statistical Mechanics",
    "cond-mat.str-el": "Strongly Correlated Electrons",
    "cond-mat.supr-con": "Superconductivity",
    "gr-qc": "General Relativity and Quantum Cosmology",
    "hep-ex": "High Energy Physics - Experiment",
    "hep-lat": "High Energy Physics - Lattice",
    "hep-ph": "High Energy Physics - Phenomenology",
    "hep-th": "High Energy Physics - Theory",
    "math-ph": "Mathematical Physics",
    "nucl-ex": "Nuclear Experiment",
    "nucl-th": "Nuclear Theory",
    "quant-ph": "Quantum Physics",
    "nlin.AO": "Adaptation and Self-Organizing Systems",
    "nlin.CD": "Chaotic Dynamics",
    "nlin.CG": "Cellular Automata and Lattice Gases",
    "nlin.PS": "Pattern Formation and Solitons",
    "nlin.SI": "Exactly Solvable and Integrable Systems",
    "physics.acc-ph": "Accelerator Physics",
    "physics.ao-ph": "Atmospheric and Oceanic Physics",
    "physics.app-ph": "Applied Physics",
    "physics.atm-clus": "Atomic and Molecular Clusters",
    "physics.atom-ph": "Atomic Physics",
    "physics.bio-ph": "Biological Physics",
    "physics.chem-ph": "Chemical Physics",
    "physics.class-ph": "Classical Physics",
    "physics.comp-ph": "Computational Physics",
    "physics.data-an": "Data Analysis, Statistics and Probability",
    "physics.ed-ph": "Physics Education",
    "physics.flu-dyn": "Fluid Dynamics",
    "physics.gen-ph": "General Physics",
    "physics.geo-ph": "Geophysics",
    "physics.hist-ph": "History and Philosophy of Physics",
    "physics.ins-det": "Instrumentation and Detectors",
    "physics.med-ph": "Medical Physics",
    "physics.optics": "Optics",
    "physics.plasm-ph": "Plasma Physics",
    "physics.pop-ph": "Popular Physics",
    "physics.soc-ph": "Physics and Society",
    "physics.space-ph": "Space Physics",
}

# Legacy archives (pre-subject-class) and retired categories that were physics.
LEGACY_PHYSICS: dict[str, str] = {
    "astro-ph": "Astrophysics",
    "cond-mat": "Condensed Matter",
    "acc-phys": "Accelerator Physics",
    "ao-sci": "Atmospheric-Oceanic Sciences",
    "atom-ph": "Atomic, Molecular and Optical Physics",
    "chem-ph": "Chemical Physics",
    "mtrl-th": "Materials Theory",
    "plasm-ph": "Plasma Physics",
    "supr-con": "Superconductivity",
    "chao-dyn": "Chaotic Dynamics",
    "patt-sol": "Pattern Formation and Solitons",
    "solv-int": "Exactly Solvable and Integrable Systems",
    "adap-org": "Adaptation, Noise, and Self-Organizing Systems",
    "comp-gas": "Cellular Automata and Lattice Gases",
    "bayes-an": "Bayesian Analysis",
}

# Aliases: arXiv lists math.MP and math-ph as the same category.
ALIASES: dict[str, str] = {"math.MP": "math-ph"}

ALL_PHYSICS: frozenset[str] = frozenset(PHYSICS_CATEGORIES) | frozenset(LEGACY_PHYSICS) | frozenset(ALIASES)


def canonical(category: str) -> str:
    return ALIASES.get(category, category)


def archive_of(category: str) -> str:
    """`astro-ph.CO` -> `astro-ph`, `physics.optics` -> `physics`, `hep-th` -> `hep-th`."""
    return canonical(category).split(".", 1)[0]


def is_physics(category: str) -> bool:
    return category in ALL_PHYSICS


def human_name(category: str) -> str:
    c = canonical(category)
    return PHYSICS_CATEGORIES.get(c) or LEGACY_PHYSICS.get(c) or c
