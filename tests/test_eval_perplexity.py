"""Perplexity arithmetic, windowing and test-split reading (the model-free parts)."""

import json
import math

import numpy as np
import pytest

from qwenphysics.evaluation import perplexity
from qwenphysics.evaluation.errors import EvalError


def test_uniform_logits_give_vocabulary_size():
    vocab = 50
    tokens = [3, 7, 1, 49, 0, 12]
    logits = np.zeros((len(tokens), vocab), dtype=np.float32)
    s, n = perplexity.window_nll(logits, tokens)
    assert n == len(tokens) - 1
    assert math.isclose(perplexity.summarize(s, n, 1)["ppl"], vocab, rel_tol=1e-9)


def test_nll_uses_the_next_token_and_blocks_agree():
    rng = np.random.default_rng(0)
    tokens = list(rng.integers(0, 30, size=200))
    logits = rng.normal(size=(200, 30)).astype(np.float32)
    s_small, n = perplexity.window_nll(logits, tokens, block=7)
    s_big, _ = perplexity.window_nll(logits, tokens, block=1000)
    assert math.isclose(s_small, s_big, rel_tol=1e-9)
    x = logits.astype(np.float64)
    ref = -sum(x[i, tokens[i + 1]] - np.log(np.exp(x[i]).sum()) for i in range(199))
    assert math.isclose(s_small, ref, rel_tol=1e-9)
    # a model certain of every next token has perplexity 1
    sure = np.full((6, 10), -1e4, dtype=np.float32)
    seq = [1, 2, 3, 4, 5, 6]
    for i in range(5):
        sure[i, seq[i + 1]] = 1e4
    s, n = perplexity.window_nll(sure, seq)
    assert perplexity.summarize(s, n, 1)["ppl"] == pytest.approx(1.0)


def test_plan_windows_respects_context_and_budget():
    docs = [list(range(10)), [1], list(range(5))]
    windows = perplexity.plan_windows(docs, n_ctx=4, max_tokens=100)
    # doc 0 -> [0..3] [4..7] [8, 9]; doc 1 is too short; doc 2 -> [0..3] and a lone [4] (dropped)
    assert [d for d, _ in windows] == [0, 0, 0, 2]
    assert windows[2][1] == [8, 9]
    assert all(len(w) <= 4 for _, w in windows)
    assert sum(len(w) - 1 for _, w in windows) == 3 + 3 + 1 + 3
    capped = perplexity.plan_windows(docs, n_ctx=4, max_tokens=5)
    assert sum(len(w) - 1 for _, w in capped) == 5
    with pytest.raises(ValueError):
        perplexity.plan_windows(docs, n_ctx=1, max_tokens=5)


def test_read_documents_text_and_chat(tmp_path):
    path = tmp_path / "test.jsonl"
    rows = [
        {"id": "a", "text": "Plain abstract."},
        {"id": "b", "messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}]},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    docs = perplexity.read_documents(path)
    assert docs[0] == ("Plain abstract.", False)
    assert docs[1] == ("<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\nA.<|im_end|>\n", True)


@pytest.mark.parametrize("line,fragment", [
    ("not json", "not JSON"),
    ("[1, 2]", "JSON object"),
    ('{"id": "x"}', "neither 'text' nor 'messages'"),
    ('{"messages": [{"role": "wizard", "content": "x"}]}', "'messages' must be"),
    ('{"messages": []}', "'messages' must be"),
])
def test_read_documents_rejects_bad_lines_naming_the_line(tmp_path, line, fragment):
    path = tmp_path / "test.jsonl"
    path.write_text('{"text": "ok"}\n' + line + "\n")
    with pytest.raises(EvalError, match=fragment) as exc:
        perplexity.read_documents(path)
    assert "test.jsonl:2" in str(exc.value)


def test_nothing_to_score_is_an_error():
    with pytest.raises(EvalError, match="no document"):
        perplexity.summarize(0.0, 0, 0)
