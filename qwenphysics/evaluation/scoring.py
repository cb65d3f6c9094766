"""Scorers: decide whether a free-text answer is right, from a small declarative spec.

Every question in the question set carries a ``scorer`` mapping; :func:`build` turns it into
a function ``answer -> bool``. Types:

``numeric``
    ``value``, optional ``unit`` (e.g. ``m/s``), ``rel_tol`` (default 0.02), ``abs_tol``
    (default 0). Right when some number in the answer equals the value within tolerance;
    a number followed by a unit is converted first, and a unit of another dimension
    disqualifies it. A bare number is read in the question's unit.
``keywords``
    ``all`` / ``any`` / ``none``: lists of case-insensitive regular expressions, matched
    against the answer with accents folded (``energía`` matches ``energia``). Right when
    every ``all`` pattern, at least one ``any`` pattern (if given) and no ``none`` pattern
    match.
``texexpr``
    ``targets``: formulas in TeX or plain text. Right when one of them appears in the answer
    after :mod:`~qwenphysics.evaluation.texnorm` normalisation.
``any_of`` / ``all_of``
    ``scorers``: a list of the above; right when any / all of them accept.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable

from . import quantities, texnorm

Scorer = Callable[[str], bool]
TYPES = ("numeric", "keywords", "texexpr", "any_of", "all_of")


class ScorerError(ValueError):
    """A scorer spec is malformed; the message names the field."""


def fold(text: str) -> str:
    """Lower-case, strip accents, straighten quotes: the form keyword patterns see."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    return text.replace("’", "'").replace("‘", "'").casefold()


def _close(a: float, b: float, rel_tol: float, abs_tol: float) -> bool:
    return math.isfinite(a) and abs(a - b) <= max(rel_tol * abs(b), abs_tol)


def _numeric(spec: dict) -> Scorer:
    try:
        value = float(spec["value"])
    except (KeyError, TypeError, ValueError):
        raise ScorerError("numeric scorer needs a number in 'value'") from None
    rel_tol = float(spec.get("rel_tol", 0.02))
    abs_tol = float(spec.get("abs_tol", 0.0))
    if rel_tol < 0 or abs_tol < 0:
        raise ScorerError("numeric scorer: tolerances must be >= 0")
    unit = None
    if spec.get("unit"):
        try:
            unit = quantities.unit_from_spec(str(spec["unit"]))
        except ValueError as exc:
            raise ScorerError(f"numeric scorer: {exc}") from None
    target_si = value * unit.factor if unit else value

    def score(answer: str) -> bool:
        for q in quantities.extract(answer):
            if q.unit is None:
                ok = _close(q.value, value, rel_tol, abs_tol)
            elif unit is None:
                ok = q.unit.dimensionless and _close(q.si, value, rel_tol, abs_tol)
            elif q.unit.dims == unit.dims:
                ok = _close(q.si, target_si, rel_tol, abs_tol * unit.factor)
            else:
                ok = False
            if ok:
                return True
        return False

    return score


def _patterns(spec: dict, key: str) -> list[re.Pattern]:
    raw = spec.get(key) or []
    if not isinstance(raw, list) or not all(isinstance(p, str) and p for p in raw):
        raise ScorerError(f"keywords scorer: '{key}' must be a list of non-empty strings")
    out = []
    for p in raw:
        try:
            out.append(re.compile(fold(p), re.IGNORECASE))
        except re.error as exc:
            raise ScorerError(f"keywords scorer: bad pattern {p!r}: {exc}") from None
    return out


def _keywords(spec: dict) -> Scorer:
    all_, any_, none = (_patterns(spec, k) for k in ("all", "any", "none"))
    if not all_ and not any_:
        raise ScorerError("keywords scorer needs 'all' or 'any' patterns")

    def score(answer: str) -> bool:
        text = fold(answer)
        return (
            all(p.search(text) for p in all_)
            and (not any_ or any(p.search(text) for p in any_))
            and not any(p.search(text) for p in none)
        )

    return score


def _texexpr(spec: dict) -> Scorer:
    targets = spec.get("targets")
    if not isinstance(targets, list) or not targets:
        raise ScorerError("texexpr scorer needs a non-empty 'targets' list")
    normalized = []
    for t in targets:
        tokens = texnorm.normalize(str(t))
        if len(tokens) < 2:
            raise ScorerError(f"texexpr scorer: target {t!r} is too short to match honestly")
        normalized.append(tokens)

    def score(answer: str) -> bool:
        tokens = texnorm.normalize(answer)
        return any(texnorm.contains(tokens, t) for t in normalized)

    return score


def build(spec: dict | None) -> Scorer:
    """A function answer -> bool from a scorer spec (raises ScorerError when malformed)."""
    if not isinstance(spec, dict):
        raise ScorerError("scorer must be a mapping with a 'type'")
    kind = spec.get("type")
    if kind == "numeric":
        return _numeric(spec)
    if kind == "keywords":
        return _keywords(spec)
    if kind == "texexpr":
        return _texexpr(spec)
    if kind in ("any_of", "all_of"):
        subs = spec.get("scorers")
        if not isinstance(subs, list) or not subs:
            raise ScorerError(f"{kind} scorer needs a non-empty 'scorers' list")
        built = [build(s) for s in subs]
        combine = any if kind == "any_of" else all
        return lambda answer: combine(s(answer) for s in built)
    raise ScorerError(f"unknown scorer type {kind!r} (one of: {', '.join(TYPES)})")


def score(spec: dict, answer: str) -> bool:
    return build(spec)(answer or "")
