"""Serving a QwenPhysics GGUF: llama.cpp's server behind Open WebUI.

Two ways to run the same stack, with the same settings:

* Docker Compose (`docker-compose.yml`, settings in `serve/.env`), and
* locally, without Docker: :class:`LocalStack` starts llama.cpp's ``llama-server`` (or, when the
  binary is not built, llama-cpp-python's server from ``.venv-serve``) and Open WebUI from
  ``.venv-serve``, both bound to 127.0.0.1, and stops both (process groups) on exit.

Both provision the *physics preset* (``serve/physics-preset.json``): an Open WebUI model on top
of the served GGUF carrying the system prompt and the sampling defaults, imported through Open
WebUI's admin API (:func:`provision_preset`).

This module uses the standard library only: Compose's one-shot ``webui-init`` service runs it
inside the Open WebUI image.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# Seed defaults of the chat model; the preset and the server flags are built from these.
TEMPERATURE = 0.1
CTX_SIZE = 8192  # per chat: a long answer (ANSWER_TOKENS) and the turns before it
STOP = ("<|im_end|>",)
STREAM = True
PARALLEL = 4  # server slots: concurrent chats served at once (more queue)

MODEL_ALIAS = "qwenphysics"  # the model id llama-server reports; the preset's base model
PRESET_FILE = REPO_ROOT / "serve" / "physics-preset.json"
# The one system prompt (training, serving, evaluation), read from beside the preset file.
SYSTEM_PROMPT_NAME = "system-prompt.txt"
ENV_FILE = REPO_ROOT / "serve" / ".env"
MODELS_DIR = REPO_ROOT / "models"
DEFAULT_DATA_DIR = REPO_ROOT / "outputs" / "webui"
SERVE_VENV = REPO_ROOT / ".venv-serve"

# Open WebUI settings shared by docker-compose.yml and the local stack (a test pins them
# together): no Ollama, nothing fetched from a model hub, no telemetry or update checks,
# the physics preset selected by default. Auth is on unless a local demo turns it off.
TITLE_PROMPT = (
    "Write a concise title of 3-6 words for this physics conversation, in its language. "
    'Reply with JSON only: {"title": "..."}\n\n{{MESSAGES:END:2|middletruncate:1500}}'
)
CONTEXT_FILTER_FILE = REPO_ROOT / "serve" / "context_window.py"
CONTEXT_FILTER_ID = "qwenphysics_context_window"

WEBUI_SETTINGS: dict[str, str] = {
    "ENABLE_OLLAMA_API": "False",
    "OFFLINE_MODE": "True",
    "HF_HUB_OFFLINE": "1",
    "RAG_EMBEDDING_MODEL": "",
    "ENABLE_COMMUNITY_SHARING": "False",
    "ENABLE_VERSION_UPDATE_CHECK": "False",
    "ANONYMIZED_TELEMETRY": "False",
    "DO_NOT_TRACK": "True",
    "SCARF_NO_ANALYTICS": "True",
    "DEFAULT_MODELS": "qwenphysics-physics",
    "ENABLE_TAGS_GENERATION": "False",
    "ENABLE_FOLLOW_UP_GENERATION": "False",
    # The title request quotes the last two messages: each cut to 1,500 characters (middle
    # left out), so it fits the context whatever the answer's length.
    "TITLE_GENERATION_PROMPT_TEMPLATE": TITLE_PROMPT,
    # First sign-in lands in the chat: no release-notes dialog, for the admin or anyone else.
    "DEFAULT_INTERFACE_SETTINGS": '{"showChangelog": false}',
    # One connection per request to the llama server: it drops idle keep-alive connections
    # after 5 s, Open WebUI's pool keeps them 15 s, and a request racing the drop fails
    # ("Server Connection Error", about 1 in 300 chats under load without this).
    "OPENAI_API_CONFIGS": '{"0": {"enable": true, "headers": {"Connection": "close"}}}',
}

# CPU threading of llama-server (see serve/README.md, "Threads"): every core, and OpenMP's own
# waiting (spin a while, then sleep): measured as served, it reaches 94 % of the bandwidth bound
# for one chat and more tokens/s than passive waiting under 8 chats through Open WebUI. Set
# OMP_WAIT_POLICY=passive in the environment (it wins) on a machine busy with other work.
OMP_WAIT_POLICY = ""

GGUF_LORA_NAMES = ("lora", "adapter")
LLAMA_FTYPE_MOSTLY_Q4_K_M = 15


class ServeError(RuntimeError):
    """A problem the user can fix; the message is one line and says how."""


# --------------------------------------------------------------------------------------------
# GGUF files
# --------------------------------------------------------------------------------------------

_GGUF_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}


def read_gguf_metadata(
    path: Path, wanted: tuple[str, ...] = ("general.type", "general.file_type")
) -> dict:
    """The `wanted` metadata keys of a GGUF file (those present), reading only its header.

    Raises ServeError when the file is not a GGUF file.
    """
    path = Path(path)
    out: dict = {}
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise ServeError(
                    f"{path} is not a GGUF file: convert the model with llama.cpp first"
                )
            version, _n_tensors, n_kv = struct.unpack("<IQQ", f.read(20))
            if version < 2:
                raise ServeError(f"{path} is a GGUF v{version} file, too old: convert it again")

            def read_str() -> str:
                (n,) = struct.unpack("<Q", f.read(8))
                return f.read(n).decode("utf-8", "replace")

            def read_value(vtype: int):
                if vtype == 8:
                    return read_str()
                if vtype == 9:
                    etype, count = struct.unpack("<IQ", f.read(12))
                    if etype in _GGUF_SCALARS:
                        f.seek(struct.calcsize("<" + _GGUF_SCALARS[etype]) * count, 1)
                    else:
                        for _ in range(count):
                            read_value(etype)
                    return None
                fmt = "<" + _GGUF_SCALARS[vtype]
                return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

            for _ in range(n_kv):
                key = read_str()
                (vtype,) = struct.unpack("<I", f.read(4))
                value = read_value(vtype)
                if key in wanted:
                    out[key] = value
                    if len(out) == len(wanted):
                        break
    except (struct.error, KeyError) as e:
        raise ServeError(
            f"{path} is a truncated or corrupt GGUF file ({e}): convert it again"
        ) from None
    except OSError as e:
        raise ServeError(f"cannot read {path}: {e.strerror}") from None
    return out


def is_lora_gguf(path: Path) -> bool:
    """True for a GGUF LoRA adapter (llama.cpp's converter marks them general.type=adapter)."""
    return read_gguf_metadata(path, ("general.type",)).get("general.type") == "adapter"


def find_default_model(models_dir: Path | None = None) -> Path:
    """The newest base-model GGUF under `models_dir` (models/), Q4_K_M first; LoRA adapters skipped."""
    models_dir = Path(models_dir or MODELS_DIR)
    candidates = []
    for p in models_dir.rglob("*.gguf") if models_dir.is_dir() else ():
        try:
            meta = read_gguf_metadata(p)
        except ServeError:
            continue
        if meta.get("general.type") == "adapter":
            continue
        q4km = (
            meta.get("general.file_type") == LLAMA_FTYPE_MOSTLY_Q4_K_M or "q4_k_m" in p.name.lower()
        )
        candidates.append((q4km, p.stat().st_mtime, p))
    if not candidates:
        raise ServeError(
            f"no model GGUF under {models_dir}: pass --model PATH.gguf (or convert one into models/)"
        )
    return max(candidates)[2]


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a Compose env file (comments, blank lines, `export ` and quotes allowed)."""
    env: dict[str, str] = {}
    for n, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key.replace("_", "").isalnum():
            raise ServeError(f"{path}:{n}: expected KEY=VALUE, got {raw.strip()!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        env[key] = value
    return env


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def load_preset(path: Path = PRESET_FILE) -> dict:
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


@dataclass
class StackConfig:
    """Settings of the local stack; `from_env_file` fills them from serve/.env like Compose."""

    model: Path
    lora: Path | None = None
    ctx_size: int = CTX_SIZE
    parallel: int = PARALLEL
    threads: int | None = None  # None: every core (see OMP_WAIT_POLICY)
    gpu_layers: int | None = None  # None: llama-server's default
    webui_port: int = 0  # 0: a free port
    llama_port: int = 0
    api_key: str | None = None  # None: a random key for this run
    auth: bool = True
    admin_email: str | None = None
    admin_password: str | None = None
    admin_name: str = "Admin"
    secret_key: str | None = None  # None: one kept in data_dir
    data_dir: Path = DEFAULT_DATA_DIR
    log_dir: Path | None = None  # None: data_dir/logs
    webui: bool = True  # False: the llama server alone
    preset: Path = PRESET_FILE
    backend: str = "auto"  # auto | binary | python
    webui_env: dict[str, str] = field(default_factory=dict)  # extra Open WebUI settings
    llama_timeout: float = 300.0
    webui_timeout: float = 300.0

    def __post_init__(self) -> None:
        self.model = Path(self.model)
        self.lora = Path(self.lora) if self.lora else None
        self.data_dir = Path(self.data_dir)
        self.log_dir = Path(self.log_dir) if self.log_dir else self.data_dir / "logs"

    @staticmethod
    def env_settings(env: dict[str, str], models_dir: Path | None = None) -> dict:
        """StackConfig keyword arguments from serve/.env's keys (the ones Compose reads)."""
        out: dict = {}

        def as_int(key: str) -> int | None:
            if not env.get(key, "").strip():
                return None
            try:
                return int(env[key])
            except ValueError:
                raise ServeError(
                    f"{key}={env[key]!r} in the env file is not an integer: fix it"
                ) from None

        for key, name in (
            ("CTX_SIZE", "ctx_size"),
            ("N_PARALLEL", "parallel"),
            ("N_GPU_LAYERS", "gpu_layers"),
            ("THREADS", "threads"),
        ):
            value = as_int(key)
            if value is not None and not (key == "THREADS" and value <= 0):  # -1: every core
                out[name] = value
        for key, name in (("MODEL_FILE", "model"), ("LORA_FILE", "lora")):
            if env.get(key):
                out[name] = Path(models_dir or MODELS_DIR) / env[key]
        for key, name in (
            ("LLAMA_API_KEY", "api_key"),
            ("WEBUI_SECRET_KEY", "secret_key"),
            ("WEBUI_ADMIN_EMAIL", "admin_email"),
            ("WEBUI_ADMIN_PASSWORD", "admin_password"),
            ("WEBUI_ADMIN_NAME", "admin_name"),
        ):
            if env.get(key):
                out[name] = env[key]
        if env.get("ENABLE_TITLE_GENERATION"):
            out["webui_env"] = {"ENABLE_TITLE_GENERATION": env["ENABLE_TITLE_GENERATION"]}
        return out

    def validate(self) -> None:
        if not self.model.is_file():
            raise ServeError(f"model {self.model} does not exist: pass --model PATH.gguf")
        if is_lora_gguf(self.model):
            raise ServeError(
                f"{self.model} is a LoRA adapter: pass it as --lora and its base GGUF as --model"
            )
        if self.lora is not None:
            if not self.lora.is_file():
                raise ServeError(f"LoRA adapter {self.lora} does not exist: fix --lora")
            if not is_lora_gguf(self.lora):
                raise ServeError(
                    f"{self.lora} is not a GGUF LoRA adapter: convert it with convert_lora_to_gguf.py"
                )
        if self.ctx_size < 256:
            raise ServeError(f"context size {self.ctx_size} is too small: use at least 256")
        if self.parallel < 1:
            raise ServeError(f"parallel slots {self.parallel} must be at least 1")
        if self.threads is not None and self.threads < 1:
            raise ServeError(f"threads {self.threads} must be at least 1")
        if self.backend not in ("auto", "binary", "python"):
            raise ServeError(f"backend {self.backend!r} is not one of auto, binary, python")
        for port, flag in ((self.webui_port, "--port"), (self.llama_port, "--llama-port")):
            if port and not port_is_free(port):
                raise ServeError(f"port {port} on 127.0.0.1 is in use: pass another {flag}")
        for folder, what in ((self.data_dir, "Open WebUI's data folder (--data-dir)") if self.webui else (None, ""),
                             (self.log_dir, "the log folder")):
            if folder is not None and not _writable(folder):
                raise ServeError(f"{what} {folder} is not writable: fix its permissions or pass another one")


def _writable(folder: Path) -> bool:
    """Whether files can be created in `folder` (or in the nearest existing folder above it)."""
    import tempfile

    p = Path(folder)
    while not p.exists() and p.parent != p:
        p = p.parent
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".probe-", dir=p))
    except OSError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# HTTP helpers (standard library)
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Open WebUI provisioning
# --------------------------------------------------------------------------------------------


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
    webui_url: str, token: str, preset: dict | Path = PRESET_FILE, timeout: float = 120.0
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
    webui_url: str, token: str, ctx_size: int, answer_tokens: int, path: Path = CONTEXT_FILTER_FILE
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


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


try:  # looked up before any fork: the child only calls it
    import ctypes

    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (ImportError, OSError, AttributeError):  # not Linux
    _prctl = None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    if _prctl is not None:
        _prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: SIGTERM when the parent dies


def start_process(
    cmd: list[str], log: Path, env: dict[str, str], cwd: Path | None = None
) -> subprocess.Popen:
    """Start `cmd` in its own process group, output appended to `log`, ended if we die."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {Path(cmd[0]).name} ===\n".encode())
        out.flush()
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            preexec_fn=_die_with_parent,
        )


def stop_process(proc: subprocess.Popen | None, grace: float = 15.0) -> None:
    """SIGTERM the process group, SIGKILL what is left after `grace` seconds."""
    if proc is None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; make sure no member of its group survives it
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        break
    if proc.poll() is None:
        proc.wait(timeout=5)


def new_secret(nbytes: int = 24) -> str:
    """A random secret (API key, password) in hex: safe as a command-line value. A URL-safe
    token starts with `-` one time in 64, and argument parsers (ours, llama-server's) then
    read it as an option instead of a value."""
    return secrets.token_hex(nbytes)


def _secret_in(path: Path, nbytes: int = 32) -> str:
    """A secret kept in `path` (mode 600), created on first use."""
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = new_secret(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


class LocalStack:
    """llama-server (+ Open WebUI) on 127.0.0.1, as a context manager.

    >>> with LocalStack(StackConfig(model=Path("models/x.gguf"), auth=False)) as stack:
    ...     stack.openai_base_url, stack.api_key, stack.model, stack.webui_url
    """

    def __init__(self, config: StackConfig):
        self.config = config
        self.api_key = config.api_key or new_secret()
        self.model = MODEL_ALIAS
        self.preset_model: str | None = None
        self.webui_token: str | None = None
        self.llama_proc: subprocess.Popen | None = None
        self.webui_proc: subprocess.Popen | None = None
        self.llama_port = config.llama_port or free_port()
        self.webui_port = config.webui_port or (free_port() if config.webui else 0)
        self.llama_log = config.log_dir / "llama-server.log"
        self.webui_log = config.log_dir / "open-webui.log"
        self.backend: str | None = None  # "binary" or "python" once started

    # URLs ---------------------------------------------------------------------------------
    @property
    def llama_url(self) -> str:
        return f"http://127.0.0.1:{self.llama_port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.llama_url}/v1"

    @property
    def webui_url(self) -> str:
        return f"http://127.0.0.1:{self.webui_port}"

    # lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> "LocalStack":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self.config.validate()
        self.start_llama()
        if self.config.webui:
            self.start_webui()

    # llama-server lets running requests finish for up to 30 s after SIGTERM; it keeps no state,
    # so it gets less.
    LLAMA_GRACE = 5.0

    def stop(self) -> None:
        stop_process(self.webui_proc)
        self.webui_proc = None
        stop_process(self.llama_proc, self.LLAMA_GRACE)
        self.llama_proc = None

    def restart_llama(self) -> float:
        """Stop and start the llama server on the same port; returns the seconds it was down."""
        t0 = time.monotonic()
        stop_process(self.llama_proc, self.LLAMA_GRACE)
        self.llama_proc = None
        self.start_llama()
        return time.monotonic() - t0

    # llama server -------------------------------------------------------------------------
    def llama_command(self) -> tuple[list[str], dict[str, str]]:
        """The server's command line and environment (the API key goes in the environment)."""
        c = self.config
        threads = c.threads or os.cpu_count() or 1
        env = dict(os.environ)
        if OMP_WAIT_POLICY:  # empty: OpenMP's own default (spin a while, then sleep)
            env.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
        backend = c.backend
        binary = None
        if backend in ("auto", "binary"):
            binary = _llama_server_binary(required=backend == "binary")
        if binary is not None:
            self.backend = "binary"
            cmd = [
                str(binary),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.llama_port),
                "--model",
                str(c.model),
                "--alias",
                MODEL_ALIAS,
                "--jinja",
                "--no-webui",
                "--parallel",
                str(c.parallel),
                "--kv-unified-per-slot",
                str(c.ctx_size),
                "--threads",
                str(threads),
            ]
            if c.lora:
                cmd += ["--lora", str(c.lora)]
            if c.gpu_layers is not None:
                cmd += ["--n-gpu-layers", str(c.gpu_layers)]
            env["LLAMA_API_KEY"] = self.api_key
            return cmd, env
        python = SERVE_VENV / "bin" / "python"
        if not python.exists():
            raise ServeError(
                "neither llama-server nor .venv-serve is installed: run `bash scripts/setup.sh llama serve`"
            )
        self.backend = "python"
        try:  # the shared libllama, when the toolchain is built
            from qwenphysics.toolchain import find_toolchain

            env = find_toolchain().env(env)
        except Exception:
            pass
        # llama-cpp-python's server: one request at a time, the whole context for it
        cmd = [
            str(python),
            "-m",
            "llama_cpp.server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.llama_port),
            "--model",
            str(c.model),
            "--model_alias",
            MODEL_ALIAS,
            "--n_ctx",
            str(c.ctx_size),
            "--n_threads",
            str(threads),
        ]
        if c.lora:
            cmd += ["--lora_path", str(c.lora)]
        if c.gpu_layers is not None:
            cmd += ["--n_gpu_layers", str(c.gpu_layers)]
        env["API_KEY"] = self.api_key
        return cmd, env

    def start_llama(self) -> None:
        cmd, env = self.llama_command()
        self.llama_proc = start_process(cmd, self.llama_log, env)
        if self.backend == "binary":
            wait_http_ok(
                f"{self.llama_url}/health",
                self.config.llama_timeout,
                self.llama_proc,
                "llama-server",
                self.llama_log,
            )
        else:
            wait_http_ok(
                f"{self.llama_url}/v1/models",
                self.config.llama_timeout,
                self.llama_proc,
                "llama_cpp.server",
                self.llama_log,
                token=self.api_key,
            )

    # Open WebUI ---------------------------------------------------------------------------
    def webui_environment(self) -> dict[str, str]:
        c = self.config
        c.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WEBUI_", "OPENAI_"))}
        env.update(WEBUI_SETTINGS)
        env.update(
            {
                "DATA_DIR": str(c.data_dir),
                "WEBUI_SECRET_KEY": c.secret_key or _secret_in(c.data_dir / ".webui_secret_key"),
                "WEBUI_AUTH": "True" if c.auth else "False",
                "OPENAI_API_BASE_URL": self.openai_base_url,
                "OPENAI_API_KEY": self.api_key,
                # The local stack picks its llama port per run: the environment, not settings saved
                # in DATA_DIR by an earlier run, must win.
                "ENABLE_PERSISTENT_CONFIG": "False",
            }
        )
        if c.auth:
            email, password = self.admin_credentials()
            env.update(
                {
                    "WEBUI_ADMIN_EMAIL": email,
                    "WEBUI_ADMIN_PASSWORD": password,
                    "WEBUI_ADMIN_NAME": c.admin_name,
                }
            )
        no_proxy = ",".join(
            p for p in (env.get("NO_PROXY") or env.get("no_proxy"), "127.0.0.1,localhost") if p
        )
        env["NO_PROXY"] = env["no_proxy"] = no_proxy  # Open WebUI honours proxy variables
        env.update(c.webui_env)
        return env

    def admin_credentials(self) -> tuple[str, str]:
        c = self.config
        email = c.admin_email or "admin@localhost"
        password = c.admin_password or _secret_in(c.data_dir / "admin-password.txt", 12)
        return email, password

    def start_webui(self) -> None:
        exe = SERVE_VENV / "bin" / "open-webui"
        if not exe.exists():
            exe_path = shutil.which("open-webui")
            if exe_path is None:
                raise ServeError("Open WebUI is not installed: run `bash scripts/setup.sh serve`")
            exe = Path(exe_path)
        env = self.webui_environment()
        cmd = [str(exe), "serve", "--host", "127.0.0.1", "--port", str(self.webui_port)]
        self.webui_proc = start_process(cmd, self.webui_log, env, cwd=self.config.data_dir)
        wait_http_ok(
            f"{self.webui_url}/health",
            self.config.webui_timeout,
            self.webui_proc,
            "Open WebUI",
            self.webui_log,
        )
        if self.config.auth:
            self.webui_token = webui_signin(self.webui_url, *self.admin_credentials())
        else:
            self.webui_token = webui_signin(self.webui_url)
        self.preset_model = provision_preset(self.webui_url, self.webui_token, self.config.preset)
        answer = load_preset(self.config.preset)["params"].get("max_tokens", self.config.ctx_size // 4)
        provision_context_filter(self.webui_url, self.webui_token, self.config.ctx_size, int(answer))


def _llama_server_binary(required: bool) -> Path | None:
    try:
        from qwenphysics.toolchain import ToolchainMissing, find_toolchain
    except ImportError:  # a copy of this module outside the project
        return None
    try:
        return find_toolchain().bin("llama-server")
    except ToolchainMissing as e:
        if required:
            raise ServeError(str(e)) from None
        return None
