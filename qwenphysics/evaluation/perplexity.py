"""Held-out perplexity of a GGUF model on the paper text of a dataset builder's test split.

Each line of ``<data>/test.jsonl`` is either ``{"text": ...}`` or ``{"messages": [...]}``.
Only the paper's own text is scored: all of a completion line, and the assistant turns of a
conversation (their content, not the chat template around it). The rest of a conversation
(system prompt, user turn, template tokens) is read as context but not scored, so a model
that merely learned the template or the fixed system prompt gains nothing here.

A conversation is rendered in the Qwen2.5 chat format (``<|im_start|>role\ncontent<|im_end|>\n``
per message), segment by segment, each tokenized with the model's own tokenizer. Documents
are cut into windows of at most ``n_ctx`` tokens; each scored token's negative log-likelihood
is taken given the tokens before it in its window. Scoring stops after ``max_tokens`` scored
tokens. Perplexity is ``exp(mean NLL)``; its 95 % interval comes from a bootstrap over
documents (resampled with replacement, seeded), which is what two runs' intervals compare.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qwenphysics.hashing import sha256_file

from .backends import load_llama
from .exceptions import EvalError

CHATML_ROLES = ("system", "user", "assistant", "tool")
BOOTSTRAP_REPS = 2000
# A segment of a document: (text, scored, parse special tokens).
Segment = tuple[str, bool, bool]


def render_chat(messages: list[dict]) -> str:
    """A conversation as Qwen2.5's ChatML text."""
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


def chat_segments(messages: list[dict]) -> list[Segment]:
    """The ChatML rendering as segments: only assistant contents are scored."""
    out: list[Segment] = []
    for m in messages:
        out += [(f"<|im_start|>{m['role']}\n", False, True), (m["content"], m["role"] == "assistant", False),
                ("<|im_end|>\n", False, True)]
    return out


def read_documents(path: Path) -> list[list[Segment]]:
    """The segments of every line of a test split; raises EvalError on a bad line."""
    docs: list[list[Segment]] = []
    try:
        fh = open(path, encoding="utf-8")
    except OSError as exc:
        raise EvalError(f"cannot read {path}: {exc.strerror}") from None
    with fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise EvalError(f"{where} is not JSON") from None
            if not isinstance(row, dict):
                raise EvalError(f"{where} must be a JSON object")
            if isinstance(row.get("text"), str):
                docs.append([(row["text"], True, False)])
            elif isinstance(row.get("messages"), list):
                msgs = row["messages"]
                ok = all(
                    isinstance(m, dict) and m.get("role") in CHATML_ROLES
                    and isinstance(m.get("content"), str) for m in msgs
                )
                if not msgs or not ok:
                    raise EvalError(
                        f"{where}: 'messages' must be a non-empty list of "
                        "{'role': system|user|assistant|tool, 'content': str}"
                    )
                docs.append(chat_segments(msgs))
            else:
                raise EvalError(f"{where} has neither 'text' nor 'messages'")
    return docs


def tokenize_document(segments: Sequence[Segment], tokenize: Callable[[str, bool], list[int]]
                      ) -> tuple[list[int], list[bool]]:
    """(tokens, scored flags) of a document; a segment's tokens carry its flag."""
    tokens: list[int] = []
    mask: list[bool] = []
    for text, scored, special in segments:
        toks = tokenize(text, special) if text else []
        tokens += toks
        mask += [scored] * len(toks)
    return tokens, mask


def plan_windows(docs: Iterable[Sequence[int] | tuple[Sequence[int], Sequence[bool]]], n_ctx: int,
                 max_tokens: int) -> list[tuple[int, list[int], list[bool]]]:
    """(document index, window tokens, scored flags) triples. A window scores its tokens after
    the first whose flag is set (a plain token list: every flag set).

    Windows never cross documents, hold at most n_ctx tokens, and together score at most
    max_tokens tokens (the last one is shortened to fit); windows with nothing to score are
    left out.
    """
    if n_ctx < 2 or max_tokens < 1:
        raise ValueError("n_ctx must be >= 2 and max_tokens >= 1")
    out: list[tuple[int, list[int], list[bool]]] = []
    budget = max_tokens
    for d, doc in enumerate(docs):
        if isinstance(doc, tuple):
            tokens, mask = list(doc[0]), list(doc[1])
        else:
            tokens, mask = list(doc), [True] * len(doc)
        for start in range(0, len(tokens), n_ctx):
            window, wmask = tokens[start : start + n_ctx], mask[start : start + n_ctx]
            scored = [i for i in range(1, len(window)) if wmask[i]]
            if not scored:
                continue
            if len(scored) > budget:  # cut after the budget's last scored token
                window, wmask = window[: scored[budget - 1] + 1], wmask[: scored[budget - 1] + 1]
                scored = scored[:budget]
            out.append((d, window, wmask))
            budget -= len(scored)
            if budget <= 0:
                return out
    return out


def window_nll(logits: np.ndarray, tokens: list[int], block: int = 64,
               mask: Sequence[bool] | None = None) -> tuple[float, int]:
    """Sum of -log p(tokens[i+1] | tokens[:i+1]) over the window's scored tokens (``mask[i+1]``,
    every one without a mask), and how many were scored.

    ``logits[i]`` are the model's scores after reading ``tokens[: i + 1]``.
    """
    n = len(tokens) - 1
    if n <= 0:
        return 0.0, 0
    if logits.shape[0] < n:
        raise ValueError("fewer logit rows than predicted tokens")
    targets = np.asarray(tokens[1:], dtype=np.int64)
    keep = np.ones(n, dtype=bool) if mask is None else np.asarray(mask[1 : n + 1], dtype=bool)
    total = 0.0
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        sel = keep[lo:hi]
        if not sel.any():
            continue
        rows = np.asarray(logits[lo:hi], dtype=np.float64)[sel]
        peak = rows.max(axis=1)
        lse = peak + np.log(np.exp(rows - peak[:, None]).sum(axis=1))
        picked = rows[np.arange(rows.shape[0]), targets[lo:hi][sel]]
        total += float((lse - picked).sum())
    return total, int(keep.sum())


def bootstrap_interval(per_doc: Sequence[tuple[float, int]], reps: int = BOOTSTRAP_REPS, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of exp(sum NLL / sum tokens) over documents resampled with replacement."""
    nll = np.array([s for s, _ in per_doc], dtype=np.float64)
    cnt = np.array([n for _, n in per_doc], dtype=np.float64)
    if len(nll) == 0 or cnt.sum() == 0:
        raise EvalError("the test split has no document of two or more tokens to score")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(nll), size=(reps, len(nll)))
    ppl = np.exp(nll[idx].sum(axis=1) / np.maximum(cnt[idx].sum(axis=1), 1))
    lo, hi = np.quantile(ppl, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def summarize(nll_sum: float, tokens: int, documents: int,
              per_doc: Sequence[tuple[float, int]] | None = None) -> dict:
    if tokens == 0:
        raise EvalError("the test split has no document of two or more tokens to score")
    mean = nll_sum / tokens
    out: dict[str, Any] = {"ppl": math.exp(mean), "mean_nll": mean, "tokens": tokens, "documents": documents}
    if per_doc:
        lo, hi = bootstrap_interval(per_doc)
        out["ci95"] = [lo, hi]
    return out


def perplexity_gguf(
    gguf: Path,
    test_path: Path,
    n_ctx: int = 512,
    max_tokens: int = 32768,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Perplexity of a GGUF model on a test split's paper text, through llama-cpp-python logits."""

    docs = read_documents(test_path)
    if not docs:
        raise EvalError(f"{test_path} is empty")
    llm = load_llama(gguf, n_ctx, logits_all=True)
    try:
        def tokenize(text: str, special: bool) -> list[int]:
            return llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)

        token_docs: list[tuple[list[int], list[bool]]] = []
        need = max_tokens
        for segments in docs:  # tokenize only as much as the budget can use
            toks, mask = tokenize_document(segments, tokenize)
            token_docs.append((toks, mask))
            need -= sum(mask[1:])
            if need <= 0:
                break
        windows = plan_windows(token_docs, n_ctx, max_tokens)
        per_doc: dict[int, list[float]] = {}
        for k, (d, window, wmask) in enumerate(windows, 1):
            llm.reset()
            llm.eval(window)
            s, n = window_nll(llm.scores[: len(window)], window, mask=wmask)
            acc = per_doc.setdefault(d, [0.0, 0])
            acc[0] += s
            acc[1] += n
            if progress:
                progress(f"perplexity window {k}/{len(windows)}")
    finally:
        close = getattr(llm, "close", None)
        if close:
            close()
    pairs = [(s, int(n)) for s, n in per_doc.values()]
    result = summarize(sum(s for s, _ in pairs), sum(n for _, n in pairs), len(pairs), pairs)
    result.update(
        n_ctx=n_ctx,
        max_tokens=max_tokens,
        windows=len(windows),
        scored="paper text only: completion lines whole, assistant turns' content of chat lines",
        test_file=str(test_path),
        test_sha256=sha256_file(test_path),
        method="llama-cpp-python logits, non-overlapping windows; 95 % interval: bootstrap over documents",
    )
    return result
