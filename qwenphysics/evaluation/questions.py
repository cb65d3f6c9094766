"""The physics question set: loading and validation.

The default set ships as ``physics_qa.yml`` next to this module; ``--questions`` points the
evaluator at another file of the same shape (see the header of that file).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import scoring

DEFAULT_PATH = Path(__file__).with_name("physics_qa.yml")
CATEGORIES = (
    "mechanics",
    "electromagnetism",
    "thermodynamics",
    "quantum",
    "relativity",
    "astrophysics",
    "condensed_matter",
    "mathematical_physics",
)
LANGUAGES = ("en", "es")
_ID = re.compile(r"[a-z0-9][a-z0-9-]*")


class QuestionSetError(ValueError):
    """The question file is malformed; the message names the file and the question."""


@dataclass
class Question:
    id: str
    category: str
    language: str
    question: str
    reference: str
    scorer: dict
    seed: bool = False
    wrong: list[str] = field(default_factory=list)

    def score(self, answer: str) -> bool:
        return scoring.build(self.scorer)(answer or "")


@dataclass
class QuestionSet:
    path: Path
    sha256: str
    questions: list[Question]

    @property
    def categories(self) -> list[str]:
        return sorted({q.category for q in self.questions})

    def select(self, categories: list[str] | None = None, limit: int | None = None) -> list[Question]:
        chosen = [q for q in self.questions if not categories or q.category in categories]
        return chosen[:limit] if limit else chosen


def _fail(path: Path, where: str, msg: str) -> QuestionSetError:
    return QuestionSetError(f"{path.name}: {where}: {msg}")


def load(path: str | Path | None = None) -> QuestionSet:
    """Load and validate a question file (the shipped set when path is None)."""
    path = Path(path) if path else DEFAULT_PATH
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise QuestionSetError(f"cannot read question file {path}: {exc.strerror}") from None
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise QuestionSetError(f"{path.name}: not valid YAML ({str(exc).splitlines()[0]})") from None
    items = doc.get("questions") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not items:
        raise _fail(path, "top level", "expected a mapping with a non-empty 'questions' list")
    questions: list[Question] = []
    seen: set[str] = set()
    for n, item in enumerate(items, 1):
        where = f"question #{n}"
        if not isinstance(item, dict):
            raise _fail(path, where, "must be a mapping")
        qid = item.get("id")
        if not isinstance(qid, str) or not _ID.fullmatch(qid):
            raise _fail(path, where, "'id' must be a lower-case slug like 'mech-pendulum'")
        where = f"question {qid!r}"
        if qid in seen:
            raise _fail(path, where, "duplicate id")
        seen.add(qid)
        for key in ("question", "reference"):
            if not isinstance(item.get(key), str) or not item[key].strip():
                raise _fail(path, where, f"'{key}' must be a non-empty string")
        if item.get("category") not in CATEGORIES:
            raise _fail(path, where, f"'category' must be one of {', '.join(CATEGORIES)}")
        language = item.get("language", "en")
        if language not in LANGUAGES:
            raise _fail(path, where, f"'language' must be one of {', '.join(LANGUAGES)}")
        wrong = item.get("wrong") or []
        if not isinstance(wrong, list) or not all(isinstance(w, str) for w in wrong):
            raise _fail(path, where, "'wrong' must be a list of strings")
        try:
            scoring.build(item.get("scorer"))
        except scoring.ScorerError as exc:
            raise _fail(path, where, str(exc)) from None
        questions.append(
            Question(
                id=qid,
                category=item["category"],
                language=language,
                question=item["question"].strip(),
                reference=item["reference"].strip(),
                scorer=item["scorer"],
                seed=bool(item.get("seed", False)),
                wrong=list(wrong),
            )
        )
    return QuestionSet(path=path, sha256=hashlib.sha256(raw).hexdigest(), questions=questions)
