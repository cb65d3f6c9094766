"""Soak test of the local serving stack: concurrent streaming chats, and a llama server restart.

Starts the local stack (scripts/serve.py's, auth on, on 127.0.0.1 only), then
  1. N concurrent streaming chats straight to the llama server for D seconds,
  2. the same through Open WebUI (the physics preset),
  3. restarts the llama server while chats go on through Open WebUI; the chats that fail while
     it is down are counted, then every chat after it must succeed, without restarting Open WebUI.
Prints a table (requests, errors, p50/p95 time to first token, tokens/s per chat and in all) and
optionally writes it as JSON. All traffic goes to 127.0.0.1; every loop is bounded in time.

Usage:
  .venv/bin/python benchmarks/soak_serve.py --model models/qwen3b-physics/qwen3b-physics-Q4_K_M.gguf
  .venv/bin/python benchmarks/soak_serve.py --concurrency 8 --duration 60 --max-tokens 64 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qwenphysics import serving  # noqa: E402

PROMPTS = [
    "What is the Riemann zeta function?",
    "Explain the Lorentz transformation in two sentences.",
    "Why is the sky blue?",
    "State Noether's theorem.",
    "What sets the Chandrasekhar limit?",
    "Derive the period of a small-angle pendulum.",
    "What is a Cooper pair?",
    "What does the Hubble constant measure?",
]


@dataclass
class Result:
    ok: bool
    ttft: float | None = None  # seconds to the first content token
    tokens: int = 0
    seconds: float = 0.0  # first token to last
    error: str = ""
    started: float = 0.0


@dataclass
class Phase:
    name: str
    results: list[Result] = field(default_factory=list)
    wall: float = 0.0
    note: str = ""

    def row(self) -> dict:
        ok = [r for r in self.results if r.ok]
        ttfts = sorted(r.ttft for r in ok if r.ttft is not None)
        rates = [(r.tokens - 1) / r.seconds for r in ok if r.tokens > 1 and r.seconds > 0]
        return {
            "phase": self.name,
            "requests": len(self.results),
            "errors": len(self.results) - len(ok),
            "ttft_p50_s": pct(ttfts, 50),
            "ttft_p95_s": pct(ttfts, 95),
            "tok_s_per_chat": statistics.median(rates) if rates else None,
            "tok_s_total": sum(r.tokens for r in ok) / self.wall if self.wall else None,
            "note": self.note,
            "error_samples": sorted({r.error for r in self.results if not r.ok})[:3],
        }


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]


def stream_chat(
    url: str, token: str, model: str, prompt: str, max_tokens: int, timeout: float
) -> Result:
    """One streaming chat completion; counts content chunks (llama-server sends one per token)."""
    t0 = time.monotonic()
    res = Result(ok=False, started=t0)
    body = {
        "model": model,
        "stream": True,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": prompt}],
    }
    try:
        with requests.post(
            url,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            stream=True,
            timeout=timeout,
        ) as r:
            if r.status_code != 200:
                res.error = f"HTTP {r.status_code}: {r.text[:120]}"
                return res
            first = last = None
            done = False
            for line in r.iter_lines():  # bytes: str.splitlines would split inside the JSON
                if time.monotonic() - t0 > timeout:
                    res.error = "timed out mid-stream"
                    return res
                if not line.startswith(b"data: "):
                    continue
                data = line[6:]
                if data == b"[DONE]":
                    done = True
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    res.error = str(chunk["error"])[:120]
                    return res
                for choice in chunk.get("choices") or []:
                    if (choice.get("delta") or {}).get("content"):
                        last = time.monotonic()
                        first = first or last
                        res.tokens += 1
            if not done or first is None:
                res.error = "stream ended without tokens or [DONE]"
                return res
            res.ttft, res.seconds, res.ok = first - t0, last - first, True
    except (requests.RequestException, ValueError) as e:
        res.error = f"{type(e).__name__}: {str(e)[:120]}"
    return res


def soak(
    name: str,
    url: str,
    token: str,
    model: str,
    concurrency: int,
    duration: float,
    max_tokens: int,
    timeout: float,
    during=None,
) -> Phase:
    """`concurrency` workers chat back to back for `duration` seconds; `during(deadline)` runs alongside."""
    phase = Phase(name)
    lock = threading.Lock()
    t0 = time.monotonic()
    deadline = [t0 + duration]  # `during` may extend it

    def worker(i: int) -> None:
        n = 0
        while time.monotonic() < deadline[0]:
            r = stream_chat(url, token, model, PROMPTS[(i + n) % len(PROMPTS)], max_tokens, timeout)
            with lock:
                phase.results.append(r)
            n += 1
            if not r.ok:
                time.sleep(0.5)  # bounded retry pace while a server is down

    with ThreadPoolExecutor(concurrency + 1) as pool:
        futures = [pool.submit(worker, i) for i in range(concurrency)]
        if during is not None:
            phase.note = during(deadline)
        for f in futures:
            f.result()
    phase.wall = time.monotonic() - t0
    return phase


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(rows: list[dict], header: str) -> None:
    print(f"\n{header}")
    print(
        f"{'phase':<30} {'requests':>8} {'errors':>6} {'TTFT p50':>9} {'TTFT p95':>9} "
        f"{'tok/s/chat':>10} {'tok/s all':>9}"
    )
    for r in rows:
        print(
            f"{r['phase']:<30} {r['requests']:>8} {r['errors']:>6} {fmt(r['ttft_p50_s'], '8.3f')}s "
            f"{fmt(r['ttft_p95_s'], '8.3f')}s {fmt(r['tok_s_per_chat'], '10.1f')} {fmt(r['tok_s_total'], '9.1f')}"
        )
    for r in rows:
        if r["note"]:
            print(f"  {r['phase'].strip()}: {r['note']}")
        for e in r["error_samples"]:
            print(f"  {r['phase'].strip()} error: {e}")


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="soak_serve.py", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model", type=Path, help="GGUF (default: the newest under models/, Q4_K_M first)"
    )
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--duration", type=float, default=60.0, help="seconds per phase")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--parallel", type=int, help="llama server slots (default: --concurrency)")
    p.add_argument("--threads", type=int, help="llama server threads (default: all cores)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds allowed per chat")
    p.add_argument("--no-restart", action="store_true", help="skip the restart phase")
    p.add_argument("--json", type=Path, help="also write the table here")
    args = p.parse_args(argv)
    for name in ("concurrency", "max_tokens"):
        if not 1 <= getattr(args, name) <= 64:
            p.error(f"--{name.replace('_', '-')} must be between 1 and 64")
    if not 1 <= args.duration <= 3600:
        p.error("--duration must be between 1 and 3600 seconds")

    try:
        model = args.model or serving.find_default_model()
        data = Path(tempfile.mkdtemp(prefix="soak-webui-"))
        config = serving.StackConfig(
            model=model,
            parallel=args.parallel or args.concurrency,
            threads=args.threads,
            data_dir=data,
            admin_email="admin@localhost",
            webui_env={"ENABLE_TITLE_GENERATION": "False"},
        )
        print(f"starting the stack on {model.name} (logs: {config.log_dir})", flush=True)
        with serving.LocalStack(config) as stack:
            common = dict(
                concurrency=args.concurrency,
                duration=args.duration,
                max_tokens=args.max_tokens,
                timeout=args.timeout,
            )
            phases = []
            print(
                f"phase 1: {args.concurrency} chats -> llama server for {args.duration:.0f} s",
                flush=True,
            )
            phases.append(
                soak(
                    "llama-server direct",
                    f"{stack.openai_base_url}/chat/completions",
                    stack.api_key,
                    stack.model,
                    **common,
                )
            )
            webui = f"{stack.webui_url}/api/chat/completions"
            print(
                f"phase 2: {args.concurrency} chats -> Open WebUI for {args.duration:.0f} s",
                flush=True,
            )
            phases.append(
                soak("Open WebUI (preset)", webui, stack.webui_token, stack.preset_model, **common)
            )
            if not args.no_restart:
                webui_pid = stack.webui_proc.pid
                restart: dict[str, float] = {}

                def restart_llama(deadline: list[float]) -> str:
                    time.sleep(max(0.0, (deadline[0] - time.monotonic()) / 3))
                    end = deadline[0]
                    deadline[0] = time.monotonic() + 600  # chats go on while it restarts (bounded)
                    restart["at"] = time.monotonic()
                    restart["down"] = stack.restart_llama()
                    restart["back"] = time.monotonic()
                    # chats go on for at least a third of the phase after the server is back
                    deadline[0] = max(end, restart["back"] + args.duration / 3)
                    return ""

                print(
                    "phase 3: the same, restarting the llama server a third of the way in",
                    flush=True,
                )
                t0 = time.monotonic()
                phase = soak(
                    "Open WebUI, llama restarted",
                    webui,
                    stack.webui_token,
                    stack.preset_model,
                    during=restart_llama,
                    **common,
                )
                after = Phase("  chats begun after it was back")
                after.results = [r for r in phase.results if r.started >= restart["back"]]
                after.wall = max(1e-9, t0 + phase.wall - restart["back"])
                same_webui = stack.webui_proc.pid == webui_pid and stack.webui_proc.poll() is None
                recovered = bool(after.results) and all(r.ok for r in after.results) and same_webui
                failed = sum(1 for r in phase.results if not r.ok and r.started < restart["back"])
                phase.note = (
                    f"llama server stopped at +{restart['at'] - t0:.0f} s and healthy again "
                    f"{restart['down']:.1f} s later; {failed} chats failed meanwhile (in flight "
                    f"or retried every 0.5 s while it was down); Open WebUI kept running: "
                    f"{same_webui}; recovered: {'yes' if recovered else 'NO -- RECOVERY FAILED'}"
                )
                phases += [phase, after]
        rows = [ph.row() for ph in phases]
    except serving.ServeError as e:
        print(f"soak_serve.py: error: {e}", file=sys.stderr)
        return 2
    print_table(
        rows,
        f"{args.concurrency} concurrent streaming chats, {args.duration:.0f} s per phase, "
        f"max {args.max_tokens} tokens, model {model.name}, parallel "
        f"{args.parallel or args.concurrency}",
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "model": str(model),
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "phases": rows,
                },
                indent=2,
            )
        )
    bad = (
        rows[0]["errors"] or rows[1]["errors"] or any("RECOVERY FAILED" in r["note"] for r in rows)
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
