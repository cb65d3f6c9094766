"""Held-out perplexity of a GGUF model on a dataset builder's test split.

Each line of ``<data>/test.jsonl`` is either ``{"text": ...}`` or ``{"messages": [...]}``;
a conversation is scored as its rendered ChatML text (the Qwen2.5 chat format:
``<|im_start|>role\\ncontent<|im_end|>\\n`` per message). Documents are tokenized with the
model's own tokenizer, cut into windows of at most ``n_ctx`` tokens, and every token after
the first of a window is scored by its negative log-likelihood given the tokens before it
in the window. Scoring stops after ``max_tokens`` scored tokens. Perplexity is
``exp(mean NLL)`` over the scored tokens.
"""

from __future__ import annotations

from qwenphysics.hashing import sha256_file

import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from .errors import EvalError

CHATML_ROLES = ("system", "user", "assistant", "tool")


def render_chat(messages: list[dict]) -> str:
    """A conversation as Qwen2.5's ChatML text."""
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


def read_documents(path: Path) -> list[tuple[str, bool]]:
    """(text, is_chat) for every line of a test split; raises EvalError on a bad line."""
    docs: list[tuple[str, bool]] = []
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
                docs.append((row["text"], False))
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
                docs.append((render_chat(msgs), True))
            else:
                raise EvalError(f"{where} has neither 'text' nor 'messages'")
    return docs


def plan_windows(docs: Iterable[list[int]], n_ctx: int, max_tokens: int) -> list[tuple[int, list[int]]]:
    """(document index, window tokens) pairs; each window scores len(window) - 1 tokens.

    Windows never cross documents, hold at most n_ctx tokens, and together score at most
    max_tokens tokens (the last one is shortened to fit).
    """
    if n_ctx < 2 or max_tokens < 1:
        raise ValueError("n_ctx must be >= 2 and max_tokens >= 1")
    out: list[tuple[int, list[int]]] = []
    budget = max_tokens
    for d, tokens in enumerate(docs):
        for start in range(0, len(tokens), n_ctx):
            window = tokens[start : start + n_ctx]
            if len(window) < 2:
                continue
            window = window[: budget + 1]
            out.append((d, window))
            budget -= len(window) - 1
            if budget <= 0:
                return out
    return out


def window_nll(logits: np.ndarray, tokens: list[int], block: int = 64) -> tuple[float, int]:
    """Sum of -log p(tokens[i+1] | tokens[:i+1]) over the window, and how many were scored.

    ``logits[i]`` are the model's scores after reading ``tokens[: i + 1]``.
    """
    n = len(tokens) - 1
    if n <= 0:
        return 0.0, 0
    if logits.shape[0] < n:
        raise ValueError("fewer logit rows than predicted tokens")
    targets = np.asarray(tokens[1:], dtype=np.int64)
    total = 0.0
    for lo in range(0, n, block):
        rows = np.asarray(logits[lo : min(n, lo + block)], dtype=np.float64)
        peak = rows.max(axis=1)
        lse = peak + np.log(np.exp(rows - peak[:, None]).sum(axis=1))
        picked = rows[np.arange(rows.shape[0]), targets[lo : lo + rows.shape[0]]]
        total += float((lse - picked).sum())
    return total, n


def summarize(nll_sum: float, tokens: int, documents: int) -> dict:
    if tokens == 0:
        raise EvalError("the test split has no document of two or more tokens to score")
    mean = nll_sum / tokens
    return {"ppl": math.exp(mean), "mean_nll": mean, "tokens": tokens, "documents": documents}


def perplexity_gguf(
    gguf: Path,
    test_path: Path,
    n_ctx: int = 512,
    max_tokens: int = 8192,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Perplexity of a GGUF model on a test split, through llama-cpp-python logits."""
    from .backends import load_llama

    docs = read_documents(test_path)
    if not docs:
        raise EvalError(f"{test_path} is empty")
    llm = load_llama(gguf, n_ctx, logits_all=True)
    try:
        token_docs: list[list[int]] = []
        need = max_tokens
        for text, is_chat in docs:  # tokenize only as much as the budget can use
            toks = llm.tokenize(text.encode("utf-8"), add_bos=True, special=is_chat)
            token_docs.append(toks)
            need -= max(0, len(toks) - 1)
            if need <= 0:
                break
        windows = plan_windows(token_docs, n_ctx, max_tokens)
        nll_sum, scored, used = 0.0, 0, set()
        for k, (d, window) in enumerate(windows, 1):
            llm.reset()
            llm.eval(window)
            s, n = window_nll(llm.scores[: len(window)], window)
            nll_sum, scored = nll_sum + s, scored + n
            used.add(d)
            if progress:
                progress(f"perplexity window {k}/{len(windows)}: {scored} tokens scored")
    finally:
        close = getattr(llm, "close", None)
        if close:
            close()
    result = summarize(nll_sum, scored, len(used))
    result.update(
        n_ctx=n_ctx,
        max_tokens=max_tokens,
        windows=len(windows),
        test_file=str(test_path),
        test_sha256=sha256_file(test_path),
        method="llama-cpp-python logits, non-overlapping windows",
    )
    return result
