"""Scorers, the TeX normaliser and the number/unit reader: right answers pass, wrong ones fail."""

import math

import pytest

from qwenphysics.evaluation import quantities, scoring, texnorm

C = {"type": "numeric", "value": 2.99792458e8, "unit": "m/s", "rel_tol": 0.01}


# --- numeric ------------------------------------------------------------------------------


@pytest.mark.parametrize("answer", [
    "c ≈ 3e8 m/s",
    "about 299,792 km/s",
    "3×10^8 m s^-1",
    r"$3 \times 10^{8}$",
    r"$c = 2.998\times10^{8}\,\mathrm{m\,s^{-1}}$",
    "299 792 458 metros por segundo",
    "unos 300 000 km/s",
    "2,998 × 10⁸ m·s⁻¹",
    "It is 3.00e8 meters per second.",
    "3 x 10**8 m/s",
])
def test_numeric_accepts_speed_of_light_spellings(answer):
    assert scoring.score(C, answer)


@pytest.mark.parametrize("answer", [
    "about 3 × 10^5 m/s",          # wrong magnitude
    "about 3 × 10^8 km/s",         # right number, wrong unit scale
    "3 × 10^8 kg",                 # wrong dimension
    "340 m/s",                     # the speed of sound
    "The speed of light is very fast.",  # no number at all
    "",
])
def test_numeric_rejects_wrong_speed_of_light(answer):
    assert not scoring.score(C, answer)


def test_numeric_unitless_reference_rejects_dimensioned_numbers():
    year = {"type": "numeric", "value": 1887, "abs_tol": 0, "rel_tol": 0}
    assert scoring.score(year, "The experiment was performed in 1887 in Cleveland.")
    assert not scoring.score(year, "In 1886.")
    assert not scoring.score(year, "It lasted 1887 s.")


def test_numeric_sign_and_tolerance():
    spec = {"type": "numeric", "value": -13.6, "unit": "eV", "rel_tol": 0.01}
    assert scoring.score(spec, "E₁ = −13.6 eV")
    assert scoring.score(spec, "-2.18 × 10^-18 J")            # converted from joules
    assert not scoring.score(spec, "13.6 eV")                  # wrong sign
    assert not scoring.score(spec, "-13.0 eV")                 # outside 1 %
    assert not scoring.score(spec, "-13.6 J")


def test_numeric_hyphenated_fraction_is_not_negative():
    half = {"type": "numeric", "value": 0.5, "abs_tol": 1e-9, "rel_tol": 0}
    assert scoring.score(half, "electrons are spin-1/2 particles")
    assert not scoring.score(half, "spin-1 bosons")


# --- keywords -----------------------------------------------------------------------------

ODD = {
    "type": "keywords",
    "any": [r"\bzero\b", r"\bcero\b", "vanish", "se anula"],
    "none": ["not zero|no es cero"],
}


@pytest.mark.parametrize("answer,ok", [
    ("It is zero.", True),
    ("ZERO, by symmetry", True),
    ("The integral vanishes.", True),
    ("Es cero.", True),
    ("La integral se anula por simetría.", True),
    ("It is not zero.", False),
    ("No es cero.", False),
    ("It equals twice the integral over half the interval.", False),
])
def test_keywords_english_and_spanish(answer, ok):
    assert scoring.score(ODD, answer) is ok


def test_keywords_fold_accents_on_both_sides():
    spec = {"type": "keywords", "any": ["dilatación temporal"]}
    assert scoring.score(spec, "Se llama DILATACION TEMPORAL.")
    assert scoring.score(spec, "se llama dilatación temporal")
    assert not scoring.score(spec, "contracción de longitudes")


def test_keywords_all_of_requires_every_pattern():
    spec = {"type": "keywords", "all": ["fusion", "hydrogen|hidrogeno"]}
    assert scoring.score(spec, "Nuclear fusion of hydrogen into helium.")
    assert not scoring.score(spec, "Nuclear fusion.")
    assert not scoring.score(spec, "Hydrogen burning by fission.")


# --- TeX expressions ----------------------------------------------------------------------


@pytest.mark.parametrize("a,b", [
    (r"\zeta(s)=\sum_{n=1}^\infty n^{-s}", r"\zeta(s) = \sum_{n=1}^{\infty} \frac{1}{n^s}"),
    (r"\zeta(s)=\sum_{n=1}^\infty n^{-s}", "ζ(s) = Σ_{n=1}^∞ 1/n^s"),
    (r"\left( a + b \right)", "(a+b)"),
    (r"\frac{a}{b}", "a/b"),
    (r"\frac{a+b}{c}", "(a+b)/c"),
    (r"m\cdot c^{2}", "mc^2"),
    ("E=mc²", r"E = m c^{2}"),
    (r"x^{2}_{i}", "x_i^2"),
    (r"\frac12 mv^2", r"\frac{1}{2} m v^{2}"),
    (r"\mathbf{B}", r"\vec{B}"),
    (r"\Delta x \Delta p \ge \hbar/2", r"\Delta x\,\Delta p \geq \frac{\hbar}{2}"),
    (r"2\pi\sqrt{\frac{L}{g}}", "2 pi sqrt(L/g)"),
    (r"T_{\rm c}", r"T_\text{c}"),
])
def test_texnorm_equivalences(a, b):
    assert texnorm.canonical(a) == texnorm.canonical(b)


@pytest.mark.parametrize("a,b", [
    (r"n^{-s}", r"n^{s}"),
    (r"\frac{a+b}{c}", "a+b/c"),
    (r"\nabla\cdot\vec B", r"\nabla\times\vec B"),
    (r"\frac{1}{n^{a+b}}", r"n^{-a+b}"),
    ("E=mc^2", "E=mc^3"),
    (r"\sqrt{L/g}", r"\sqrt{g/L}"),
])
def test_texnorm_keeps_different_formulas_apart(a, b):
    assert texnorm.canonical(a) != texnorm.canonical(b)


def test_texexpr_scorer_finds_formula_inside_prose():
    spec = {"type": "texexpr", "targets": [r"\zeta(s)=\sum_{n=1}^\infty n^{-s}"]}
    right = r"The Riemann zeta function is $\zeta(s) = \sum_{n=1}^{\infty} \frac{1}{n^s}$ for Re(s) > 1."
    assert scoring.score(spec, right)
    assert not scoring.score(spec, r"It is $\zeta(s) = \sum_{n=1}^{\infty} n^{s}$.")
    assert not scoring.score(spec, r"It is $\zeta(s) = \prod_p (1-p^{-s})^{-1}$.")


def test_composite_scorers():
    spec = {"type": "any_of", "scorers": [
        {"type": "texexpr", "targets": [r"\sqrt{\pi}"]},
        {"type": "numeric", "value": 1.7724539, "rel_tol": 0.001},
    ]}
    assert scoring.score(spec, r"$\sqrt{\pi}$")
    assert scoring.score(spec, "about 1.772")
    assert not scoring.score(spec, r"$\sqrt{2\pi}$ ≈ 2.507")
    both = {"type": "all_of", "scorers": [
        {"type": "keywords", "any": ["fusion"]}, {"type": "keywords", "any": ["helium"]}]}
    assert scoring.score(both, "fusion into helium")
    assert not scoring.score(both, "fusion")


# --- spec validation and the unit reader --------------------------------------------------


@pytest.mark.parametrize("spec,fragment", [
    ({"type": "numeric"}, "value"),
    ({"type": "numeric", "value": 1, "unit": "furlongs/fortnight"}, "unknown unit"),
    ({"type": "keywords"}, "'all' or 'any'"),
    ({"type": "keywords", "any": ["("]}, "bad pattern"),
    ({"type": "texexpr", "targets": ["x"]}, "too short"),
    ({"type": "any_of", "scorers": []}, "scorers"),
    ({"type": "regex"}, "unknown scorer type"),
    ("numeric", "mapping"),
])
def test_malformed_specs_are_rejected_with_the_field_named(spec, fragment):
    with pytest.raises(scoring.ScorerError, match=fragment):
        scoring.build(spec)


def test_quantities_convert_to_si():
    (q,) = quantities.extract("H0 = 67.4 km s^-1 Mpc^-1")
    assert q.unit.dims == (0, 0, -1, 0, 0, 0)
    assert math.isclose(q.si, 67.4e3 / 3.0856775814913673e22, rel_tol=1e-9)
    (age,) = quantities.extract("13,8 mil millones de años")
    assert math.isclose(age.value, 13.8e9) and age.unit.text.endswith("yr")
    (mu0,) = quantities.extract(r"$\mu_0 = 4\pi\times10^{-7}$ H/m")
    assert math.isclose(mu0.si, 4e-7 * math.pi, rel_tol=1e-12)
    assert quantities.unit_from_spec("N m^2/C^2").dims == quantities.unit_from_spec("N·m²·C⁻²").dims
