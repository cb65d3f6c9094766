"""Perplexity arithmetic, windowing and test-split reading (the model-free parts)."""

import math

import numpy as np
import pytest

from qwenphysics.evaluation import perplexity
from qwenphysics.evaluation.exceptions import EvalError


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
    assert [d for d, _, _ in windows] == [0, 0, 0, 2]
    assert windows[2][1] == [8, 9]
    assert all(len(w) <= 4 for _, w, _ in windows)
    assert sum(len(w) - 1 for _, w, _ in windows) == 3 + 3 + 1 + 3
    capped = perplexity.plan_windows(docs, n_ctx=4, max_tokens=5)
    assert sum(len(w) - 1 for _, w, _ in capped) == 5
    with pytest.raises(ValueError):
        perplexity.plan_windows(docs, n_ctx=1, max_tokens=5)


def test_only_flagged_tokens_are_scored_and_count_against_the_budget():
    tokens = [5, 6, 7, 8, 9, 10]
    mask = [False, False, True, True, False, True]
    (d, window, wmask), = perplexity.plan_windows([(tokens, mask)], n_ctx=16, max_tokens=100)
    assert window == tokens and wmask == mask
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 12)).astype(np.float32)
    s, n = perplexity.window_nll(logits, tokens, mask=mask)
    x = logits.astype(np.float64)
    ref = -sum(x[i, tokens[i + 1]] - np.log(np.exp(x[i]).sum()) for i in (1, 2, 4))
    assert n == 3 and math.isclose(s, ref, rel_tol=1e-9)
    (_, cut, cmask), = perplexity.plan_windows([(tokens, mask)], n_ctx=16, max_tokens=2)
    assert cut == [5, 6, 7, 8] and sum(cmask[1:]) == 2
    assert perplexity.plan_windows([([1, 2, 3], [True, False, False])], n_ctx=4, max_tokens=9) == []


def test_a_conversation_scores_its_answers_not_the_prompt_or_template():
    segments = perplexity.chat_segments([{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"},
                                         {"role": "assistant", "content": "A."}])
    assert "".join(t for t, _, _ in segments) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\nA.<|im_end|>\n")
    assert [t for t, scored, _ in segments if scored] == ["A."]

    def tokenize(text, special):  # one token per character: flags follow the segments
        return [ord(c) for c in text]

    tokens, mask = perplexity.tokenize_document(segments, tokenize)
    assert [chr(t) for t, m in zip(tokens, mask) if m] == ["A", "."]


def test_bootstrap_interval_holds_the_estimate_and_narrows_with_more_documents():
    rng = np.random.default_rng(0)
    few = [(float(rng.normal(200, 40)), 100) for _ in range(10)]
    many = few + [(float(rng.normal(200, 40)), 100) for _ in range(390)]
    for docs in (few, many):
        res = perplexity.summarize(sum(s for s, _ in docs), sum(n for _, n in docs), len(docs), docs)
        lo, hi = res["ci95"]
        assert lo < res["ppl"] < hi

    def width(docs):
        lo, hi = perplexity.bootstrap_interval(docs)
        return hi - lo

    assert width(many) < width(few) / 3
    assert perplexity.bootstrap_interval(few) == perplexity.bootstrap_interval(few)  # seeded


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
