"""From the teacher's JSON to training examples: parse, then filter every pair, each drop
counted under its reason.

Reasons (in the order they are tried): `unparseable_output` (the whole answer), then per pair
`too_short` / `too_long`, `refers_to_paper` (the question or answer points at "this paper",
"the authors", ...: a user never has the paper), `answer_in_question`, `ungrounded` (fewer
than `min_grounding` of the answer's key terms occur in the paper's text), `duplicate_question`
(the same question, spacing and case aside, earlier in the build) and `near_duplicate` (most
of its words shared with an earlier question of the same paper), `contaminated` (overlaps the
evaluation questions).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass

from ..contamination import fold
from ..contexts import copies_prompt

_REFERS_BOTH = re.compile(
    r"\b(?:this|the present|the above|the given|the following|the current|our)\s+"
    r"(?:paper|work|study|article|manuscript|letter|abstract|text|passage|analysis|research)\b"
    r"|\bthe authors?\b|\bin the paper\b|\bthe paper\b", re.IGNORECASE)
_REFERS_QUESTION = re.compile(r"\b(?:we|our|us)\b", re.IGNORECASE)
_TERM = re.compile(r"[A-Za-z]{5,}")
_WORD = re.compile(r"\w+")
_STOP = frozenset("""
about above after again against along also although among another anything around based
because become becomes been before being below between beyond both called cannot could
different does doing during each either enough especially every example first following
found further given gives going having however important instead itself known large
larger later least little longer makes making many might model models more most much
must namely never often other others otherwise over particular perhaps possible rather
really result results same second several shall should show shown shows similar since
small smaller some something still such than that their them then there therefore these
they thing things third this those though three through thus together under until upon
used using usually value values very what when where whether which while whose will with
within without would yield""".split())


@dataclass
class PairRules:
    min_question_chars: int = 15
    max_question_chars: int = 400
    min_answer_chars: int = 40
    max_answer_chars: int = 2500
    min_grounding: float = 0.3  # share of the answer's key terms found in the paper's text
    near_duplicate: float = 0.7  # word-set Jaccard with an earlier question of the same paper

    @classmethod
    def from_options(cls, options: dict) -> PairRules:
        known = cls.__dataclass_fields__
        return cls(**{k: type(getattr(cls, k))(v) for k, v in (options or {}).items() if k in known})


def parse(text: str | None) -> list[dict] | None:
    """The teacher's pairs, or None when its answer is not the JSON the schema asks for."""
    try:
        data = json.loads(text or "")
    except ValueError:
        return None
    pairs = data.get("pairs") if isinstance(data, dict) else None
    if not isinstance(pairs, list) or not pairs:
        return None
    out = []
    for p in pairs:
        if not (isinstance(p, dict) and isinstance(p.get("question"), str) and isinstance(p.get("answer"), str)):
            return None
        out.append({"kind": p.get("kind") if p.get("kind") in ("result", "concept") else "result",
                    "question": p["question"].strip(), "answer": p["answer"].strip()})
    return out


def _stem(word: str) -> str:
    return word.lower()[:6]


def grounding(answer: str, source_stems: set[str]) -> float | None:
    """Share of the answer's key terms (words of 5+ letters, common words aside) whose stem
    occurs in the source; None when the answer has fewer than 3 key terms."""
    terms = {_stem(w) for w in _TERM.findall(answer) if w.lower() not in _STOP}
    if len(terms) < 3:
        return None
    return len(terms & source_stems) / len(terms)


class PairFilter:
    """Stateful over a build (duplicate questions are looked up across papers)."""

    def __init__(self, rules: PairRules, contaminated):
        self.rules = rules
        self.contaminated = contaminated
        self.seen: set[bytes] = set()

    def reason(self, pair: dict, source_stems: set[str], earlier: list[set[str]]) -> str | None:
        r, q, a = self.rules, pair["question"], pair["answer"]
        if len(q) < r.min_question_chars or len(a) < r.min_answer_chars:
            return "too_short"
        if len(q) > r.max_question_chars or len(a) > r.max_answer_chars:
            return "too_long"
        if _REFERS_BOTH.search(q) or _REFERS_BOTH.search(a) or _REFERS_QUESTION.search(q):
            return "refers_to_paper"
        if copies_prompt(q, a):
            return "answer_in_question"
        g = grounding(a, source_stems)
        if g is not None and g < r.min_grounding:
            return "ungrounded"
        key = fold(q)
        if key in self.seen:
            return "duplicate_question"
        words = set(_WORD.findall(q.lower()))
        for other in earlier:
            union = words | other
            if union and len(words & other) / len(union) >= r.near_duplicate:
                return "near_duplicate"
        if self.contaminated(q) or self.contaminated(a):
            return "contaminated"
        self.seen.add(key)
        earlier.append(words)
        return None

    def examples(self, pairs: list[dict], source: str, paper_id: str, system_prompt: str | None,
                 dropped: Counter) -> list[dict]:
        stems = {_stem(w) for w in _TERM.findall(source)}
        earlier: list[set[str]] = []
        out = []
        for pair in pairs:
            why = self.reason(pair, stems, earlier)
            if why:
                dropped[why] += 1
                continue
            messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
            messages += [{"role": "user", "content": pair["question"]},
                         {"role": "assistant", "content": pair["answer"]}]
            out.append({"messages": messages, "id": paper_id, "template": f"qa_{pair['kind']}"})
        return out
