"""Training contexts over metadata: a Paper becomes one or more JSONL examples.

* chat: `{"messages": [...], "id": ..., "template": ...}` for Axolotl's `chat_template` type
* completion: `{"text": ..., "id": ...}` for Axolotl's `completion` type
"""

from __future__ import annotations

from . import taxonomy
from .normalize import authors_to_unicode, lead
from .records import InputError, Paper
from .spec import Spec


class Fields(dict):
    """Placeholders for templates, computed on first use."""

    def __init__(self, paper: Paper):
        super().__init__(id=paper.id, title=paper.title, abstract=paper.abstract)
        self.paper = paper

    def __missing__(self, key: str) -> str:
        p = self.paper
        if key == "primary_category":
            v = p.primary
        elif key == "primary_category_name":
            v = taxonomy.human_name(p.primary)
        elif key == "categories":
            v = ", ".join(p.categories)
        elif key == "authors":
            v = authors_to_unicode(p.authors)
        elif key == "abstract_lead":
            v = lead(p.abstract)
        elif key == "year":
            v = (p.created or "")[:4]
        elif key == "license":
            v = p.license or "arXiv non-exclusive licence"
        elif key in p.extra:
            v = p.extra[key]
        else:
            raise KeyError(key)
        self[key] = v
        return v


PLACEHOLDERS = ("id", "title", "abstract", "abstract_lead", "authors", "primary_category",
                "primary_category_name", "categories", "year", "license")


def check_templates(spec: Spec) -> None:
    """Fail early, with the template's id, on a placeholder no paper can fill."""
    import string

    allowed = set(PLACEHOLDERS) | set(spec.options.get("extra_placeholders", []))
    texts = [(t.id, t.user) for t in spec.templates] + [(t.id, t.assistant) for t in spec.templates]
    if spec.format == "completion":
        texts.append(("text", spec.text))
    for tid, text in texts:
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
