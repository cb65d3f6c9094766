"""Log-likelihoods of continuations under a GGUF model, computed in-process by llama.cpp
(llama-cpp-python), one JSON request per line on stdin, one JSON answer per line on stdout.

It is the llama.cpp side of the project's lm-eval backend (`qwenphysics-llama-cpp` in
:mod:`.lmeval`): lm-eval runs in the training environment, this helper in the core one,
where llama-cpp-python is. Neither OpenAI-style server can serve log-likelihood tasks
correctly: llama.cpp's own server refuses `echo` ("Only no echo is supported"), and
llama-cpp-python's server echoes each prompt token's log-probability from the distribution
*after* that token instead of before it (shifted by one), which makes every score wrong.

Request:  {"context": str, "continuation": str}
Answer:   {"loglikelihood": float, "greedy": bool, "tokens": int}

Tokenized as lm-eval tokenizes a pair: whitespace at the end of the context moves to the
continuation; the continuation's tokens are those of context + continuation after the
context's own tokens.

    .venv/bin/python -m qwenphysics.evaluation.llama_scorer --gguf model.gguf < requests.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def split_pair(context: str, continuation: str) -> tuple[str, str]:
    n = len(context) - len(context.rstrip())
    if n:
        continuation, context = context[-n:] + continuation, context[:-n]
    return context, continuation


def score(llm, context: str, continuation: str) -> dict:
    context, continuation = split_pair(context, continuation)
    whole = llm.tokenize((context + continuation).encode("utf-8"), add_bos=False, special=False)
    ctx = llm.tokenize(context.encode("utf-8"), add_bos=False, special=False) if context else []
    if not ctx or len(whole) <= len(ctx):
        raise ValueError("the context or the continuation has no tokens")
    n_ctx_tokens = len(ctx)
    if len(whole) > llm.n_ctx():  # keep the end, as lm-eval does: the context loses its start
        cut = len(whole) - llm.n_ctx()
        whole, n_ctx_tokens = whole[cut:], n_ctx_tokens - cut
        if n_ctx_tokens < 1:
            raise ValueError(f"the continuation alone is longer than the {llm.n_ctx()}-token context")
    llm.reset()
    llm.eval(whole)
    rows = np.asarray(llm.scores[n_ctx_tokens - 1 : len(whole) - 1], dtype=np.float64)
    targets = np.asarray(whole[n_ctx_tokens:], dtype=np.int64)
    peak = rows.max(axis=1)
    lse = peak + np.log(np.exp(rows - peak[:, None]).sum(axis=1))
    picked = rows[np.arange(len(targets)), targets]
    return {"loglikelihood": float((picked - lse).sum()), "greedy": bool((rows.argmax(axis=1) == targets).all()),
            "tokens": int(len(targets))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    from llama_cpp import Llama  # noqa: PLC0415 - optional: llama-cpp-python, asked for only when a GGUF is read in-process

    llm = Llama(model_path=args.gguf, n_ctx=args.n_ctx, logits_all=True, n_threads=args.threads, verbose=False)
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            out = score(llm, req["context"], req["continuation"])
        except Exception as e:  # answered, so the caller can say which request failed
            out = {"error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
