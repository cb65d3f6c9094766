"""Provisioning a running Open WebUI for QwenPhysics: the physics preset (an Open WebUI model
carrying the system prompt and the sampling defaults) and the context-window filter, through
Open WebUI's admin API. Idempotent.

The standard library only: Compose's one-shot `webui-init` service mounts this one file (and
the preset, the system prompt and the filter) into the Open WebUI image and runs

    python provision.py --webui-url http://open-webui:8080 --preset serve/physics-preset.json \
        --context-filter serve/context_window.py

with the admin's credentials in WEBUI_ADMIN_EMAIL / WEBUI_ADMIN_PASSWORD and the llama
server's context per chat in CTX_SIZE. The local stack (`qwenphysics.serving`) calls the same
functions.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

SYSTEM_PROMPT_NAME = "system-prompt.txt"  # beside the preset
CONTEXT_FILTER_ID = "qwenphysics_context_window"


class ServeError(RuntimeError):
    """A problem the user can fix; the message is one line and says how."""


# Both servers are ours and near (loopback or the Compose network): never through a proxy.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_json(
    method: str, url: str, body: dict | None = None, token: str | None = None, timeout: float = 30.0
) -> tuple[int, object]:
    """(status, parsed JSON or text) of one request; connection errors raise OSError."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def wait_http_ok(
    url: str,
    timeout: float,
    proc: subprocess.Popen | None = None,
    name: str = "server",
    log: Path | None = None,
    token: str | None = None,
) -> None:
    """Poll `url` until it answers 200; fail early when `proc` exits."""
    deadline = time.monotonic() + timeout
    where = f": see {log}" if log else ""
    while True:
        if proc is not None and proc.poll() is not None:
            raise ServeError(f"{name} exited with code {proc.returncode} while starting{where}")
        try:
            status, _ = http_json("GET", url, token=token, timeout=5)
            if status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise ServeError(f"{name} was not healthy at {url} within {timeout:.0f} s{where}")
        time.sleep(0.5)


def load_preset(path: Path) -> dict:
    try:
        preset = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ServeError(f"preset {path} is missing: restore serve/physics-preset.json") from None
    except json.JSONDecodeError as e:
        raise ServeError(f"preset {path} is not valid JSON (line {e.lineno}): fix it") from None
    for key in ("id", "base_model_id", "name", "params"):
        if key not in preset:
            raise ServeError(f"preset {path} lacks {key!r}: add it")
    if "system" in preset["params"]:
        raise ServeError(f"preset {path} sets its own system prompt: remove params.system; the preset takes "
                         f"the one in {SYSTEM_PROMPT_NAME} beside it, as training and evaluation do")
    prompt_file = Path(path).parent / SYSTEM_PROMPT_NAME
    try:
        preset["params"]["system"] = prompt_file.read_text(encoding="utf-8").strip()
    except OSError:
        raise ServeError(f"{prompt_file} is missing: restore serve/{SYSTEM_PROMPT_NAME}") from None
    return preset


def webui_signin(webui_url: str, email: str = "", password: str = "") -> str:
    """A session token (empty credentials work only when Open WebUI runs with auth off)."""
    status, body = http_json(
        "POST", f"{webui_url}/api/v1/auths/signin", {"email": email, "password": password}
    )
    if status != 200 or not isinstance(body, dict) or "token" not in body:
        detail = body.get("detail") if isinstance(body, dict) else body
        raise ServeError(
            f"Open WebUI sign-in as {email or '(auth off)'} failed ({status}: {detail}): "
            "check WEBUI_ADMIN_EMAIL/WEBUI_ADMIN_PASSWORD (the admin is created on first start only)"
        )
    return body["token"]


def provision_preset(
    webui_url: str, token: str, preset: dict | Path, timeout: float = 120.0
) -> str:
    """Import (create or update) the physics preset into Open WebUI and wait until it is listed.

    Returns the preset's model id. Idempotent.
    """
    if not isinstance(preset, dict):
        preset = load_preset(Path(preset))
    # Open WebUI lets a user reach a preset only if its base model is registered, active and
    # readable too: register the served model with the preset's audience.
    base = {
        "id": preset["base_model_id"],
        "base_model_id": None,
        "name": f"{preset['base_model_id']} (no system prompt)",
        "meta": {"description": "The served GGUF as it is, without the physics preset."},
        "params": {},
        "access_grants": preset.get("access_grants", []),
        "is_active": True,
    }
    status, body = http_json(
        "POST", f"{webui_url}/api/v1/models/import", {"models": [base, preset]}, token=token
    )
    if status != 200 or body is not True:
        raise ServeError(
            f"Open WebUI refused the preset {preset['id']} ({status}: {body}): "
            "sign in with an admin account"
        )
    # The preset shows once Open WebUI lists its base model from the llama server.
    deadline = time.monotonic() + timeout
    while True:
        status, body = http_json("GET", f"{webui_url}/api/models?refresh=true", token=token)
        ids = {m.get("id") for m in body.get("data", [])} if isinstance(body, dict) else set()
        if preset["id"] in ids:
            return preset["id"]
        if time.monotonic() > deadline:
            raise ServeError(
                f"Open WebUI does not list {preset['base_model_id']!r} from the llama server "
                f"(models: {sorted(i for i in ids if i)}): check OPENAI_API_BASE_URL and the API key"
            )
        time.sleep(1)


def provision_context_filter(
    webui_url: str, token: str, ctx_size: int, answer_tokens: int, path: Path
) -> None:
    """Install (or update) the context-window filter, switch it on for every model and set its
    budget: a conversation longer than `ctx_size` loses its oldest turns instead of failing.
    Idempotent."""
    try:
        content = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ServeError(f"{path} is missing ({e.strerror}): restore serve/context_window.py") from None
    form = {"id": CONTEXT_FILTER_ID, "name": "QwenPhysics context window", "content": content,
            "meta": {"description": "Keeps each request inside the llama server's context per chat."}}
    base = f"{webui_url}/api/v1/functions"
    status, body = http_json("GET", f"{base}/id/{CONTEXT_FILTER_ID}", token=token)
    if status == 200 and isinstance(body, dict):
        status, body = http_json("POST", f"{base}/id/{CONTEXT_FILTER_ID}/update", form, token=token)
    else:
        status, body = http_json("POST", f"{base}/create", form, token=token)
    if status != 200 or not isinstance(body, dict):
        raise ServeError(f"Open WebUI refused the context filter ({status}: {body}): sign in as an admin")
    valves = {"context_tokens": ctx_size, "answer_tokens": answer_tokens}
    status, body = http_json("POST", f"{base}/id/{CONTEXT_FILTER_ID}/valves/update", valves, token=token)
    if status != 200:
        raise ServeError(f"Open WebUI refused the context filter's settings ({status}: {body})")
    for flag, path_ in (("is_active", "toggle"), ("is_global", "toggle/global")):
        status, body = http_json("GET", f"{base}/id/{CONTEXT_FILTER_ID}", token=token)
        if status == 200 and isinstance(body, dict) and not body.get(flag):
            http_json("POST", f"{base}/id/{CONTEXT_FILTER_ID}/{path_}", None, token=token)
    status, body = http_json("GET", f"{base}/id/{CONTEXT_FILTER_ID}", token=token)
    if not (status == 200 and isinstance(body, dict) and body.get("is_active") and body.get("is_global")):
        raise ServeError(f"Open WebUI did not switch the context filter on ({status}: {body})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="provision.py", description="Import the physics preset and the "
                                "context-window filter into a running Open WebUI.")
    p.add_argument("--webui-url", required=True, help="Open WebUI's base URL")
    p.add_argument("--preset", type=Path, required=True, help="the preset JSON (serve/physics-preset.json)")
    p.add_argument("--context-filter", type=Path, required=True,
                   help="the context-window filter function (serve/context_window.py)")
    p.add_argument("--ctx-size", type=int, default=int(os.environ.get("CTX_SIZE") or 0) or None,
                   help="the llama server's context per chat (default: $CTX_SIZE)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for Open WebUI")
    args = p.parse_args(argv)
    email, password = os.environ.get("WEBUI_ADMIN_EMAIL", ""), os.environ.get("WEBUI_ADMIN_PASSWORD", "")
    try:
        if not (email and password):
            raise ServeError("set WEBUI_ADMIN_EMAIL and WEBUI_ADMIN_PASSWORD (serve/.env)")
        if not args.ctx_size or args.ctx_size < 256:
            raise ServeError("set CTX_SIZE (serve/.env) or pass --ctx-size: the llama server's context per chat")
        url = args.webui_url.rstrip("/")
        preset = load_preset(args.preset)  # a broken preset is refused before any waiting
        wait_http_ok(f"{url}/health", args.timeout, name="Open WebUI")
        token = webui_signin(url, email, password)
        model = provision_preset(url, token, preset, timeout=args.timeout)
        answer = preset["params"].get("max_tokens", args.ctx_size // 4)
        provision_context_filter(url, token, args.ctx_size, int(answer), args.context_filter)
    except ServeError as e:
        print(f"provision.py: error: {e}", file=sys.stderr)
        return 2
    print(f"preset {model} is available in Open WebUI; conversations are kept within "
          f"{args.ctx_size} tokens", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
