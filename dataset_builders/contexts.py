"""Training contexts over metadata: a Paper becomes one or more JSONL examples.

* chat: `{"messages": [...], "id": ..., "template": ...}` for Axolotl's `chat_template` type
* completion: `{"text": ..., "id": ...}` for Axolotl's `completion` type
"""

from __future__ import annotations

import string

import orjson

from . import taxonomy
from .normalize import authors_to_unicode, lead
from .records import InputError, Paper
from .spec import Spec


_GETTERS = {
    "primary_category": lambda p: p.primary,
    "primary_category_name": lambda p: taxonomy.human_name(p.primary),
    "categories": lambda p: ", ".join(p.categories),
    "authors": lambda p: authors_to_unicode(p.authors),
    "abstract_lead": lambda p: lead(p.abstract),
    "year": lambda p: (p.created or "")[:4],
    "license": lambda p: p.license or "arXiv non-exclusive licence",
}


class Fields(dict):
    """Placeholders for templates, computed on first use."""

    def __init__(self, paper: Paper):
        super().__init__(id=paper.id, title=paper.title, abstract=paper.abstract)
        self.paper = paper

    def __missing__(self, key: str) -> str:
        p = self.paper
        get = _GETTERS.get(key)
        if get is not None:
            v = get(p)
        elif key in p.extra:
            v = p.extra[key]
        else:
            raise KeyError(key)
        self[key] = v
        return v


PLACEHOLDERS = ("id", "title", "abstract", "abstract_lead", "authors", "primary_category",
                "primary_category_name", "categories", "year", "license")


def _texts(spec: Spec) -> list[tuple[str, str]]:
    texts = [(t.id, t.user) for t in spec.templates] + [(t.id, t.assistant) for t in spec.templates]
    if spec.format == "completion":
        texts.append(("text", spec.text))
    return texts


def _names(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def placeholders_used(spec: Spec) -> set[str]:
    return set().union(*(_names(text) for _, text in _texts(spec)))


def check_templates(spec: Spec) -> None:
    """Fail early, with the template's id, on a placeholder no paper can fill."""
    allowed = set(PLACEHOLDERS) | set(spec.options.get("extra_placeholders", []))
    for tid, text in _texts(spec):
        for _, field_name, _, _ in string.Formatter().parse(text):
            if field_name and field_name not in allowed:
                raise InputError(f"spec {spec.name}: template '{tid}' uses unknown placeholder "
                                 f"{{{field_name}}}; available: {', '.join(sorted(allowed))}")


def render(spec: Spec, paper: Paper, bucket: int) -> list[dict]:
    f = Fields(paper)
    if spec.format == "completion":
        return [{"text": spec.text.format_map(f), "id": paper.id}]
    n = len(spec.templates)
    # deterministic rotation by the paper's bucket
    return [chat_example(spec, spec.templates[(bucket + k) % n], f, paper.id) for k in range(spec.templates_per_paper)]


def chat_example(spec: Spec, t, fields: dict, paper_id: str) -> dict:
    """One chat line: optional system prompt, the template's user and assistant turns."""
    messages = []
    if spec.system_prompt:
        messages.append({"role": "system", "content": spec.system_prompt})
    messages.append({"role": "user", "content": t.user.format_map(fields)})
    messages.append({"role": "assistant", "content": t.assistant.format_map(fields)})
    return {"messages": messages, "id": paper_id, "template": t.id}


def line_renderer(spec: Spec):
    """`(paper, bucket) -> (pieces, n)`: the JSONL lines of `render`'s n examples as byte
    pieces whose concatenation equals `orjson.dumps(example) + b"\\n"` for each example in turn,
    assembled from pre-serialised parts (no per-example dicts, no copies until the caller joins
    a whole block)."""
    dumps = orjson.dumps
    if spec.format == "completion":
        text = spec.text

        def completion(paper: Paper, bucket: int) -> tuple[list[bytes], int]:
            return [b'{"text":', dumps(text.format_map(Fields(paper))), b',"id":', dumps(paper.id), b"}\n"], 1

        return completion
    head = b'{"messages":['
    if spec.system_prompt:
        head += dumps({"role": "system", "content": spec.system_prompt}) + b","
    head += b'{"role":"user","content":'
    mid = b'},{"role":"assistant","content":'
    basic = {"id", "title", "abstract"}
    templates = []
    for t in spec.templates:
        extra = (_names(t.user) | _names(t.assistant)) - basic
        # the fields beyond id/title/abstract that this template needs, computed eagerly
        # (None: a placeholder only the lazy Fields can fill, e.g. extra_placeholders)
        getters = None if extra - _GETTERS.keys() else tuple((name, _GETTERS[name]) for name in sorted(extra))
        templates.append((t.user, t.assistant, b',"template":' + dumps(t.id) + b"}\n", getters))
    n, k = len(templates), spec.templates_per_paper

    def chat(paper: Paper, bucket: int) -> tuple[list[bytes], int]:
        tail_id = b'}],"id":' + dumps(paper.id)
        out = []
        for j in range(k):
            user, assistant, tail, getters = templates[(bucket + j) % n]
            if getters is None:
                f = Fields(paper)
            else:
                f = {"id": paper.id, "title": paper.title, "abstract": paper.abstract}
                for name, get in getters:
                    f[name] = get(paper)
            out += (head, dumps(user.format_map(f)), mid, dumps(assistant.format_map(f)), tail_id, tail)
        return out, k

    return chat
