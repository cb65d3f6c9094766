"""The teacher's questions asked from a Ray cluster, one task per batch of papers.

With `--executor ray` a `physics-qa` build first selects its papers on this machine (the
same selection as the local route), keeps those whose answer is not cached, and hands them
to Ray in batches of `--qa-batch`. Each task asks the teacher servers (`--teacher-url`,
repeatable: e.g. one llama.cpp or vLLM server per GPU node) for its batch, with its share
of their slots, and returns the answers; this machine stores them in the answer cache as
tasks finish. The build then runs as the local route does and finds every answer cached, so
its output is the local route's for the same answers. A task whose worker dies is run again
(`RAY_RETRIES`); an answer that failed is asked once more by the local pass.

The API key is read on each worker from the variable `--teacher-key-env` names (set it on
every node); it never travels through Ray.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

from qwenphysics.core.answer_cache import AnswerCache
from qwenphysics.core.chat_pool import ChatPool, Endpoint, Sampling

from ..cluster import as_completed, ray_session

RAY_RETRIES = 3


@dataclass(frozen=True)
class Job:
    key: str  # the answer cache's key
    paper: str
    messages: list
    seed: int


@dataclass(frozen=True)
class Teacher:
    """What a task needs to ask the teacher (no secret: the key is read on the worker)."""

    urls: tuple[str, ...]
    slots: tuple[int, ...]
    model: str
    key_env: str
    sampling: Sampling
    timeout: float
    retries: int
    schema: dict


def ask_batch(teacher: Teacher, jobs: list[Job], share: int) -> list[tuple[str, str, str | None, str | None]]:
    """(key, paper, answer text or None, failure or None) for each job, in order."""
    pool = ChatPool(endpoints=[Endpoint(u, max(1, math.ceil(s / share))) for u, s in zip(teacher.urls, teacher.slots)],
                    model=teacher.model, key=os.environ.get(teacher.key_env) or None, identity=teacher.model,
                    sampling=teacher.sampling, timeout=teacher.timeout, retries=teacher.retries)
    pool.start()
    try:
        futures = [pool.submit(j.messages, teacher.schema, j.seed) for j in jobs]
        answers = [f.result() for f in futures]
    finally:
        pool.close()
    return [(j.key, j.paper, a.text, a.failure) for j, a in zip(jobs, answers)]


def ask_on_ray(jobs: list[Job], teacher: Teacher, cache: AnswerCache, *, batch: int, address: str | None,
               workers: int, log: Callable[[str], None]) -> tuple[int, int]:
    """Ask every job on Ray, caching answers as batches finish: (answered, failed)."""
    if not jobs:
        log("qa: every selected paper's answer is cached; nothing to ask on the cluster")
        return 0, 0
    batches = [jobs[i:i + batch] for i in range(0, len(jobs), batch)]
    answered = failed = 0
    with ray_session(address, workers) as ray:
        parallel = max(1, min(len(batches), int(ray.cluster_resources().get("CPU", 1))))
        task = ray.remote(num_cpus=1, max_retries=RAY_RETRIES)(ask_batch)
        pending = {task.remote(teacher, b, parallel): i for i, b in enumerate(batches, 1)}
        for i, results in as_completed(ray, pending, lambda i: f"Q&A batch {i}"):
            ok = 0
            for key, paper, text, _failure in results:
                if text is not None:
                    cache.put(key, paper, text)
                    ok += 1
            answered += ok
            failed += len(results) - ok
            log(f"[qa batch {i}/{len(batches)}] {len(results)} papers: {ok} answered, "
                f"{len(results) - ok} without an answer")
    return answered, failed
