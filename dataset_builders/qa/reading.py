"""`reading-comprehension`: a paper's text followed by tasks mined from it by rules, in the
manner of AdaptLLM (arXiv 2309.09530), offline and deterministic.

A task's answer is taken out of the passage the model reads (a `[...]` marks where), so the
example practises recalling and reasoning, never copying:

* `definition`: a sentence that defines a term ("X is defined as ...", "... is called X") ->
  "What is X?" / "What is meant by X?";
* `consequence`: a sentence opened by a connector ("Therefore", "Thus", "Hence", "As a
  result", ...) -> "Given that <the sentence before>, what follows?";
* `ending`: the last sentence (usually the result) -> "How does the text conclude?";
* `title`: "Suggest a title for this text." -> the paper's title.
"""

from __future__ import annotations

import re

from ..contexts import copies_prompt
from ..records import Drop, Paper
from ..spec import Spec

_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z\\$(])")
_DEFINED = re.compile(r"^(?P<term>[^,;:]{3,80}?)\s+(?:is|are)\s+(?:defined as|known as|referred to as)\s+\S")
_CALLED = re.compile(r"\b(?:is|are)\s+(?:called|termed|dubbed|referred to as)\s+(?P<term>[^,.;:]{3,60})")
_CONNECTOR = re.compile(r"^(?:Therefore|Thus|Hence|Consequently|As a result|It follows that|This implies that|"
                        r"Accordingly)\b,?\s*(?P<rest>.+)$")
GAP = "[...]"


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SPLIT.split(" ".join(text.split())) if s.strip()]


def _lower_first(s: str) -> str:
    """`The gap` -> `the gap`; an acronym (`QCD`) keeps its case."""
    return s if s[:2].isupper() else s[:1].lower() + s[1:]


def mine(title: str, text: str) -> tuple[list[str], list[tuple[str, str, str]]]:
    """`(passage sentences with gaps, [(kind, question, answer), ...])`."""
    sents = sentences(text)
    held: dict[int, tuple[str, str, str]] = {}
    for i, s in enumerate(sents):
        m = _DEFINED.match(s)
        if m:
            term = m.group("term").strip()
            held[i] = ("definition", f"What is {_lower_first(term)}?", s)
            continue
        m = _CALLED.search(s)
        if m:
            held[i] = ("definition", f"What is meant by {m.group('term').strip()}?", s)
            continue
        m = _CONNECTOR.match(s)
        if m and i > 0 and (i - 1) not in held:
            rest = m.group("rest")
            premise = sents[i - 1].rstrip(".")
            held[i] = ("consequence", f"Given that {_lower_first(premise)}, what follows?",
                       rest[:1].upper() + rest[1:])
    last = len(sents) - 1
    if last >= 2 and last not in held:
        held[last] = ("ending", "How does the text conclude? Write its final sentence.", sents[last])
    for i in sorted(held)[len(sents) // 2:]:  # at least half of the passage stays to read
        del held[i]
    passage = [GAP if i in held else s for i, s in enumerate(sents)]
    tasks = [held[i] for i in sorted(held)] + [("title", "Suggest a title for this text.", title)]
    return passage, tasks


def render(spec: Spec, paper: Paper, bucket: int) -> list[dict] | Drop:
    passage, tasks = mine(paper.title, paper.abstract)
    if not passage:
        return Drop("no_text")
    intro = spec.options.get("intro", "Read this excerpt of a physics paper and answer the questions.")
    messages = [{"role": "system", "content": spec.system_prompt}] if spec.system_prompt else []
    shown = [" ".join(passage)]
    kinds: list[str] = []
    for kind, question, answer in tasks:
        if copies_prompt("\n".join(shown), answer):  # e.g. a title the abstract repeats
            continue
        user = f"{intro}\n\n{shown[0]}\n\n{question}" if not kinds else question
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        shown += [question, answer]
        kinds.append(kind)
    if not kinds:
        return Drop("answer_in_prompt")
    return [{"messages": messages, "id": paper.id, "template": "reading:" + "+".join(kinds)}]
