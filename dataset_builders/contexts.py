"""Training contexts over metadata: a Paper becomes one or more JSONL examples.

* chat: `{"messages": [...], "id": ..., "template": ...}` for Axolotl's `chat_template` type
* completion: `{"text": ..., "id": ...}` for Axolotl's `completion` type

Every example is screened before it is written, in every context (`screen`):
* `answer_in_prompt`: an assistant turn whose text (case and spacing aside) is already in the
  turns before it teaches copying, not physics: the example is dropped;
* `contaminated`: an example that overlaps the evaluation questions (`contamination`) drops
  its whole paper; in the template contexts the paper's title and abstract are what is
  checked (once per paper, before its examples).
A paper left with no example is dropped under the reason of its last example.
"""

from __future__ import annotations

import string
from collections import Counter

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
    "abstract_opening": lambda p: lead(p.abstract, 1),
    "abstract_rest": lambda p: p.abstract[len(lead(p.abstract, 1)):].strip(),
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


PLACEHOLDERS = ("id", "title", "abstract", "abstract_lead", "abstract_opening", "abstract_rest",
                "authors", "primary_category", "primary_category_name", "categories", "year",
                "license")


def _flat(text: str) -> str:
    """Case-folded, every run of whitespace one space (as `" ".join(text.split())`)."""
    t = text.replace("\n", " ").replace("\t", " ")
    if not t.isprintable():  # other whitespace (NBSP, thin spaces, CR, ...): the general way
        return " ".join(text.split()).casefold()
    while "  " in t:
        t = t.replace("  ", " ")
    return t.strip(" ").casefold()


def copies_prompt(prompt: str, answer: str) -> bool:
    """True when `answer`, compared without case and spacing differences (and a final full
    stop), is contained in `prompt`."""
    # cheap refusals first: title -> abstract (the common case) stops at the length test
    if len(answer) > 2 * len(prompt) + 1:  # flattening at most halves a text: cannot fit
        return False
    words = answer.split()
    if not words:
        return False
    if max(words, key=len).rstrip(".").casefold() not in prompt.casefold():  # a word the answer needs is absent
        return False
    a = _flat(answer).rstrip(" .")
    return bool(a) and a in _flat(prompt)


def screen_messages(messages: list[dict], check) -> str | None:
    """Why a chat example must not be written (or None): `empty_answer`, `answer_in_prompt`
    (an assistant turn already contained in the user and assistant turns before it) or
    `contaminated` (`check` is a Contamination's check)."""
    before: list[str] = []
    for m in messages:
        role, content = m["role"], m["content"]
        if role == "system":
            continue
        if role == "assistant":
            if not content.strip():
                return "empty_answer"
            if copies_prompt("\n".join(before), content):
                return "answer_in_prompt"
        before.append(content)
    if any(check(m["content"]) for m in messages if m["role"] != "system"):
        return "contaminated"
    return None


def screen(examples: list[dict], check) -> tuple[list[dict], str | None, Counter]:
    """`(kept, paper_drop_reason, example_drops)`: the examples that may be written; the reason
    the paper is dropped (a contaminated example, or none left); the other examples dropped,
    by reason."""
    kept: list[dict] = []
    dropped: Counter[str] = Counter()
    for ex in examples:
        if "messages" in ex:
            reason = screen_messages(ex["messages"], check)
        else:
            text = ex.get("text", "")
            reason = "empty_text" if not text.strip() else "contaminated" if check(text) else None
        if reason == "contaminated":
            return [], reason, Counter()
        if reason:
            dropped[reason] += 1
        else:
            kept.append(ex)
    if not kept and dropped:
        last = next(reversed(dropped))
        dropped[last] -= 1
        return [], last, +dropped
    return kept, None, dropped


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
    """The examples a paper becomes under a metadata spec, unscreened (`render_screened` is
    what builds write)."""
    f = Fields(paper)
    if spec.format == "completion":
        return [{"text": spec.text.format_map(f), "id": paper.id}]
    n = len(spec.templates)
    # deterministic rotation by the paper's bucket
    return [chat_example(spec, spec.templates[(bucket + k) % n], f, paper.id) for k in range(spec.templates_per_paper)]


def render_screened(spec: Spec, paper: Paper, bucket: int, check) -> tuple[list[dict], str | None, Counter]:
    """`screen`'s result for a metadata spec, with one difference: a template whose example is
    screened out (say, a one-sentence abstract leaves `{abstract_rest}` empty) gives way to the
    next template of the rotation, so the paper still gets `templates_per_paper` examples
    when the templates allow; each example given up is counted under its reason."""
    if check(paper.title + "\n" + paper.abstract):
        return [], "contaminated", Counter()
    if spec.format == "completion":
        return screen(render(spec, paper, bucket), lambda t: False)
    f = Fields(paper)
    templates, want = spec.templates, spec.templates_per_paper
    n = len(templates)
    kept: list[dict] = []
    skipped: Counter = Counter()
    last = None
    for j in range(n):
        if len(kept) == want:
            break
        ex = chat_example(spec, templates[(bucket + j) % n], f, paper.id)
        reason = screen_messages(ex["messages"], lambda t: False)
        if reason:
            skipped[reason] += 1
            last = reason
        else:
            kept.append(ex)
    if not kept:
        skipped[last] -= 1
        return [], last, +skipped
    return kept, None, skipped


def chat_example(spec: Spec, t, fields: dict, paper_id: str) -> dict:
    """One chat line: optional system prompt, the template's user and assistant turns."""
    messages = []
    if spec.system_prompt:
        messages.append({"role": "system", "content": spec.system_prompt})
    messages.append({"role": "user", "content": t.user.format_map(fields)})
    messages.append({"role": "assistant", "content": t.assistant.format_map(fields)})
    return {"messages": messages, "id": paper_id, "template": t.id}


def line_renderer(spec: Spec):
    """`(paper, bucket) -> (pieces, n, drop, skipped)`: the JSONL lines of `render`'s examples,
    screened as `screen` does, as byte pieces whose concatenation equals
    `orjson.dumps(example) + b"\\n"` for each written example in turn, assembled from
    pre-serialised parts (no per-example dicts, no copies until the caller joins a whole
    block); `n` lines, the paper's drop reason (None when it is kept) and the reasons its
    other examples were dropped for. Contamination is the caller's to check, on the paper's
    title and abstract, as `render_screened` does (`snapshot` checks a whole block at once)."""
    dumps = orjson.dumps
    if spec.format == "completion":
        text = spec.text

        def completion(paper: Paper, bucket: int) -> tuple[list[bytes], int, str | None, tuple[str, ...]]:
            t = text.format_map(Fields(paper))
            if not t.strip():
                return [], 0, "empty_text", ()
            return [b'{"text":', dumps(t), b',"id":', dumps(paper.id), b"}\n"], 1, None, ()

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

    def chat(paper: Paper, bucket: int) -> tuple[list[bytes], int, str | None, tuple[str, ...]]:
        tail_id = b'}],"id":' + dumps(paper.id)
        out: list[bytes] = []
        written = 0
        skipped: tuple[str, ...] = ()
        for j in range(n):  # as render_screened: a screened-out template gives way to the next
            if written == k:
                break
            user, assistant, tail, getters = templates[(bucket + j) % n]
            f: dict[str, str]  # a Fields fills the other placeholders lazily
            if getters is None:
                f = Fields(paper)
            else:
                f = {"id": paper.id, "title": paper.title, "abstract": paper.abstract}
                for name, get in getters:
                    f[name] = get(paper)
            u, a = user.format_map(f), assistant.format_map(f)
            if not a.strip():
                skipped += ("empty_answer",)
                continue
            if copies_prompt(u, a):
                skipped += ("answer_in_prompt",)
                continue
            out += (head, dumps(u), mid, dumps(a), tail_id, tail)
            written += 1
        if not written:
            return [], 0, skipped[-1], skipped[:-1]
        return out, written, None, skipped

    return chat
