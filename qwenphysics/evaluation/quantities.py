"""Numbers with units in free text: ``299,792 km/s``, ``3×10^8 m s^-1``, ``3 \\times 10^{8}``.

:func:`extract` finds every number in an answer together with the unit written right after
it, converted to SI. Recognised spellings:

* mantissas: ``299792``; thousands grouped as ``299,792``, ``299 792`` (thin space) or
  ``300 000`` (plain spaces, groups of exactly three digits); ``9.81`` and the
  Spanish ``9,81``; a comma before ``×10^n`` is a decimal comma (``2,998×10^8``);
* powers of ten: ``e8``, ``× 10^8``, ``x10**8``, ``·10⁸``, ``\\times 10^{8}``, a bare ``10^8``;
* fractions ``1/137``, multiples of pi (``4π×10^-7``), and the words thousand, million,
  billion (10^9), trillion, mil millones (10^9), millones, billones (10^12);
* units: SI symbols with prefixes (``km``, ``MeV``, ``Mpc``, ``Gyr``), products and
  quotients (``N·m²/C²``, ``km/s/Mpc``, ``W m^-2 K^-4``), English and Spanish words
  (``metres per second``, ``metros por segundo``, ``solar masses``, ``años luz``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import cast

# dimension exponents: metre, kilogram, second, ampere, kelvin, mole
Dims = tuple[int, int, int, int, int, int]
DIMLESS: Dims = (0, 0, 0, 0, 0, 0)


def _d(m=0, kg=0, s=0, A=0, K=0, mol=0) -> Dims:
    return (m, kg, s, A, K, mol)


_J = _d(m=2, kg=1, s=-2)
UNITS: dict[str, tuple[float, Dims]] = {
    "m": (1.0, _d(m=1)),
    "g": (1e-3, _d(kg=1)),
    "s": (1.0, _d(s=1)),
    "A": (1.0, _d(A=1)),
    "K": (1.0, _d(K=1)),
    "mol": (1.0, _d(mol=1)),
    "N": (1.0, _d(m=1, kg=1, s=-2)),
    "J": (1.0, _J),
    "W": (1.0, _d(m=2, kg=1, s=-3)),
    "Pa": (1.0, _d(m=-1, kg=1, s=-2)),
    "C": (1.0, _d(s=1, A=1)),
    "V": (1.0, _d(m=2, kg=1, s=-3, A=-1)),
    "Ω": (1.0, _d(m=2, kg=1, s=-3, A=-2)),
    "T": (1.0, _d(kg=1, s=-2, A=-1)),
    "H": (1.0, _d(m=2, kg=1, s=-2, A=-2)),
    "Hz": (1.0, _d(s=-1)),
    "eV": (1.602176634e-19, _J),
    "erg": (1e-7, _J),
    "yr": (3.15576e7, _d(s=1)),
    "hr": (3600.0, _d(s=1)),
    "AU": (1.495978707e11, _d(m=1)),
    "ly": (9.4607304725808e15, _d(m=1)),
    "pc": (3.0856775814913673e16, _d(m=1)),
    "Msun": (1.98847e30, _d(kg=1)),
    "atm": (101325.0, _d(m=-1, kg=1, s=-2)),
    "bar": (1e5, _d(m=-1, kg=1, s=-2)),
    "ft": (0.3048, _d(m=1)),
    "Å": (1e-10, _d(m=1)),
}
PREFIXES = {
    "Y": 1e24, "Z": 1e21, "P": 1e15, "T": 1e12, "G": 1e9, "M": 1e6, "k": 1e3,
    "c": 1e-2, "m": 1e-3, "μ": 1e-6, "u": 1e-6, "n": 1e-9, "p": 1e-12, "f": 1e-15,
}
PREFIXABLE = {"m", "g", "s", "J", "eV", "W", "V", "A", "N", "Pa", "Hz", "T", "C", "K", "pc",
              "yr", "Ω", "H", "bar"}

# words and phrases rewritten to unit symbols before parsing (case-insensitive)
_PHRASES = [
    (r"solar\s+mass(?:es)?|masas?\s+solar(?:es)?|M_?\{?\s*(?:\\odot|⊙|☉|sun)\s*\}?|M⊙|M☉", "Msun"),
    (r"light[\s-]*years?|años?[\s-]+luz", "ly"),
    (r"electron[\s-]*volts?|electronvoltios?", "eV"),
    (r"astronomical\s+units?|unidades?\s+astron[oó]micas?", "AU"),
    (r"mega\s*parsecs?|megapársecs?", "Mpc"),
    (r"kil[oó]m[eé]t(?:re|er|ro)s?", "km"),
    (r"(?:metre|meter|metro)s?", "m"),
    (r"kilo(?:gram|gramo)s?", "kg"),
    (r"(?:gram|gramo)s?", "g"),
    (r"(?:second|segundo)s?", "s"),
    (r"kelvins?", "K"),
    (r"joules?|julios?", "J"),
    (r"newtons?", "N"),
    (r"watts?|vatios?", "W"),
    (r"volts?|voltios?", "V"),
    (r"teslas?", "T"),
    (r"coulombs?|culombios?", "C"),
    (r"amperes?|amperios?", "A"),
    (r"hertz", "Hz"),
    (r"pascals?", "Pa"),
    (r"ohms?|ohmios?", "Ω"),
    (r"pars[eé]cs?", "pc"),
    (r"henr(?:y|ies|ys|ios?)", "H"),
    (r"years?|años?", "yr"),
    (r"hours?|horas?", "hr"),
    (r"feet|foot", "ft"),
]
_PHRASE_RE = [(re.compile(r"(?<![A-Za-z])(?:" + p + r")(?![A-Za-z])", re.I), s) for p, s in _PHRASES]

_SUPER = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺", "0123456789-+")
_SUPER_RUN = re.compile(r"[⁻⁺]?[⁰¹²³⁴⁵⁶⁷⁸⁹]+")
_TEX_DROP = re.compile(
    r"\\(?:mathrm|textrm|text|mathit|operatorname|rm|left|right|displaystyle|mathring)\b|\$"
)
_TEX_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*([\d.]+)\s*\}\s*\{\s*([\d.]+)\s*\}")

_SEP = r"(?:,|\u2009|\u202f|\u00a0)"
_NUMBER = re.compile(
    r"(?<![\w.^])(?<!\^-)(?P<sign>-)?"
    r"(?P<mant>\d{1,3}(?: \d{3})+(?![\d.,])|\d{1,3}(?:" + _SEP + r"\d{3})+(?:\.\d+)?"
    r"|\d+(?:[.,]\d+)?|\.\d+)"
    r"(?P<pi>\s*π)?"
    r"(?:\s*/\s*(?P<den>\d+(?:\.\d+)?)(?![\d.,]))?"
    r"(?:\s*(?:×|x|X|\*|·)\s*10\s*(?:\^|\*\*)\s*(?P<exp>[-+]?\d+)"
    r"|[eE](?P<eexp>[-+]?\d+)"
    r"|\s*(?:\^|\*\*)\s*(?P<pow>[-+]?\d+))?"
    r"(?:\s+(?P<mult>mil\s+millones|millones|mill[oó]n|billones|bill[oó]n|thousand|million|"
    r"billion|trillion)(?![A-Za-z]))?"
)
_MULT = {"thousand": 1e3, "million": 1e6, "millones": 1e6, "millón": 1e6, "millon": 1e6,
         "billion": 1e9, "trillion": 1e12, "billones": 1e12, "billón": 1e12, "billon": 1e12}
_UNIT_WORD = re.compile(r"[A-Za-zμΩÅ]+")
_UNIT_EXP = re.compile(r"\s*(?:\^|\*\*)\s*(?P<e>[-+]?\d+)|(?P<e2>-?\d+)(?![\d.,])")
_POWER_WORD = re.compile(r"\s+(?P<w>squared|cubed|al\s+cuadrado|al\s+cubo)(?![A-Za-z])", re.I)
_OPERATOR = re.compile(r"\s*(?P<op>/|·|\*|\bper\b|\bpor\b)?\s*", re.I)


@dataclass(frozen=True)
class Unit:
    factor: float  # SI value of one of this unit
    dims: Dims
    text: str

    @property
    def dimensionless(self) -> bool:
        return self.dims == DIMLESS


@dataclass(frozen=True)
class Quantity:
    value: float  # in the written unit
    unit: Unit | None

    @property
    def si(self) -> float:
        return self.value * (self.unit.factor if self.unit else 1.0)


def prepare(text: str) -> str:
    """Strip TeX markup and Unicode exponents so that the patterns above see plain text."""
    text = text.replace("−", "-").replace("–", "-")
    text = _TEX_FRAC.sub(r"\1/\2", text)
    text = _TEX_DROP.sub(" ", text)
    for cmd, rep in ((r"\times", "×"), (r"\cdot", "·"), (r"\pi", "π"), (r"\mu", "μ"),
                     (r"\Omega", "Ω"), (r"\AA", "Å"), (r"\odot", "⊙"), (r"\approx", "≈"),
                     (r"\sim", "≈"), (r"\%", "%"), (r"\,", " "), (r"\;", " "), (r"\ ", " "),
                     (r"\!", ""), ("{,}", ","), ("~", " ")):
        text = text.replace(cmd, rep)
    text = _SUPER_RUN.sub(lambda m: "^" + m.group(0).translate(_SUPER), text)
    text = text.replace("{", "").replace("}", "")
    for pattern, symbol in _PHRASE_RE:
        text = pattern.sub(symbol, text)
    return text


def _lookup(symbol: str) -> tuple[float, Dims] | None:
    if symbol in UNITS:
        return UNITS[symbol]
    prefix, base = symbol[:1], symbol[1:]
    if prefix in PREFIXES and base in PREFIXABLE:
        factor, dims = UNITS[base]
        return PREFIXES[prefix] * factor, dims
    return None


def parse_unit(text: str, pos: int = 0) -> tuple[Unit | None, int]:
    """Read a unit expression starting at text[pos]; returns (unit or None, end position)."""
    factor, dims = 1.0, [0] * 6
    end, found = pos, False
    first = True
    while True:
        m = _OPERATOR.match(text, end)
        assert m is not None  # every part of _OPERATOR is optional: it matches anywhere
        op = (m.group("op") or "").lower()
        if first and op:
            break  # a unit cannot start with an operator
        j = m.end()
        if first and text[j : j + 3].lower() == "de ":  # Spanish "13,8 mil millones de años"
            j += 3
        w = _UNIT_WORD.match(text, j)
        if not w:
            break
        looked = _lookup(w.group(0))
        if looked is None:
            break
        k = w.end()
        power = 1
        e = _UNIT_EXP.match(text, k)
        if e:
            power, k = int(e.group("e") or e.group("e2")), e.end()
        else:
            pw = _POWER_WORD.match(text, k)
            if pw:
                power = 3 if pw.group("w").lower() in ("cubed", "al cubo") else 2
                k = pw.end()
        if op in ("/", "per", "por"):
            power = -power
        f, d = looked
        factor *= f**power
        dims = [a + b * power for a, b in zip(dims, d)]
        end, found, first = k, True, False
    if not found:
        return None, pos
    return Unit(factor, cast(Dims, tuple(dims)), text[pos:end].strip()), end


def unit_from_spec(spec: str) -> Unit:
    """Parse a unit written in a question file; the whole string must be a unit."""
    text = prepare(spec)
    unit, end = parse_unit(text)
    if unit is None or text[end:].strip():
        raise ValueError(f"unknown unit {spec!r}")
    return unit


_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def _mantissa(raw: str, has_exponent: bool) -> float:
    """A comma groups thousands (299,792) unless it is a decimal comma (9,81; 2,998×10^8)."""
    for space in (" ", "\u2009", "\u202f", "\u00a0"):
        raw = raw.replace(space, "")
    if "," in raw:
        single = raw.count(",") == 1 and "." not in raw
        if _THOUSANDS.fullmatch(raw) and not (single and has_exponent):
            raw = raw.replace(",", "")
        elif single:
            raw = raw.replace(",", ".")
        else:
            raw = raw.replace(",", "")
    return float(raw)


def extract(text: str) -> list[Quantity]:
    """Every number in the text with the unit written right after it (if any)."""
    text = prepare(text)
    out: list[Quantity] = []
    pos = 0
    while True:
        m = _NUMBER.search(text, pos)
        if not m:
            return out
        has_exp = bool(m.group("exp") or m.group("eexp"))
        value = _mantissa(m.group("mant"), has_exp)
        if m.group("pi"):
            value *= math.pi
        if m.group("den"):
            den = float(m.group("den"))
            value = value / den if den else value
        if m.group("exp"):
            value *= 10.0 ** int(m.group("exp"))
        elif m.group("eexp"):
            value *= 10.0 ** int(m.group("eexp"))
        elif m.group("pow"):
            try:
                value = float(Fraction(value) ** int(m.group("pow")))
            except (OverflowError, ZeroDivisionError):
                value = math.inf
        if m.group("mult"):
            word = re.sub(r"\s+", " ", m.group("mult").lower())
            value *= 1e9 if word == "mil millones" else _MULT[word]
        if m.group("sign"):
            value = -value
        unit, end = parse_unit(text, m.end())
        out.append(Quantity(value, unit))
        pos = max(end, m.end())
        if pos == m.start():
            pos += 1
