"""Decontamination: no training example may overlap the evaluation questions.

An example is `contaminated` when its text contains a run of `NGRAM` words (or a whole
question, when the question is shorter) taken from an evaluation question or its reference
answer (`qwenphysics/evaluation/physics_qa.yml`, plus any files a spec adds under
`decontaminate:`). Text is compared lower-cased, without ASCII punctuation, with hyphens,
slashes and runs of whitespace read as one space, so line breaks, a question mark or a comma
do not hide a copy.
The search is one Aho-Corasick pass over the bytes (`ahocorasick_rs`), whatever the number
of n-grams.
"""

from __future__ import annotations

import json
import string
from bisect import bisect_right
from pathlib import Path

import ahocorasick_rs
import yaml

from qwenphysics.core.paths import EVALUATION_QUESTIONS

from .records import InputError

NGRAM = 8
MIN_WORDS = 4  # a shorter question ("What is light?") is too common a phrase to flag

_SPACE = set(string.whitespace) | set("-/")  # word separators
_FOLD = bytes(c + 32 if 65 <= c <= 90 else 32 if chr(c) in _SPACE else c for c in range(256))
_DELETE = "".join(c for c in string.punctuation if c not in _SPACE).encode()


def fold(text: str) -> bytes:
    """Lower-case ASCII, other ASCII punctuation deleted, words separated by one space,
    framed by spaces (`"Zeta-function?"` -> `b" zeta function "`). One C pass for most texts."""
    y = text.encode("utf-8", "replace").translate(_FOLD, _DELETE)
    if b"  " in y:
        y = b" ".join(y.split())
    return b" " + y.strip() + b" "


def ngrams(text: str, n: int = NGRAM) -> set[bytes]:
    words = fold(text).split()
    if len(words) < MIN_WORDS:
        return set()
    n = min(n, len(words))
    return {b" " + b" ".join(words[i:i + n]) + b" " for i in range(len(words) - n + 1)}


def _texts_of(path: Path) -> list[str]:
    """Questions and reference answers of a question file (the project's YAML, or JSONL with
    `question` / `reference` / `answer` fields)."""
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"decontaminate: cannot read {path} ({e.strerror})") from None
    if path.suffix in (".yml", ".yaml"):
        items = (yaml.safe_load(raw) or {}).get("questions") or []
    else:
        items = [json.loads(line) for line in raw.splitlines() if line.strip()]
    texts = []
    for q in items:
        if isinstance(q, dict):
            texts += [str(q[k]) for k in ("question", "reference", "answer") if q.get(k)]
    return texts


class Contamination:
    """`check(text) -> bool`: True when `text` overlaps a protected question or answer."""

    def __init__(self, sources: list[Path]):
        self.sources = sources
        grams: set[bytes] = set()
        for path in sources:
            for text in _texts_of(path):
                grams |= ngrams(text)
        self.size = len(grams)
        self._ac = (ahocorasick_rs.BytesAhoCorasick(sorted(grams), implementation=ahocorasick_rs.Implementation.DFA)
                    if grams else None)

    def check(self, text: str) -> bool:
        ac = self._ac
        return ac is not None and bool(ac.find_matches_as_indexes(fold(text)))

    def check_folded(self, folded: bytearray, starts: list[int]) -> set[int]:
        """Indices of the texts that overlap, given the `fold`ed texts one after another in
        `folded` (each ends with the space `fold` puts there, so no pattern spans two) and
        where each starts: one search over all of them (a call per text would cost more than
        the search itself)."""
        ac = self._ac
        if ac is None or not starts:
            return set()
        hits = ac.find_matches_as_indexes(folded)
        return {bisect_right(starts, start) - 1 for _, start, _ in hits}

    def describe(self) -> dict:
        return {"ngram_words": NGRAM, "min_question_words": MIN_WORDS, "ngrams": self.size,
                "sources": [str(p) for p in self.sources]}


def sources_for(setting, spec_path: Path | None) -> list[Path]:
    """A spec's `decontaminate:` (true: the evaluation questions; false: off; a list of
    `evaluation` and/or file paths, relative to the spec) as the files to read."""
    if setting is False:
        return []
    if setting is None or setting is True:
        return [EVALUATION_QUESTIONS]
    if not isinstance(setting, list):
        raise InputError("decontaminate: true, false, or a list of `evaluation` and question files")
    out = []
    for item in setting:
        if item == "evaluation":
            out.append(EVALUATION_QUESTIONS)
            continue
        p = Path(str(item))
        if not p.is_absolute() and spec_path is not None:
            p = spec_path.parent / p
        if not p.is_file():
            raise InputError(f"decontaminate: question file {p} not found")
        out.append(p)
    return out


_CACHE: dict[tuple, Contamination] = {}


def for_spec(spec) -> Contamination:
    """The checker of a spec (built once per process and list of files)."""
    key = tuple(sources_for(spec.raw.get("decontaminate"), spec.path))
    if key not in _CACHE:
        _CACHE[key] = Contamination(list(key))
    return _CACHE[key]
