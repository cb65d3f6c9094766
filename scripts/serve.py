"""Chat with a QwenPhysics GGUF in Open WebUI, on this machine, without Docker.

Starts llama.cpp's server and Open WebUI on 127.0.0.1 with the settings of docker-compose.yml
(read from serve/.env when it exists), imports the physics preset, prints the URL, and stops
both on Ctrl-C. Logs: <data dir>/logs/.

Usage:
  .venv/bin/python scripts/serve.py                    # newest GGUF under models/ (Q4_K_M first)
  .venv/bin/python scripts/serve.py --model models/qwen3b-physics/qwen3b-physics-Q4_K_M.gguf --port 3000
  .venv/bin/python scripts/serve.py --model models/qwen3b-physics/base-F16.gguf \
      --lora models/qwen3b-physics/qwen3b-physics-lora-F16.gguf
  .venv/bin/python scripts/serve.py --no-auth --threads 2 --ctx-size 4096   # a local demo
  .venv/bin/python scripts/serve.py provision --webui-url http://open-webui:8080
      (imports the preset into a running Open WebUI as WEBUI_ADMIN_EMAIL/WEBUI_ADMIN_PASSWORD;
       docker-compose.yml's webui-init service runs this)
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qwenphysics import serving  # noqa: E402


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
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
        description=__doc__.split("\n\n")[1],
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
        help=f"context per chat in tokens (default: {serving.CTX_SIZE})",
    )
    p.add_argument(
        "--parallel", type=positive, help=f"chats served at once (default: {serving.PARALLEL})"
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


def provision_parser() -> Parser:
    p = Parser(prog="serve.py provision", description="Import the physics preset into Open WebUI.")
    p.add_argument("--webui-url", required=True, help="Open WebUI's base URL")
    p.add_argument("--preset", type=Path, default=serving.PRESET_FILE, help="preset JSON")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for Open WebUI")
    p.add_argument("--context-filter", type=Path, default=serving.CONTEXT_FILTER_FILE,
                   help="the context-window filter function (serve/context_window.py)")
    p.add_argument("--ctx-size", type=int, default=int(os.environ.get("CTX_SIZE") or serving.CTX_SIZE),
                   help="the llama server's context per chat (default: $CTX_SIZE)")
    return p


def provision(argv: list[str]) -> int:
    args = provision_parser().parse_args(argv)
    email, password = (
        os.environ.get("WEBUI_ADMIN_EMAIL", ""),
        os.environ.get("WEBUI_ADMIN_PASSWORD", ""),
    )
    if not (email and password):
        raise serving.ServeError("set WEBUI_ADMIN_EMAIL and WEBUI_ADMIN_PASSWORD (serve/.env)")
    url = args.webui_url.rstrip("/")
    serving.wait_http_ok(f"{url}/health", args.timeout, name="Open WebUI")
    token = serving.webui_signin(url, email, password)
    model = serving.provision_preset(url, token, args.preset, timeout=args.timeout)
    answer = serving.load_preset(args.preset)["params"].get("max_tokens", args.ctx_size // 4)
    serving.provision_context_filter(url, token, args.ctx_size, int(answer), args.context_filter)
    print(f"preset {model} is available in Open WebUI; conversations are kept within "
          f"{args.ctx_size} tokens", flush=True)
    return 0


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def run(argv: list[str]) -> int:
    args = run_parser().parse_args(argv)
    env_path = args.env_file or (serving.ENV_FILE if serving.ENV_FILE.exists() else None)
    if args.env_file and not args.env_file.is_file():
        raise serving.ServeError(
            f"env file {args.env_file} does not exist: copy serve/.env.example"
        )
    env = serving.read_env_file(env_path) if env_path else {}
    settings = serving.StackConfig.env_settings(env)
    if args.model is None and "model" not in settings:
        settings["model"] = serving.find_default_model()
    for name in ("model", "lora", "threads", "ctx_size", "parallel", "gpu_layers"):
        value = getattr(args, name)
        if value is not None:
            settings[name] = value
    port = args.port
    if port is None:
        try:
            port = int(env.get("WEBUI_PORT") or 3000)
        except ValueError:
            raise serving.ServeError(
                f"WEBUI_PORT={env['WEBUI_PORT']!r} in {env_path} is not a port number"
            ) from None
    if not 1 <= port <= 65535:
        raise serving.ServeError(f"port {port} is out of range: pass --port 1024..65535")
    auth = not args.no_auth
    data_dir = args.data_dir or serving.DEFAULT_DATA_DIR / ("auth" if auth else "no-auth")
    config = serving.StackConfig(
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
        with serving.LocalStack(config) as stack:
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
            raise serving.ServeError(f"{dead} stopped unexpectedly: see {log}")
    except KeyboardInterrupt:
        print("\nstopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["provision"]:
            return provision(argv[1:])
        return run(argv)
    except serving.ServeError as e:
        print(f"serve.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
