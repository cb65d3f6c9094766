"""Text "atoms" with exact Qwen2.5 token counts, so chunks can be cut without re-tokenising.

An atom is a run of text whose token count is additive: the token count of a concatenation
of atoms equals the sum of their counts. That holds because every atom boundary is also a
pre-tokenizer boundary of Qwen2.5's tokenizer (its split regex never joins a newline to a
following non-blank character, nor punctuation to a following space):

* a paragraph is one atom, ending with its `"\\n\\n"` separator;
* a paragraph over `ATOM_TOKENS` tokens is cut after sentence ends (`". "`, `"? "`, `"! "`):
  the later pieces start with that space, the last ends with `"\\n\\n"`;
* a sentence still over the bound is cut between pre-tokens (a paragraph holding one
  pre-token over the bound, a blob of symbols, is dropped and counted).

Counting happens once, in the shard workers (the costly part, in parallel); the reduce step
packs atoms into chunks with sums and only re-counts the atom that starts and the atom that
ends each chunk (leading / trailing blanks stripped).
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left
from collections.abc import Mapping, Sequence

import numpy as np

from qwenphysics.qwen_tokenizer import load_fast_tokenizer

from ..records import InputError

ATOM_TOKENS = 128  # largest atom (chunks end on atom ends); bounds leave room for one plus the title
MAX_HEADING_CHARS = 200
_SENTENCE_CUT = re.compile(r"(?<=[.!?]) (?=\S)")
_PARA_SPLIT = re.compile(r"\n[ \t]*\n\s*")


class TokenizerMissing(Exception):
    pass


def get_tokenizer():
    """The real Qwen2.5 tokenizer (`tokenizers.Tokenizer`), cached per process."""

    tok = load_fast_tokenizer()
    if tok is None:
        raise TokenizerMissing("the Qwen2.5 tokenizer (artifacts/qwen2.5-tokenizer/tokenizer.json) "
                               "is not built: run `make setup`")
    return tok


def require_tokenizer():
    """The tokenizer, or the one-line input error that says how to build it."""
    try:
        return get_tokenizer()
    except TokenizerMissing as e:
        raise InputError(str(e)) from None


def counts(tok, texts: list[str]) -> list[int]:
    if not texts:
        return []
    return [len(e.ids) for e in tok.encode_batch_fast(texts, add_special_tokens=False)]


def count(tok, text: str) -> int:
    return len(tok.encode(text, add_special_tokens=False).ids) if text else 0


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def paragraphs(text: str) -> list[str]:
    return [p for p in (x.strip() for x in _PARA_SPLIT.split(text)) if p]


def atomize(tok, text: str, stats: dict | None = None) -> list[list]:
    """`text` (paragraphs separated by blank lines) -> `[[atom, tokens], ...]`.

    Joining the atoms gives the paragraphs joined by `"\\n\\n"`, plus a final `"\\n\\n"`.
    Each paragraph is tokenised once: sentence and pre-token boundaries are token boundaries,
    so the counts of the pieces of a long paragraph come from its token offsets.
    """
    return atomize_many(tok, [text], stats)[0]


def atomize_many(tok, texts: list[str], stats: dict | None = None) -> list[list[list]]:
    """`atomize` for several texts with one tokenizer call."""
    paras = [[p + "\n\n" for p in paragraphs(nfc(t))] for t in texts]
    flat = [p for ps in paras for p in ps]
    encs = iter(tok.encode_batch(flat, add_special_tokens=False) if flat else [])
    return [_atoms(tok, ps, encs, stats) for ps in paras]


def _atoms(tok, texts: list[str], encs, stats: dict | None) -> list[list]:
    out: list[list] = []
    for t, e in zip(texts, encs):
        if len(e.ids) <= ATOM_TOKENS:
            out.append([t, len(e.ids)])
            continue
        pieces = _split_long(tok, t, e.offsets)
        if pieces is None:  # a single pre-token of hundreds of tokens: not prose
            if stats is not None:
                stats["giant_token_paragraphs_dropped"] = stats.get("giant_token_paragraphs_dropped", 0) + 1
            continue
        out.extend(pieces)
    return out


def _split_long(tok, text: str, offsets: list[tuple[int, int]]) -> list[list] | None:
    starts = [a for a, _ in offsets]
    n = len(starts)

    def token_at(c: int) -> int | None:
        """Index of the token starting exactly at character `c`, if a boundary is there."""
        i = bisect_left(starts, c)
        if 0 < i < n and starts[i] == c and offsets[i - 1][1] <= c:
            return i
        return None

    cuts = sorted({i for i in map(token_at, (m.start() for m in _SENTENCE_CUT.finditer(text))) if i})
    bounds = [0, *cuts, n]
    segments: list[tuple[int, int]] = []
    pre: list[int] | None = None
    for a, b in zip(bounds, bounds[1:]):
        if b - a <= ATOM_TOKENS:
            segments.append((a, b))
            continue
        if pre is None:  # pre-token starts that are token starts
            pre = sorted({i for i in (token_at(s) for _, (s, _) in tok.pre_tokenizer.pre_tokenize_str(text)) if i})
        inner = [i for i in pre if a < i < b]
        last = a
        for x, y in zip([a, *inner], [*inner, b]):
            if y - x > ATOM_TOKENS:
                return None
            if y - last > ATOM_TOKENS:
                segments.append((last, x))
                last = x
        segments.append((last, b))
    # group consecutive segments up to the bound; counts are token index differences
    groups: list[list[int]] = []
    for a, b in segments:
        if groups and b - groups[-1][0] <= ATOM_TOKENS:
            groups[-1][1] = b
        else:
            groups.append([a, b])
    out = []
    for a, b in groups:
        ca = 0 if a == 0 else starts[a]
        cb = len(text) if b == n else starts[b]
        out.append([text[ca:cb], b - a])
    return out


def heading(level: int, title: str) -> str:
    title = " ".join(title.split())[:MAX_HEADING_CHARS]
    return "#" * max(1, min(level, 6)) + " " + title + "\n\n"


def exact_token_stats(per_split: Mapping[str, Sequence[int]]) -> dict:
    """The manifest's `tokens` block (as `output.token_stats` shapes it) from every example's
    exact count instead of a sample."""

    stats: dict = {"tokenizer": "Qwen2.5 (qwen-tokenizer BPE ranks)", "sampled_per_split": "all (exact)"}
    for split, counts_ in per_split.items():
        if not len(counts_):
            stats[split] = {"examples_sampled": 0}
            continue
        a = np.sort(np.asarray(counts_, dtype=np.int64))
        stats[split] = {"examples_sampled": int(len(a)), "mean": round(float(a.mean()), 1),
                        "p50": int(a[len(a) // 2]), "p95": int(a[min(len(a) - 1, int(len(a) * 0.95))]),
                        "max": int(a[-1]), "total_estimate": int(a.sum())}
    return stats
