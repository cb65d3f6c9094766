"""`physics-qa`: a teacher writes question-answer pairs from each paper.

    python -m dataset_builders build --spec physics-qa --input arxiv-metadata-oai-snapshot.json \\
        --teacher-gguf Qwen2.5-14B-Instruct-Q4_K_M.gguf --out data/physics-qa

Papers are selected exactly as in the other metadata contexts (filters, normalisation,
dedup, splits). Requests go out as papers are read, as many in flight as the teacher has
slots; answers come back in input order, so the output does not depend on timing. Each
answer is cached before it is used: after a crash or Ctrl-C, the same command resumes and
asks only what was never answered.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from qwenphysics.core.answer_cache import AnswerCache
from qwenphysics.core.chat_pool import Answer, ChatPool, Sampling
from qwenphysics.core.errors import UserError
from qwenphysics.core.llama_server import LlamaServer
from qwenphysics.hashing import sha256_file
from qwenphysics.toolchain import cache_dir

from .. import contamination, pipeline
from ..cluster import ray_address, reachable
from ..filters import category_check
from ..records import Drop, Paper
from ..spec import Spec
from . import prompt
from .distributed import Job, Teacher, ask_on_ray
from .pairs import PairFilter, PairRules, parse


@dataclass
class TeacherOptions:
    urls: list[str]
    model: str | None = None
    key_env: str = "TEACHER_API_KEY"
    gguf: Path | None = None
    parallel: int = 4  # slots of the llama.cpp server started on `gguf`
    ctx_per_slot: int = 4096
    concurrency: int | None = None  # requests in flight per URL (default: its slots)
    timeout: float = 600.0
    retries: int = 3
    cache: Path | None = None
    max_papers: int | None = None
    log: Path | None = None
    executor: str = "local"  # or "ray": ask from a Ray cluster, a batch of papers per task
    ray_address: str | None = None
    batch: int = 32  # papers per Ray task
    workers: int = 1  # CPUs of a Ray started for the run (no address)


def default_cache() -> Path:
    return cache_dir() / "teacher-cache.sqlite"


def check_options(opts: TeacherOptions) -> None:
    """Everything that can be wrong with the teacher options, before any work."""
    if not opts.urls and opts.gguf is None:
        raise UserError("physics-qa needs a teacher: --teacher-gguf MODEL.gguf (llama.cpp's server is started "
                        "on it here) or --teacher-url URL of an OpenAI-compatible server")
    if opts.urls and opts.gguf is not None:
        raise UserError("pass --teacher-url or --teacher-gguf, not both")
    if opts.gguf is not None and not opts.gguf.is_file():
        raise UserError(f"--teacher-gguf {opts.gguf} not found")
    for name in ("parallel", "ctx_per_slot", "retries"):
        if getattr(opts, name) < (0 if name == "retries" else 1):
            raise UserError(f"--teacher-{name.replace('_', '-')} must be positive")
    if opts.timeout <= 0:
        raise UserError("--teacher-timeout must be positive (seconds)")
    if opts.max_papers is not None and opts.max_papers < 1:
        raise UserError("--max-papers must be at least 1")
    if opts.executor not in ("local", "ray"):
        raise UserError(f"--executor {opts.executor}: physics-qa runs locally or on Ray (the teacher servers do "
                        "the work; Slurm is for the full-text map)")
    if opts.executor == "ray":
        if opts.gguf is not None:
            raise UserError("--executor ray asks teacher servers that are already running: give --teacher-url "
                            "(repeatable, e.g. one per GPU node) instead of --teacher-gguf")
        if opts.batch < 1:
            raise UserError("--qa-batch must be at least 1")
        if address := ray_address(opts.ray_address):
            reachable(address)
    elif opts.ray_address:
        raise UserError("--ray-address is for --executor ray")


class Generation:
    """Papers in, papers out in the same order, each with the teacher's answer attached
    (from the cache or asked now), with a bounded number waiting."""

    def __init__(self, spec: Spec, teacher: ChatPool, cache: AnswerCache, n_pairs: int, schema: dict,
                 max_text_chars: int, progress: bool):
        self.spec, self.teacher, self.cache = spec, teacher, cache
        self.n_pairs, self.schema, self.max_text_chars = n_pairs, schema, max_text_chars
        self.answers: dict[str, Answer] = {}
        self.texts: dict[str, str] = {}
        self.hits = self.asked = 0
        self.failed: Counter = Counter()
        self.progress = progress

    def key(self, paper: Paper, text: str) -> str:
        return prompt.fingerprint({
            "paper": paper.id, "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "teacher": self.teacher.identity, "sampling": self.teacher.sampling.as_dict(),
            "pairs": self.n_pairs, "schema": self.schema})

    def request(self, paper: Paper) -> tuple[str, str, list[dict], int]:
        """(text shown, cache key, messages, seed) for one paper."""
        text = paper.abstract[: self.max_text_chars]
        seed = int.from_bytes(hashlib.blake2b(paper.id.encode(), digest_size=4).digest(), "big") & 0x7FFFFFFF
        return text, self.key(paper, text), prompt.messages(paper.title, text, self.n_pairs), seed

    def uncached(self, selected: Iterator[tuple[Paper, int]], max_papers: int | None) -> list[Job]:
        """The requests of the papers `run` would ask about, whose answer is not cached."""
        jobs = []
        for n, (paper, _) in enumerate(selected, 1):
            _, key, messages, seed = self.request(paper)
            if self.cache.get(key) is None:
                jobs.append(Job(key, paper.id, messages, seed))
            if max_papers is not None and n >= max_papers:
                break
        return jobs

    def _job(self, paper: Paper) -> tuple[Paper, Future | Answer, str]:
        text, key, messages, seed = self.request(paper)
        self.texts[paper.id] = text
        cached = self.cache.get(key)
        if cached is not None:
            self.hits += 1
            return paper, Answer(text=cached), key
        self.asked += 1

        def keep(answer: Answer, pid: str = paper.id) -> None:
            if answer.text is not None:
                self.cache.put(key, pid, answer.text)

        return paper, self.teacher.submit(messages, self.schema, seed, keep), key

    def _finish(self, paper: Paper, pending: Future | Answer, key: str) -> Paper:
        answer = pending if isinstance(pending, Answer) else pending.result()  # cached when it came
        if answer.failure:
            self.failed[answer.failure] += 1
        self.answers[paper.id] = answer
        return paper

    def run(self, selected: Iterator[tuple[Paper, int]], max_papers: int | None) -> Iterator[Paper]:
        bar = None
        if self.progress:

            bar = tqdm(total=max_papers, unit=" paper", desc="physics-qa", file=sys.stderr, mininterval=1.0)
        window: deque = deque()
        limit = self.teacher.in_flight * 4
        n = 0
        try:
            for paper, _ in selected:
                window.append(self._job(paper))
                n += 1
                while len(window) > limit:
                    yield self._finish(*window.popleft())
                    self._tick(bar)
                if max_papers is not None and n >= max_papers:
                    break
            while window:
                yield self._finish(*window.popleft())
                self._tick(bar)
        finally:
            if bar is not None:
                bar.close()

    def _tick(self, bar) -> None:
        if bar is not None:
            bar.set_postfix(cached=self.hits, asked=self.asked, failed=sum(self.failed.values()), refresh=False)
            bar.update(1)


def build_physics_qa(spec: Spec, inputs: list[str], out: Path, opts: TeacherOptions, *, limit: int | None = None,
                     progress: bool = False, hash_inputs: bool = True,
                     log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> pipeline.BuildResult:
    check_options(opts)
    o = spec.options
    n_pairs = int(o.get("pairs_per_paper", 4))
    rules = PairRules.from_options(o.get("pair_rules") or {})
    schema = prompt.schema(n_pairs, rules.max_question_chars, rules.max_answer_chars)
    sampling = Sampling(**(o.get("sampling") or {}))
    cache = AnswerCache(opts.cache or default_cache())
    server = None
    key: str | None
    model: str | None  # None: the model the endpoint serves
    t0 = time.perf_counter()
    try:
        if opts.gguf is not None:
            log(f"starting llama.cpp's server on {opts.gguf.name} ({opts.parallel} slots) as the teacher")
            server = LlamaServer(opts.gguf, parallel=opts.parallel, ctx_per_slot=opts.ctx_per_slot, log=opts.log)
            server.start()
            urls, key = [server.base_url], server.api_key
            extra = f"@sha256:{sha256_file(opts.gguf, cache=True)}"
            model = opts.model or opts.gguf.stem
        else:
            urls, key, extra, model = opts.urls, os.environ.get(opts.key_env) or None, "", opts.model
        teacher = ChatPool.connect(urls, model, key, identity_extra=extra, concurrency=opts.concurrency,
                                  sampling=sampling, timeout=opts.timeout, retries=opts.retries)
        teacher.start()
        gen = Generation(spec, teacher, cache, n_pairs, schema, int(o.get("max_text_chars", 6000)), progress)
        if opts.executor == "ray":
            prefilter = category_check(spec.filters)
            selected = pipeline.select(spec, pipeline.iter_papers(inputs, limit, Counter(), [], prefilter=prefilter),
                                       Counter())
            jobs = gen.uncached(selected, opts.max_papers)
            log(f"qa: {len(jobs)} papers to ask on Ray, {opts.batch} per task")
            ask_on_ray(jobs, Teacher(tuple(e.url for e in teacher.endpoints), tuple(e.slots for e in teacher.endpoints),
                                     teacher.model, opts.key_env, sampling, opts.timeout, opts.retries, schema),
                       cache, batch=opts.batch, address=ray_address(opts.ray_address), workers=opts.workers, log=log)
        pair_filter = PairFilter(rules, contamination.for_spec(spec).check)
        counts: Counter = Counter()
        issues: list[dict] = []
        source = pipeline.iter_papers(inputs, limit, counts, issues, prefilter=category_check(spec.filters))
        summary: dict = {}

        def papers() -> Iterator[Paper]:
            yield from gen.run(pipeline.select(spec, source, counts), opts.max_papers)
            summary.update(describe(teacher, gen, rules, n_pairs, cache, t0))  # before the manifest is written

        def render(s: Spec, paper: Paper, bucket: int) -> list[dict] | Drop:
            answer = gen.answers.pop(paper.id)
            text = gen.texts.pop(paper.id)
            if answer.failure:
                return Drop(answer.failure)
            pairs = parse(answer.text)
            if pairs is None:
                return Drop("unparseable_output")
            dropped: Counter = Counter()
            examples = pair_filter.examples(pairs, paper.title + "\n" + text, paper.id, s.system_prompt, dropped)
            if not examples:
                last = next(reversed(dropped))
                dropped[last] -= 1
                for reason, k in (+dropped).items():
                    counts["example_drop:" + reason] += k
                return Drop(last)
            for reason, k in dropped.items():
                counts["example_drop:" + reason] += k
            return examples

        res = pipeline.build(spec, inputs, out, source=pipeline.Source(papers(), counts, issues),
                             examples=pipeline.Examples(render),
                             report=pipeline.Report({"teacher": summary}, lambda m: card_notes(m["teacher"])),
                             progress=False, hash_inputs=hash_inputs)
        if gen.failed:
            log(f"{sum(gen.failed.values())} papers got no usable answer from the teacher "
                f"({', '.join(f'{k}: {v}' for k, v in gen.failed.items())}); run the same command again to ask "
                "for them (answers already given are cached)")
        return res
    finally:
        cache.close()
        if server is not None:
            server.stop()


def describe(teacher: ChatPool, gen: Generation, rules: PairRules, n_pairs: int, cache: AnswerCache,
             t0: float) -> dict:
    return {**teacher.describe(), "prompt_version": prompt.PROMPT_VERSION,
            "system_prompt_sha256": hashlib.sha256(prompt.SYSTEM.encode()).hexdigest(),
            "pairs_per_paper": n_pairs, "pair_rules": dict(rules.__dict__),
            "papers_answered_from_cache": gen.hits, "papers_asked": gen.asked,
            "requests_sent": teacher.requests_sent, "request_failures": teacher.failures,
            "papers_without_answer": dict(gen.failed), "cache": str(cache.path),
            "seconds": round(time.perf_counter() - t0, 1)}


def card_notes(t: dict) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in (
        ("teacher model", t["model"]), ("identity (cache key)", t["identity"]),
        ("prompt version", t["prompt_version"]), ("pairs asked per paper", t["pairs_per_paper"]),
        ("sampling", ", ".join(f"{k}={v}" for k, v in t["sampling"].items())),
        ("papers asked / from cache", f"{t['papers_asked']} / {t['papers_answered_from_cache']}"),
        ("requests sent (retries included)", t["requests_sent"]),
        ("papers without an answer", sum(t["papers_without_answer"].values()))))
    return ("## Teacher\n\nQuestion-answer pairs written by a teacher model from each paper's title and "
            "abstract, filtered pair by pair (drops by reason in `manifest.json`).\n\n| | |\n|---|---|\n" + rows)
