"""An OpenAI-compatible model asked by many requests in flight: the Q&A builders' teacher and
the evaluation's judge.

The model is any server with `/v1/chat/completions` that accepts a JSON schema in
`response_format` (llama.cpp's server, vLLM, a hosted API), at one URL or several (each
gets as many requests in flight as it has slots: llama.cpp reports them at `/props`; other
servers get `--<role>-concurrency`). Every request has a timeout and bounded retries with
exponential backoff; a model that fails `MAX_CONSECUTIVE_FAILURES` times in a row is
considered down, and the requests still waiting fail as `<role>_unavailable` at once instead
of each waiting out its retries (the role is `teacher` or `judge`). Nothing here raises on a
bad answer: the caller gets either the answer text or the reason it has none.

Why not `distilabel`: its pipelines cache and resume per batch (one failed request loses the
whole batch's answers), it asks for structured output through `instructor`'s tool calling
instead of the server's `response_format` JSON schema, and it adds about twenty packages to
an environment that must stay small. A per-paper cache and one request per paper is what
resuming without asking twice needs.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import requests

from .errors import UserError
from .llama_server import server_slots

MAX_CONSECUTIVE_FAILURES = 8
DEFAULT_SLOTS = 4


@dataclass
class Sampling:
    temperature: float = 0.3
    top_p: float = 0.9
    max_tokens: int = 2048

    def as_dict(self) -> dict:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens}


@dataclass
class Endpoint:
    url: str  # the OpenAI base URL, ending in /v1
    slots: int


@dataclass
class Answer:
    text: str | None = None  # the message content
    failure: str | None = None  # why there is none: teacher_timeout, judge_unreachable, ...
    attempts: int = 0


@dataclass
class ChatPool:
    endpoints: list[Endpoint]
    model: str
    key: str | None
    identity: str  # what the cache key names: the model, and a local GGUF's SHA-256
    sampling: Sampling = field(default_factory=Sampling)
    timeout: float = 600.0
    retries: int = 3
    backoff: float = 1.0
    role: str = "teacher"  # names the command-line flags in errors and the failure reasons
    schema_name: str = "qa_pairs"
    requests_sent: int = 0
    failures: int = 0
    _consecutive: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _jobs: queue.Queue = field(default_factory=queue.Queue)
    _threads: list = field(default_factory=list)

    # -- setup -------------------------------------------------------------------------------
    @classmethod
    def connect(cls, urls: list[str], model: str | None, key: str | None, *, identity_extra: str = "",
                concurrency: int | None = None, role: str = "teacher", **kw) -> ChatPool:
        """Check every URL answers with this key before any work, learn its slots and model."""
        endpoints, served = [], None
        for raw in urls:
            url = raw.rstrip("/")
            if not url.endswith("/v1"):
                url += "/v1"
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            try:
                r = requests.get(f"{url}/models", headers=headers, timeout=15)
            except requests.RequestException as e:
                raise UserError(f"{role} {url} is not reachable ({type(e).__name__}): start it or fix "
                                f"--{role}-url") from None
            if r.status_code in (401, 403):
                raise UserError(f"{role} {url} refused the API key ({r.status_code}): set the variable "
                                f"named by --{role}-key-env")
            if r.status_code != 200:
                raise UserError(f"{role} {url}/models answered {r.status_code}: is it an OpenAI-compatible server?")
            try:
                ids = [m["id"] for m in r.json().get("data", [])]
            except (ValueError, KeyError, TypeError, AttributeError):
                ids = []
            served = served or (ids[0] if ids else None)
            slots = concurrency or server_slots(url, key) or DEFAULT_SLOTS
            endpoints.append(Endpoint(url, slots))
        name = model or served
        if not name:
            raise UserError(f"the {role} lists no model: pass --{role}-model NAME")
        return cls(endpoints=endpoints, model=name, key=key, identity=f"{name}{identity_extra}", role=role, **kw)

    @property
    def in_flight(self) -> int:
        return sum(e.slots for e in self.endpoints)

    def describe(self) -> dict:
        return {"model": self.model, "identity": self.identity,
                "endpoints": [{"url": e.url, "slots": e.slots} for e in self.endpoints],
                "sampling": self.sampling.as_dict(), "timeout_s": self.timeout, "retries": self.retries}

    # -- asking --------------------------------------------------------------------------------
    def start(self) -> None:
        for e in self.endpoints:
            for _ in range(e.slots):
                t = threading.Thread(target=self._work, args=(e,), daemon=True, name=self.role)
                t.start()
                self._threads.append(t)

    def submit(self, messages: list[dict], schema: dict, seed: int,
               on_answer: Callable[[Answer], None] | None = None) -> Future:
        """Ask; `on_answer` runs on the worker thread as soon as the answer is in (the caller
        caches it there, so an answer is kept even if the build dies before using it)."""
        fut: Future = Future()
        self._jobs.put((messages, schema, seed, on_answer, fut))
        return fut

    def close(self) -> None:
        """Let the worker threads end once the requests already submitted are answered."""
        for _ in self._threads:
            self._jobs.put(None)
        self._threads.clear()

    def _work(self, endpoint: Endpoint) -> None:
        session = requests.Session()
        if self.key:
            session.headers["Authorization"] = f"Bearer {self.key}"
        while True:
            job = self._jobs.get()
            if job is None:
                return
            messages, schema, seed, on_answer, fut = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                answer = self._ask(session, endpoint, messages, schema, seed)
                if on_answer is not None:
                    on_answer(answer)
            except BaseException as e:  # never leave the caller waiting
                answer = Answer(failure=f"{self.role}_error:{type(e).__name__}")
            fut.set_result(answer)

    def _ask(self, session: requests.Session, endpoint: Endpoint, messages: list[dict], schema: dict,
             seed: int) -> Answer:
        body = {"model": self.model, "messages": messages, "seed": seed, **self.sampling.as_dict(),
                "response_format": {"type": "json_schema",
                                    "json_schema": {"name": self.schema_name, "strict": True, "schema": schema}}}
        role = self.role
        failure = f"{role}_unavailable"
        for attempt in range(self.retries + 1):
            if self._consecutive >= MAX_CONSECUTIVE_FAILURES:
                return Answer(failure=f"{role}_unavailable", attempts=attempt)
            if attempt:
                time.sleep(min(30.0, self.backoff * 2 ** (attempt - 1)) * (0.5 + random.random()))
            with self._lock:
                self.requests_sent += 1
            retry = True
            try:
                r = session.post(f"{endpoint.url}/chat/completions", json=body, timeout=(10, self.timeout))
                if r.status_code == 200:
                    content = r.json()["choices"][0]["message"]["content"]
                    with self._lock:
                        self._consecutive = 0
                    return Answer(text=content or "", attempts=attempt + 1)
                failure = f"{role}_http_{r.status_code}"
                retry = r.status_code == 429 or r.status_code >= 500
            except requests.Timeout:
                failure = f"{role}_timeout"
            except requests.ConnectionError:
                failure = f"{role}_unreachable"
            except (ValueError, KeyError, IndexError, TypeError):
                failure, retry = f"{role}_bad_response", False
            with self._lock:
                self.failures += 1
                self._consecutive += 1
            if not retry:
                break
        return Answer(failure=failure, attempts=self.retries + 1)
