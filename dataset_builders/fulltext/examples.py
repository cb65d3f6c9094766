"""Full-text training contexts: a cleaned paper (`paper.extra["fulltext"]`) -> JSONL examples.

* `ChunkRenderer` (format `completion`): token-bounded chunks `{"text", "id", "chunk"}`.
* `SectionRenderer` (format `chat`): instruction pairs whose answers are sections,
  `{"messages", "id", "template"}`.
"""

from __future__ import annotations

import re
import string
from array import array
from collections import Counter
from typing import Any

from ..contexts import Fields, chat_example
from ..records import Drop, InputError, Paper
from ..spec import Spec
from ..split import SPLITS, split_of_bucket
from . import atoms

MAX_TITLE_TOKENS = 100
PARAGRAPH_FILL = 0.5
MIN_CHUNK_TOKENS = 512  # room for the longest title (100), a heading and one atom (128)


def _opt_int(spec: Spec, key: str, default: int, lo: int, hi: int | None = None) -> int:
    v = spec.options.get(key, default)
    if not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        raise InputError(f"spec {spec.name}: options.{key} must be an integer {rng}, not {v!r}")
    return v


class ChunkRenderer:
    """Packs a paper's atoms into chunks of at most `chunk_tokens` Qwen2.5 tokens.

    Every chunk starts with `# <title>`; a chunk that starts inside a section repeats that
    section's heading. Chunks end on paragraph ends where that keeps them at least half full
    (else on sentence ends, else on pre-token boundaries: see atoms.py), never right after a
    heading, and the next chunk repeats up to `overlap_tokens` of the previous one's last
    atoms (whole paragraphs or sentences). The first chunk holds the abstract
    (`include_abstract`). Token counts are exact; `last_tokens` holds those of the last paper.
    """

    def __init__(self, spec: Spec, tok):
        self.tok = tok
        self.bound = _opt_int(spec, "chunk_tokens", 4096, MIN_CHUNK_TOKENS)
        self.overlap = _opt_int(spec, "overlap_tokens", 128, 0, self.bound // 4)
        self.include_abstract = bool(spec.options.get("include_abstract", True))
        self.abstract_head = "## Abstract\n\n"
        self.abstract_head_n = atoms.count(tok, self.abstract_head)
        self.last_tokens: list[int] = []
        self.split_tokens: dict[str, array] = {s: array("I") for s in SPLITS}
        self.report = {"chunk_tokens": self.bound, "overlap_tokens": self.overlap, "chunks": 0,
                       "papers": 0, "tokens": 0}

    def token_stats(self) -> dict:
        return atoms.exact_token_stats(self.split_tokens)

    def _prefix(self, title: str) -> tuple[str, int]:
        title = " ".join(title.split())
        prefix = "# " + title + "\n\n"
        n = atoms.count(self.tok, prefix)
        while n > MAX_TITLE_TOKENS and len(title) > 20:
            title = title[: len(title) * 2 // 3].rstrip()
            prefix = "# " + title + "\n\n"
            n = atoms.count(self.tok, prefix)
        return prefix, n

    def items(self, p: Paper) -> list[tuple]:
        """(text, tokens, heading item index or -1, is_heading) in reading order."""
        rec = p.extra["fulltext"]
        items: list[tuple] = []
        abstract = p.abstract or rec.get("abstract")
        if self.include_abstract and abstract:
            items.append((self.abstract_head, self.abstract_head_n, -1, True))
            h = len(items) - 1
            for t, n in atoms.atomize(self.tok, abstract):
                items.append((t, n, h, False))
        for s in rec["sections"]:
            h = -1
            if s["h"]:
                items.append((atoms.heading(s["l"], s["t"]), s["h"], -1, True))
                h = len(items) - 1
            for t, n in s["a"]:
                items.append((t, n, h, False))
        return items

    def _lcount(self, it) -> int:
        t = it[0]
        return atoms.count(self.tok, t.lstrip()) if t[:1].isspace() else it[1]

    def pack(self, items: list[tuple], pn: int) -> list[tuple[list[int], int, int]]:
        """-> [(item indices, heading item index or -1, exact tokens)]."""
        bound, out = self.bound, []
        n_items = len(items)
        i = 0
        prev: list[int] = []  # item indices of the previous chunk
        while i < n_items:
            seed: list[int] = []
            tot = 0
            for j in reversed(prev):
                it = items[j]
                if it[3] or tot + it[1] > self.overlap:
                    break
                seed.insert(0, j)
                tot += it[1]
            for use_seed, use_head in ((True, True), (False, True), (False, False)):
                body = list(seed) if use_seed else []
                first = body[0] if body else i
                fi = items[first]
                head = fi[2] if (use_head and not fi[3]) else -1
                base = pn + (items[head][1] if head >= 0 else 0) + self._lcount(fi) - fi[1]
                total = sum(items[k][1] for k in body)
                j = i
                while j < n_items and base + total + items[j][1] <= bound:
                    body.append(j)
                    total += items[j][1]
                    j += 1
                if j > i:
                    break
            else:  # one item over the bound on its own: cannot happen with atoms <= ATOM_TOKENS
                body, head, j = [i], -1, i + 1
            # end on a paragraph end (section ends are paragraph ends) when that keeps the
            # chunk at least `PARAGRAPH_FILL` full
            if j < n_items and not items[body[-1]][0].endswith("\n\n"):
                run = base + total
                for k in range(len(body) - 1, 0, -1):
                    run -= items[body[k]][1]
                    if body[k - 1] < i or run < PARAGRAPH_FILL * bound:
                        break
                    if items[body[k - 1]][0].endswith("\n\n"):
                        del body[k:]
                        j = body[-1] + 1
                        break
            # never end a chunk on a dangling heading
            while j < n_items and j - 1 > i and items[body[-1]][3]:
                body.pop()
                j -= 1
            while True:
                ntok = self._exact(items, body, head, pn)
                if ntok <= bound or j - 1 <= i:
                    break
                body.pop()
                j -= 1
            out.append((body, head, ntok))
            prev, i = body, j
        return out

    def _exact(self, items, body, head, pn) -> int:
        first, last = items[body[0]], items[body[-1]]
        total = pn + (items[head][1] if head >= 0 else 0) + sum(items[k][1] for k in body)
        if len(body) == 1:
            t = first[0].strip()
            return total - first[1] + (atoms.count(self.tok, t) if t != first[0] else first[1])
        total += self._lcount(first) - first[1]
        t = last[0].rstrip()
        if t != last[0]:
            total += atoms.count(self.tok, t) - last[1]
        return total

    def __call__(self, spec: Spec, p: Paper, bucket: int) -> list[dict] | Drop:
        items = self.items(p)
        if not any(not it[3] for it in items):
            return Drop("no_text")
        prefix, pn = self._prefix(p.title or p.extra["fulltext"].get("title") or p.id)
        examples, self.last_tokens = [], []
        for k, (body, head, ntok) in enumerate(self.pack(items, pn)):
            parts = [items[j][0] for j in body]
            parts[0] = parts[0].lstrip()
            parts[-1] = parts[-1].rstrip()
            text = prefix + (items[head][0] if head >= 0 else "") + "".join(parts)
            examples.append({"text": text, "id": p.id, "chunk": k})
            self.last_tokens.append(ntok)
        self.split_tokens[split_of_bucket(bucket)].extend(self.last_tokens)
        self.report["papers"] += 1
        self.report["chunks"] += len(examples)
        self.report["tokens"] += sum(self.last_tokens)
        return examples


# ------------------------------------------------------------------ sections-chat

_NUMBERING = re.compile(r"^(?:[0-9]+(?:\.[0-9]+)*|[ivxlc]+|[a-z])[.):]?\s+")
_NON_WORD = re.compile(r"[^\w\s]+")


def norm_heading(title: str) -> str:
    t = " ".join(title.lower().replace("&", " and ").split())
    t = _NUMBERING.sub("", t)
    return " ".join(_NON_WORD.sub(" ", t).split())


DEFAULT_SECTIONS = {
    "introduction": {"headings": ["introduction", "intro"], "pick": "first"},
    "conclusions": {"headings": ["conclusion", "conclusions", "summary", "discussion", "concluding remarks",
                                 "outlook"], "pick": "last"},
    "methods": {"headings": ["method", "methods", "methodology", "model", "the model", "formalism"],
                "pick": "first"},
    "results": {"headings": ["results", "main results", "numerical results"], "pick": "first"},
}


class SectionRenderer:
    """Chat pairs whose answers are whole sections, found by normalised heading.

    `options.sections` maps a placeholder (`introduction`, `conclusions`, ...) to the headings
    that name it (matched after lower-casing and removing numbering and punctuation; a heading
    also matches when it starts with one of them followed by a word, e.g. "conclusions and
    outlook") and whether the first or the last matching section is taken. A section's text
    includes its subsections. Templates rotate by the paper's bucket like abstracts-chat;
    templates whose section a paper lacks are skipped and counted per template.
    """

    def __init__(self, spec: Spec):
        raw = spec.options.get("sections") or DEFAULT_SECTIONS
        if not isinstance(raw, dict) or not raw:
            raise InputError(f"spec {spec.name}: options.sections must map placeholder -> headings")
        self.sections: dict[str, tuple[tuple[str, ...], str]] = {}
        for name, v in raw.items():
            if isinstance(v, list):
                v = {"headings": v}
            heads = v.get("headings") if isinstance(v, dict) else None
            pick = v.get("pick", "first") if isinstance(v, dict) else None
            if not heads or pick not in ("first", "last"):
                raise InputError(f"spec {spec.name}: options.sections.{name} needs headings: [...] "
                                 "and pick: first|last")
            self.sections[str(name)] = (tuple(norm_heading(str(h)) for h in heads), pick)
        self.min_chars = _opt_int(spec, "min_section_chars", 200, 0)
        self.max_chars = _opt_int(spec, "max_section_chars", 24000, 1)
        if not spec.templates:
            raise InputError(f"spec {spec.name}: a chat spec needs at least one entry under 'templates'")
        self.needs: dict[str, set[str]] = {}
        for t in spec.templates:
            names = {f for text in (t.user, t.assistant) for _, f, _, _ in string.Formatter().parse(text) if f}
            self.needs[t.id] = names & set(self.sections)
        self.per_template: dict[str, Counter[str]] = {t.id: Counter() for t in spec.templates}
        self.report: dict[str, Any] = {"templates": self.per_template, "sections_found": Counter(),
                                       "section_too_long": Counter(), "section_too_short": Counter()}

    def _match(self, heading: str) -> str | None:
        h = norm_heading(heading)
        for name, (heads, _) in self.sections.items():
            for cand in heads:
                if h == cand or h.startswith(cand + " "):
                    return name
        return None

    def find(self, rec: dict) -> dict[str, str]:
        secs = rec["sections"]
        found: dict[str, tuple[int, int]] = {}  # name -> (level, index)
        for k, s in enumerate(secs):
            if not s["h"]:
                continue
            name = self._match(s["t"])
            if name is None:
                continue
            old = found.get(name)
            pick = self.sections[name][1]
            if old is None or s["l"] < old[0] or (s["l"] == old[0] and pick == "last"):
                found[name] = (s["l"], k)
        out = {}
        for name, (level, k) in found.items():
            parts = ["".join(t for t, _ in secs[k]["a"]).strip()]
            for s in secs[k + 1:]:
                if s["h"] and s["l"] <= level:
                    break
                if s["h"]:
                    parts.append(atoms.heading(s["l"], s["t"]).strip())
                parts.append("".join(t for t, _ in s["a"]).strip())
            text = "\n\n".join(x for x in parts if x)
            if len(text) < self.min_chars:
                self.report["section_too_short"][name] += 1
                continue
            if len(text) > self.max_chars:
                self.report["section_too_long"][name] += 1
                continue
            self.report["sections_found"][name] += 1
            out[name] = text
        return out

    def __call__(self, spec: Spec, p: Paper, bucket: int) -> list[dict] | Drop:
        found = self.find(p.extra["fulltext"])
        for name, text in found.items():
            p.extra[name] = text
        usable = []
        for t in spec.templates:
            if self.needs[t.id] <= found.keys():
                usable.append(t)
            else:
                self.per_template[t.id]["missing_section"] += 1
        if not usable:
            return Drop("no_matching_section")
        f = Fields(p)
        out = []
        n = len(usable)
        for k in range(min(spec.templates_per_paper, n)):
            t = usable[(bucket + k) % n]
            self.per_template[t.id]["written"] += 1
            out.append(chat_example(spec, t, f, p.id))
        return out
