"""What the teacher is asked, and the JSON shape its answer must have."""

from __future__ import annotations

import hashlib
import json

# Bump when the wording or the schema changes: cached answers to another version are not reused.
PROMPT_VERSION = "physics-qa-1"

SYSTEM = (
    "You are a physics professor writing exam questions with model answers. Each question must "
    "stand on its own: a physicist could ask it without having seen any paper. Never mention "
    "\"the paper\", \"the authors\", \"this work\", \"the text\" or \"we\". Answers are "
    "self-contained, correct and precise, a few sentences long; write mathematics in LaTeX "
    "($...$ inline, $$...$$ displayed) and give units for physical quantities."
)

USER = (
    "Read this arXiv paper and write {n} question-answer pairs.\n"
    "- {n_result} of kind \"result\": the physics the paper establishes or uses, asked as a general "
    "question (for example \"Why does ...\", \"How does ... scale with ...\", \"What sets ...\").\n"
    "- {n_concept} of kind \"concept\": a concept, law or method the paper relies on, explained as "
    "in a textbook.\n"
    "Ground every answer in the paper's content; do not copy the question into the answer.\n\n"
    "Title: {title}\n\n{text}"
)


def schema(n: int, max_question_chars: int, max_answer_chars: int) -> dict:
    """JSON schema for `{"pairs": [{"kind", "question", "answer"}, ...]}` (llama.cpp's server
    and vLLM both constrain generation with it)."""
    return {
        "type": "object",
        "properties": {
            "pairs": {
                "type": "array",
                "minItems": 1,
                "maxItems": n,
                "items": {
                    "type": "object",
                    "properties": {
                        "kind": {"type": "string", "enum": ["result", "concept"]},
                        "question": {"type": "string", "minLength": 1, "maxLength": max_question_chars},
                        "answer": {"type": "string", "minLength": 1, "maxLength": max_answer_chars},
                    },
                    "required": ["kind", "question", "answer"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["pairs"],
        "additionalProperties": False,
    }


def messages(title: str, text: str, n: int) -> list[dict]:
    n_concept = max(1, n // 3) if n > 1 else 0
    user = USER.format(n=n, n_result=n - n_concept, n_concept=n_concept, title=title, text=text)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def fingerprint(payload: dict) -> str:
    """A stable hash of a request's content (prompt version included)."""
    blob = json.dumps({"v": PROMPT_VERSION, **payload}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
