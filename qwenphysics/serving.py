"""Serving a QwenPhysics GGUF: llama.cpp's server behind Open WebUI.

Two ways to run the same stack, with the same settings:

* Docker Compose (`docker-compose.yml`, settings in `serve/.env`), and
* locally, without Docker: :class:`LocalStack` starts llama.cpp's ``llama-server`` (or, when the
  binary is not built, llama-cpp-python's server from ``.venv-serve``) and Open WebUI from
  ``.venv-serve``, both bound to 127.0.0.1, and stops both (process groups) on exit.

Both read Open WebUI's settings from ``serve/webui.env`` and provision the *physics preset*
(``serve/physics-preset.json``) and the context-window filter with :mod:`qwenphysics.provision`,
the one file Compose mounts into a container.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from dotenv.parser import parse_stream
from gguf import GGUFReader

from .core.llama_server import free_port
from .core.paths import PROJECT_ROOT as REPO_ROOT
from .core.processes import new_session_dying_with_parent
from .provision import (
    CONTEXT_FILTER_ID,
    SYSTEM_PROMPT_NAME,
    ServeError,
    http_json,
    load_preset,
    provision_context_filter,
    provision_preset,
    wait_http_ok,
    webui_signin,
)
from .toolchain import ToolchainMissing, find_toolchain

__all__ = ["CONTEXT_FILTER_ID", "SYSTEM_PROMPT_NAME", "LocalStack", "ServeError", "StackConfig", "http_json",
           "load_preset", "provision_context_filter", "provision_preset", "wait_http_ok", "webui_signin"]


# Seed defaults of the chat model; the preset and the server flags are built from these.
TEMPERATURE = 0.1
CTX_SIZE = 8192  # per chat: a long answer (ANSWER_TOKENS) and the turns before it
STOP = ("<|im_end|>",)
STREAM = True
PARALLEL = 4  # server slots: concurrent chats served at once (more queue)

MODEL_ALIAS = "qwenphysics"  # the model id llama-server reports; the preset's base model
PRESET_FILE = REPO_ROOT / "serve" / "physics-preset.json"  # the system prompt comes from beside it
ENV_FILE = REPO_ROOT / "serve" / ".env"
MODELS_DIR = REPO_ROOT / "models"
DEFAULT_DATA_DIR = REPO_ROOT / "outputs" / "webui"
SERVE_VENV = REPO_ROOT / ".venv-serve"

CONTEXT_FILTER_FILE = REPO_ROOT / "serve" / "context_window.py"
WEBUI_ENV_FILE = REPO_ROOT / "serve" / "webui.env"  # Open WebUI's settings, shared with docker-compose.yml

# CPU threading of llama-server (see serve/README.md, "Threads"): every core, and OpenMP's own
# waiting (spin a while, then sleep): measured as served, it reaches 94 % of the bandwidth bound
# for one chat and more tokens/s than passive waiting under 8 chats through Open WebUI. Set
# OMP_WAIT_POLICY=passive in the environment (it wins) on a machine busy with other work.
OMP_WAIT_POLICY = ""

GGUF_LORA_NAMES = ("lora", "adapter")
LLAMA_FTYPE_MOSTLY_Q4_K_M = 15



# --------------------------------------------------------------------------------------------
# GGUF files
# --------------------------------------------------------------------------------------------

def read_gguf_metadata(
    path: Path, wanted: tuple[str, ...] = ("general.type", "general.file_type")
) -> dict:
    """The `wanted` metadata keys of a GGUF file (those present), read with gguf-py.

    Raises ServeError when the file is not a GGUF file."""
    try:
        fields = GGUFReader(str(path)).fields
    except (ValueError, OSError, IndexError, KeyError):
        raise ServeError(f"{path} is not a GGUF file: pass a .gguf model") from None
    return {k: fields[k].contents() for k in wanted if k in fields}


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
    """KEY=VALUE lines of a Compose env file (comments, blank lines, `export ` and quotes allowed),
    read with python-dotenv's parser, without interpolation."""
    env: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for b in parse_stream(f):
            if b.error:
                got = b.original.string.strip()
                raise ServeError(f"{path}:{b.original.line}: expected KEY=VALUE, got {got!r}")
            if b.key is not None:
                env[b.key] = b.value or ""
    return env


WEBUI_SETTINGS = read_env_file(WEBUI_ENV_FILE)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


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

    p = Path(folder)
    while not p.exists() and p.parent != p:
        p = p.parent
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".probe-", dir=p))
    except OSError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


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
            preexec_fn=new_session_dying_with_parent,
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
        assert config.log_dir is not None  # StackConfig.__post_init__ fills it in
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
    def __enter__(self) -> LocalStack:
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
            env = find_toolchain().env(env)
        except ToolchainMissing:
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
        preset = load_preset(self.config.preset)
        self.preset_model = provision_preset(self.webui_url, self.webui_token, preset)
        answer = preset["params"].get("max_tokens", self.config.ctx_size // 4)
        provision_context_filter(self.webui_url, self.webui_token, self.config.ctx_size, int(answer),
                                 CONTEXT_FILTER_FILE)


def _llama_server_binary(required: bool) -> Path | None:
    try:
        return find_toolchain().bin("llama-server")
    except ToolchainMissing as e:
        if required:
            raise ServeError(str(e)) from None
        return None


# --------------------------------------------------------------------------------------------
# Command line (scripts/serve.py)
# --------------------------------------------------------------------------------------------

USAGE = """Starts llama.cpp's server and Open WebUI on 127.0.0.1 with the settings of docker-compose.yml
(read from serve/.env when it exists), imports the physics preset, prints the URL, and stops
both on Ctrl-C. Logs: <data dir>/logs/."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def run_parser() -> Parser:
    p = Parser(
        prog="serve.py",
        description=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        type=Path,
        help="base model GGUF (default: newest *.gguf under models/, "
        "Q4_K_M preferred, LoRA adapters skipped; or MODEL_FILE in the env file)",
    )
    p.add_argument("--lora", type=Path, help="GGUF LoRA adapter applied on top of --model")
    p.add_argument(
        "--port", type=int, help="Open WebUI's port on 127.0.0.1 (default: WEBUI_PORT or 3000)"
    )
    p.add_argument(
        "--llama-port", type=int, default=0, help="llama server's port (default: a free one)"
    )
    p.add_argument("--threads", type=positive, help="llama server CPU threads (default: all cores)")
    p.add_argument(
        "--ctx-size",
        type=positive,
        help=f"context per chat in tokens (default: {CTX_SIZE})",
    )
    p.add_argument(
        "--parallel", type=positive, help=f"chats served at once (default: {PARALLEL})"
    )
    p.add_argument("--gpu-layers", type=int, help="layers offloaded to a GPU (a CUDA build only)")
    p.add_argument(
        "--no-auth",
        action="store_true",
        help="Open WebUI without login (tests, demos; a fresh data dir only)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        help="Open WebUI's data (default: outputs/webui/auth or outputs/webui/no-auth)",
    )
    p.add_argument(
        "--env-file", type=Path, help="settings file (default: serve/.env when it exists)"
    )
    p.add_argument(
        "--backend",
        choices=("auto", "binary", "python"),
        default="auto",
        help="llama.cpp's llama-server binary or llama-cpp-python's server (auto: the binary "
        "when built)",
    )
    return p


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def run(argv: list[str]) -> int:
    args = run_parser().parse_args(argv)
    env_path = args.env_file or (ENV_FILE if ENV_FILE.exists() else None)
    if args.env_file and not args.env_file.is_file():
        raise ServeError(
            f"env file {args.env_file} does not exist: copy serve/.env.example"
        )
    env = read_env_file(env_path) if env_path else {}
    settings = StackConfig.env_settings(env)
    if args.model is None and "model" not in settings:
        settings["model"] = find_default_model()
    for name in ("model", "lora", "threads", "ctx_size", "parallel", "gpu_layers"):
        value = getattr(args, name)
        if value is not None:
            settings[name] = value
    port = args.port
    if port is None:
        try:
            port = int(env.get("WEBUI_PORT") or 3000)
        except ValueError:
            raise ServeError(
                f"WEBUI_PORT={env['WEBUI_PORT']!r} in {env_path} is not a port number"
            ) from None
    if not 1 <= port <= 65535:
        raise ServeError(f"port {port} is out of range: pass --port 1024..65535")
    auth = not args.no_auth
    data_dir = args.data_dir or DEFAULT_DATA_DIR / ("auth" if auth else "no-auth")
    config = StackConfig(
        **settings,
        webui_port=port,
        llama_port=args.llama_port,
        auth=auth,
        data_dir=data_dir,
        backend=args.backend,
    )
    # Ctrl-C (SIGINT) and SIGTERM both end in LocalStack.__exit__, which stops both servers.
    # SIGINT is set explicitly: a process started from a background job of a script inherits
    # it ignored, and Python then never raises KeyboardInterrupt (`kill -INT` would do nothing).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    print(
        f"starting llama.cpp's server on {config.model.name}"
        f"{' + ' + config.lora.name if config.lora else ''} and Open WebUI (logs: {config.log_dir})",
        flush=True,
    )
    try:
        with LocalStack(config) as stack:
            print(f"\nOpen WebUI: {stack.webui_url}  (model: {stack.preset_model})", flush=True)
            if auth:
                email, _ = stack.admin_credentials()
                where = (
                    "WEBUI_ADMIN_PASSWORD in the env file"
                    if config.admin_password
                    else config.data_dir / "admin-password.txt"
                )
                print(f"sign in as {email}; password: {where}", flush=True)
            if config.api_key:
                key_where = "LLAMA_API_KEY in the env file"
            else:  # random for this run: kept where only this user can read it, never printed
                key_file = Path(config.data_dir) / "api-key.txt"
                key_file.touch(mode=0o600)
                key_file.chmod(0o600)
                key_file.write_text(stack.api_key + "\n")
                key_where = f"random for this run, in {key_file}"
            print(f"OpenAI-compatible API: {stack.openai_base_url} (key: {key_where})", flush=True)
            print("Ctrl-C stops both servers.", flush=True)
            assert stack.llama_proc is not None and stack.webui_proc is not None  # started by __enter__
            while stack.llama_proc.poll() is None and stack.webui_proc.poll() is None:
                try:
                    stack.llama_proc.wait(timeout=1)
                except subprocess.TimeoutExpired:
                    pass
            dead, log = (
                ("llama server", stack.llama_log)
                if stack.llama_proc.poll() is not None
                else ("Open WebUI", stack.webui_log)
            )
            raise ServeError(f"{dead} stopped unexpectedly: see {log}")
    except KeyboardInterrupt:
        print("\nstopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`scripts/serve.py`: the local stack until Ctrl-C."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        return run(argv)
    except ServeError as e:
        print(f"serve.py: error: {e}", file=sys.stderr)
        return 2
