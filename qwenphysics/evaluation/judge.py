"""A judge for free-form answers: another model grades each answer against the reference.

The automatic scorers (numbers with units, keywords, formulas) decide short answers well and
long explanations poorly. A judge reads the question, the reference answer and the model's
answer under a written rubric (``judge-rubric.md`` beside this file, or ``--judge-rubric``)
and answers, constrained by a JSON schema, ``{"reason": ..., "verdict": ...}`` with a verdict
of ``correct``, ``partly_correct`` or ``incorrect``.

The judge is optional and any OpenAI-compatible server (``--judge-url``; the teacher server
of the Q&A builder serves) or a GGUF file that llama.cpp's server is started on
(``--judge-gguf``). Verdicts are cached in SQLite keyed by the question, its reference, the
answer graded, the rubric and the judge (its model, and a local GGUF's SHA-256, and its
sampling), so re-evaluating an unchanged answer asks nothing. The report puts the judge's
verdicts beside the automatic scorers' and says how often the two agree.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwenphysics.core.answer_cache import AnswerCache
from qwenphysics.core.chat_pool import Answer, ChatPool, Sampling
from qwenphysics.core.errors import UserError
from qwenphysics.core.llama_server import LlamaServer
from qwenphysics.hashing import sha256_file
from qwenphysics.toolchain import cache_dir

from .exceptions import EvalError

VERDICTS = ("correct", "partly_correct", "incorrect")
CREDIT = {"correct": 1.0, "partly_correct": 0.5, "incorrect": 0.0}
DEFAULT_RUBRIC = Path(__file__).with_name("judge-rubric.md")
PROMPT_VERSION = 1  # the layout of the user message below; part of every cache key
MAX_REASON_CHARS = 600
# Tokens outside the reason at worst: braces, keys and the longest verdict one character a
# token, plus the whitespace JSON grammars allow at each of the nine places between them (llama.cpp's
# allows up to 21 characters there).
JSON_OVERHEAD_TOKENS = 224
NO_JUDGE = ("no judge: answers were scored by the automatic scorers only "
            "(pass --judge-url or --judge-gguf to grade them)")


def reason_chars(max_tokens: int) -> int:
    """The reason's length cap: every token adds at least one character inside the string, so
    with this cap the JSON always closes within `max_tokens`, even for a model that rambles."""
    return max(1, min(MAX_REASON_CHARS, max_tokens - JSON_OVERHEAD_TOKENS))


def schema(max_reason_chars: int = MAX_REASON_CHARS) -> dict:
    return {"type": "object",
            "properties": {"reason": {"type": "string", "minLength": 1, "maxLength": max_reason_chars},
                           "verdict": {"type": "string", "enum": list(VERDICTS)}},
            "required": ["reason", "verdict"], "additionalProperties": False}


def messages(rubric: str, question: str, reference: str, answer: str) -> list[dict]:
    user = (f"Question:\n{question}\n\nReference answer:\n{reference}\n\n"
            f"Answer to grade:\n{answer.strip() or '(empty)'}")
    return [{"role": "system", "content": rubric}, {"role": "user", "content": user}]


def parse(text: str | None) -> dict | None:
    """The judge's verdict and reason, or None when the reply is not the JSON asked for."""
    try:
        obj = json.loads(text or "")
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("verdict") not in VERDICTS:
        return None
    reason = obj.get("reason")
    return {"verdict": obj["verdict"], "reason": reason.strip() if isinstance(reason, str) else ""}


def cache_key(judge: str, rubric_sha: str, sampling: dict, question: str, reference: str, answer: str) -> str:
    blob = json.dumps([PROMPT_VERSION, judge, rubric_sha, sampling, question, reference, answer],
                      ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def agreement(records: list[dict]) -> dict:
    """How often the judge and the automatic scorer agree on right/wrong, over the answers both
    graded. The judge's `correct` counts as right; `partly_correct` and `incorrect` as wrong."""
    pairs = [(r["judge"]["verdict"] == "correct", r["score"] == 1) for r in records
             if "verdict" in (r.get("judge") or {})]
    n = len(pairs)
    cells = Counter(pairs)
    both_right, both_wrong = cells[(True, True)], cells[(False, False)]
    out: dict[str, Any] = {"n": n, "rate": (both_right + both_wrong) / n if n else None,
           "both_right": both_right, "both_wrong": both_wrong,
           "judge_only": cells[(True, False)], "scorer_only": cells[(False, True)], "kappa": None}
    if n:
        p_judge = (both_right + cells[(True, False)]) / n
        p_scorer = (both_right + cells[(False, True)]) / n
        chance = p_judge * p_scorer + (1 - p_judge) * (1 - p_scorer)
        if chance < 1:
            out["kappa"] = (out["rate"] - chance) / (1 - chance)
    return out


def summarize(records: list[dict]) -> dict:
    """Verdict counts, judge accuracy and mean credit, overall and per category."""

    def block(rows: list[dict]) -> dict:
        judged = [r["judge"]["verdict"] for r in rows if "verdict" in (r.get("judge") or {})]
        counts = Counter(judged)
        return {"judged": len(judged), **{v: counts[v] for v in VERDICTS},
                "accuracy": counts["correct"] / len(judged) if judged else None,
                "mean_credit": sum(CREDIT[v] for v in judged) / len(judged) if judged else None}

    out = block(records)
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r["category"], []).append(r)
    out["by_category"] = {k: block(v) for k, v in sorted(groups.items())}
    return out


def default_cache() -> Path:
    return cache_dir() / "judge-cache.sqlite"


@dataclass
class JudgeOptions:
    url: str | None = None
    gguf: Path | None = None
    model: str | None = None
    key_env: str = "JUDGE_API_KEY"
    rubric: Path = DEFAULT_RUBRIC
    cache: Path | None = None
    concurrency: int | None = None
    parallel: int = 2  # slots of the server started on --judge-gguf
    timeout: float = 300.0
    retries: int = 2
    max_tokens: int = 1024

    @property
    def enabled(self) -> bool:
        return bool(self.url or self.gguf)


def check_options(o: JudgeOptions) -> None:
    """Reject bad judge settings with one line, before any model is asked anything."""
    if o.url and o.gguf:
        raise EvalError("give one judge: --judge-url URL or --judge-gguf FILE, not both")
    if o.url and not o.url.startswith(("http://", "https://")):
        raise EvalError(f"--judge-url must start with http:// or https:// (got {o.url!r})")
    if o.gguf is not None:
        if not o.gguf.is_file():
            raise EvalError(f"--judge-gguf {o.gguf}: no such file")
        with open(o.gguf, "rb") as fh:
            if fh.read(4) != b"GGUF":
                raise EvalError(f"--judge-gguf {o.gguf} is not a GGUF file")
    if not o.rubric.is_file():
        raise EvalError(f"--judge-rubric {o.rubric}: no such file")
    if not o.rubric.read_text(encoding="utf-8").strip():
        raise EvalError(f"--judge-rubric {o.rubric} is empty: write the grading rules there")
    if o.concurrency is not None and o.concurrency < 1:
        raise EvalError("--judge-concurrency must be >= 1")
    if o.parallel < 1:
        raise EvalError("--judge-parallel must be >= 1")
    if not 256 <= o.max_tokens <= 8192:
        raise EvalError("--judge-max-tokens must be between 256 and 8192")
    if o.timeout <= 0 or o.retries < 0:
        raise EvalError("--judge-timeout must be > 0 and --judge-retries >= 0")


class Judge:
    """`with Judge(opts) as j: j.grade(records)`: connects (or starts llama.cpp's server on a
    GGUF) on entry, stops what it started on exit."""

    def __init__(self, opts: JudgeOptions, log: Callable[[str], None] = lambda s: None):
        self.opts, self.log = opts, log
        self.rubric = opts.rubric.read_text(encoding="utf-8").strip()
        self.rubric_sha = sha256_file(opts.rubric)
        self.sampling = Sampling(temperature=0.0, top_p=1.0, max_tokens=opts.max_tokens)
        self.server: LlamaServer | None = None
        self.pool: ChatPool | None = None
        self.cache: AnswerCache | None = None

    def connect(self) -> None:
        o = self.opts
        key: str | None
        model: str | None  # None: the model the endpoint serves
        try:
            if o.gguf is not None:
                self.log(f"judge: starting llama.cpp's server on {o.gguf.name} ({o.parallel} slots)")
                self.server = LlamaServer(o.gguf, parallel=o.parallel, ctx_per_slot=4096)
                self.server.start()
                urls, key = [self.server.base_url], self.server.api_key
                model, extra = self._gguf_name()
            else:
                assert o.url is not None, "a judge has a URL or a GGUF"
                urls, key, extra, model = [o.url], os.environ.get(o.key_env) or None, "", o.model
            self.pool = ChatPool.connect(urls, model, key, identity_extra=extra, concurrency=o.concurrency,
                                         role="judge", schema_name="verdict", sampling=self.sampling,
                                         timeout=o.timeout, retries=o.retries)
        except UserError as exc:
            self.close()
            raise EvalError(str(exc)) from None

    def __enter__(self) -> Judge:
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
            self.cache = None
        if self.server is not None:
            self.server.stop()
            self.server = None

    def _gguf_name(self) -> tuple[str, str]:
        """A GGUF judge's model name and identity suffix, known before its server is started."""
        o = self.opts
        assert o.gguf is not None, "a judge at a URL is connected before grading"
        return o.model or o.gguf.stem, f"@sha256:{sha256_file(o.gguf, cache=True)}"

    def _identity(self) -> str:
        if self.pool is not None:
            return self.pool.identity
        return "".join(self._gguf_name())

    def describe(self) -> dict:
        pool = self.pool
        return {"model": pool.model if pool else self._gguf_name()[0],
                "identity": self._identity(),
                "endpoints": [e.url for e in pool.endpoints] if pool else [],
                "rubric": {"path": str(self.opts.rubric), "sha256": self.rubric_sha},
                "sampling": self.sampling.as_dict(), "max_reason_chars": reason_chars(self.opts.max_tokens),
                "prompt_version": PROMPT_VERSION}

    def grade(self, records: list[dict]) -> dict:
        """Grade every answered record in place (`record["judge"]`); the report's judge block.
        A GGUF judge is started only when some answer is not in the cache."""
        identity, sampling = self._identity(), self.sampling.as_dict()
        if self.cache is None:
            try:
                self.cache = AnswerCache(self.opts.cache or default_cache(), flag="--judge-cache")
            except UserError as exc:
                raise EvalError(str(exc)) from None
        cache = self.cache
        not_judged: Counter = Counter()
        misses = []
        hits = 0
        for rec in records:
            if rec.get("error"):
                not_judged["no_answer:" + rec["error"].split(":")[0]] += 1
                continue
            key = cache_key(identity, self.rubric_sha, sampling, rec["question"], rec["reference"], rec["answer"])
            cached = parse(cache.get(key))
            if cached is not None:
                rec["judge"] = {**cached, "cached": True}
                hits += 1
            else:
                misses.append((rec, key))
        pending = []
        if misses:
            if self.pool is None:
                self.connect()
            pool = self.pool
            assert pool is not None
            pool.start()
            for rec, key in misses:

                def keep(answer: Answer, key: str = key, label: str = rec["id"]) -> None:
                    if answer.text is not None and parse(answer.text) is not None:
                        cache.put(key, label, answer.text)

                msgs = messages(self.rubric, rec["question"], rec["reference"], rec["answer"])
                pending.append((rec, pool.submit(msgs, schema(reason_chars(self.opts.max_tokens)), seed=0,
                                                 on_answer=keep)))
        failed: Counter = Counter()
        width = len(str(len(pending)))
        for i, (rec, fut) in enumerate(pending, 1):
            answer: Answer = fut.result()
            verdict = parse(answer.text) if answer.failure is None else None
            if verdict is None:
                reason = answer.failure or "judge_unparseable"
                rec["judge"] = {"failure": reason}
                failed[reason] += 1
            else:
                rec["judge"] = {**verdict, "cached": False}
            self.log(f"judge [{i:>{width}}/{len(pending)}] {rec['id']}: "
                     f"{rec['judge'].get('verdict') or rec['judge']['failure']}")
        out = {"judge": self.describe(), "asked": len(pending), "from_cache": hits, "failed": dict(failed),
               "not_judged": dict(not_judged), "requests_sent": self.pool.requests_sent if self.pool else 0}
        out.update(summarize(records))
        out["agreement"] = agreement(records)
        return out
