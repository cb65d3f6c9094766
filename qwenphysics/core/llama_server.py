"""llama.cpp's `llama-server` as a child process: loopback only, the key in its environment,
gone with the process that started it. The dataset builders start one as the Q&A teacher;
`qwenphysics.serving` runs the chat stack with its own launcher (it also runs where only the
standard library exists)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from qwenphysics.toolchain import ToolchainMissing, find_toolchain

from .errors import UserError
from .processes import new_session_killed_with_parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def get_json(url: str, key: str | None = None, timeout: float = 5.0) -> dict:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - loopback or user-given URL
        return json.loads(r.read().decode("utf-8"))


class LlamaServer:
    """`with LlamaServer(gguf, parallel=4) as s: s.base_url, s.api_key`."""

    def __init__(self, model: Path, *, parallel: int = 4, ctx_per_slot: int = 4096,
                 threads: int | None = None, log: Path | None = None, start_timeout: float = 600,
                 extra_args: list[str] | None = None):
        self.model = Path(model)
        self.parallel, self.ctx_per_slot = parallel, ctx_per_slot
        self.threads = threads or os.cpu_count() or 1
        self.log = log
        self.start_timeout = start_timeout
        self.extra_args = list(extra_args or [])
        self.api_key = secrets.token_hex(24)
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def __enter__(self) -> LlamaServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if not self.model.is_file():
            raise UserError(f"teacher model {self.model} not found: pass an existing .gguf file")
        with open(self.model, "rb") as f:
            if f.read(4) != b"GGUF":
                raise UserError(f"teacher model {self.model} is not a GGUF file")
        try:
            binary = find_toolchain().bin("llama-server")
        except ToolchainMissing as e:
            raise UserError(str(e)) from None
        self.port = free_port()
        cmd = [str(binary), "--host", "127.0.0.1", "--port", str(self.port), "--model", str(self.model),
               "--parallel", str(self.parallel), "--ctx-size", str(self.ctx_per_slot * self.parallel),
               "--threads", str(self.threads), "--jinja", "--no-webui", *self.extra_args]
        env = dict(os.environ, LLAMA_API_KEY=self.api_key)
        env.setdefault("OMP_WAIT_POLICY", "passive")
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         env=env, preexec_fn=new_session_killed_with_parent)
        finally:
            if not isinstance(out, int):  # the log file we opened (subprocess.DEVNULL is an int)
                out.close()
        deadline = time.monotonic() + self.start_timeout
        where = f": see {self.log}" if self.log else ""
        while True:
            if self.proc.poll() is not None:
                raise UserError(f"llama-server exited with code {self.proc.returncode} while loading "
                                f"{self.model.name}{where}")
            try:
                get_json(f"{self.url}/health", timeout=2)
                return
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise UserError(f"llama-server did not load {self.model.name} within {self.start_timeout:.0f} s{where}")
            time.sleep(0.3)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


def server_slots(base_url: str, key: str | None) -> int | None:
    """The parallel slots a llama.cpp server reports (`/props`), or None for another server."""
    root = base_url.rstrip("/")
    if root.endswith("/v1"):
        root = root[:-3]
    try:
        n = get_json(f"{root}/props", key).get("total_slots")
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return int(n) if isinstance(n, int) and n > 0 else None
