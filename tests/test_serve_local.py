"""scripts/serve.py and qwenphysics.serving without servers: model choice, settings, errors, processes."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qwenphysics import serving

ROOT = Path(__file__).resolve().parent.parent
SERVE = ROOT / "scripts" / "serve.py"


def write_gguf(path: Path, kind: str = "model", file_type: int = 1, extra: int = 0) -> Path:
    """A header-only GGUF file (no tensors) with general.type, a string array and general.file_type."""

    def s(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw

    kvs = [
        s("general.architecture") + struct.pack("<I", 8) + s("qwen2"),
        s("general.type") + struct.pack("<I", 8) + s(kind),
        s("tokenizer.ggml.tokens")
        + struct.pack("<IIQ", 9, 8, 3)
        + s("a")
        + s("b")
        + s("<|im_end|>"),
        s("tokenizer.ggml.scores") + struct.pack("<IIQ", 9, 6, 2) + struct.pack("<ff", 0.0, 1.0),
        s("general.file_type") + struct.pack("<II", 4, file_type),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs) + b"\0" * extra)
    return path


def age(path: Path, seconds_ago: float) -> Path:
    t = time.time() - seconds_ago
    os.utime(path, (t, t))
    return path


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SERVE), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


# --- GGUF files and the default model ----------------------------------------------------------


def test_reads_gguf_metadata_past_arrays(tmp_path):
    p = write_gguf(tmp_path / "m.gguf", "adapter", 15)
    assert serving.read_gguf_metadata(p) == {"general.type": "adapter", "general.file_type": 15}
    assert serving.is_lora_gguf(p)
    assert not serving.is_lora_gguf(write_gguf(tmp_path / "b.gguf"))


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04zip", b"GGUF\x03\x00"])
def test_non_gguf_or_truncated_files_give_a_one_line_error(tmp_path, content):
    p = tmp_path / "x.gguf"
    p.write_bytes(content)
    with pytest.raises(serving.ServeError) as e:
        serving.read_gguf_metadata(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_default_model_is_newest_q4_k_m_base_model(tmp_path):
    age(write_gguf(tmp_path / "old-Q4_K_M.gguf", file_type=15), 300)
    newest_q4 = age(
        write_gguf(tmp_path / "sub" / "new.gguf", file_type=15), 200
    )  # Q4_K_M by metadata
    age(write_gguf(tmp_path / "newer-F16.gguf", file_type=1), 100)
    age(write_gguf(tmp_path / "newest-lora-Q4_K_M.gguf", "adapter", 15), 0)
    (tmp_path / "broken.gguf").write_bytes(b"nope")
    assert serving.find_default_model(tmp_path) == newest_q4


def test_default_model_falls_back_to_newest_when_no_q4_k_m(tmp_path):
    age(write_gguf(tmp_path / "a-F16.gguf"), 100)
    b = age(write_gguf(tmp_path / "b-Q8_0.gguf", file_type=7), 10)
    assert serving.find_default_model(tmp_path) == b


def test_no_model_says_what_to_do(tmp_path):
    write_gguf(tmp_path / "only-adapter.gguf", "adapter")
    with pytest.raises(serving.ServeError, match="pass --model"):
        serving.find_default_model(tmp_path)
    with pytest.raises(serving.ServeError, match="pass --model"):
        serving.find_default_model(tmp_path / "missing")


# --- settings ----------------------------------------------------------------------------------


def test_env_file_parsing(tmp_path):
    p = tmp_path / ".env"
    p.write_text("# comment\n\nexport A=1\nB='two words'\nC=\"x#y\"\nD=v # note\nE=\n")
    assert serving.read_env_file(p) == {"A": "1", "B": "two words", "C": "x#y", "D": "v", "E": ""}
    p.write_text("NOT A LINE\n")
    with pytest.raises(serving.ServeError, match=r"\.env:1: expected KEY=VALUE"):
        serving.read_env_file(p)


def test_env_settings_map_like_compose(tmp_path):
    env = {
        "MODEL_FILE": "m.gguf",
        "LORA_FILE": "",
        "CTX_SIZE": "2048",
        "N_PARALLEL": "2",
        "N_GPU_LAYERS": "999",
        "THREADS": "3",
        "LLAMA_API_KEY": "k",
        "WEBUI_ADMIN_EMAIL": "a@b.c",
        "ENABLE_TITLE_GENERATION": "False",
    }
    s = serving.StackConfig.env_settings(env, models_dir=tmp_path)
    assert s == {
        "model": tmp_path / "m.gguf",
        "ctx_size": 2048,
        "parallel": 2,
        "gpu_layers": 999,
        "threads": 3,
        "api_key": "k",
        "admin_email": "a@b.c",
        "webui_env": {"ENABLE_TITLE_GENERATION": "False"},
    }
    with pytest.raises(serving.ServeError, match="CTX_SIZE='big'.*not an integer"):
        serving.StackConfig.env_settings({"CTX_SIZE": "big"})


def test_llama_command_keeps_the_key_off_argv(tmp_path, monkeypatch):
    model = write_gguf(tmp_path / "m.gguf")
    lora = write_gguf(tmp_path / "a.gguf", "adapter")
    fake = tmp_path / "llama-server"
    fake.write_text("")
    monkeypatch.setattr(serving, "_llama_server_binary", lambda required: fake)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    stack = serving.LocalStack(
        serving.StackConfig(model=model, lora=lora, threads=2, data_dir=tmp_path / "d")
    )
    cmd, env = stack.llama_command()
    assert cmd[0] == str(fake) and stack.backend == "binary"
    flags = " ".join(cmd)
    for part in (
        "--host 127.0.0.1",
        "--jinja",
        "--alias qwenphysics",
        f"--kv-unified-per-slot {serving.CTX_SIZE}",
        f"--parallel {serving.PARALLEL}",
        "--threads 2",
        f"--lora {lora}",
        f"--model {model}",
    ):
        assert part in flags
    assert stack.api_key not in flags and env["LLAMA_API_KEY"] == stack.api_key
    assert "OMP_WAIT_POLICY" not in env  # OpenMP's own waiting: the fastest as served
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    assert stack.llama_command()[1]["OMP_WAIT_POLICY"] == "passive"  # the user's setting wins


def test_generated_keys_pass_as_command_line_values(tmp_path):
    """The stack's random API key is what users (and the evaluation tests) pass as
    `--api-key KEY`; a key that starts with `-` is read as an option instead."""
    from qwenphysics.evaluation.runner import build_parser

    model = write_gguf(tmp_path / "m.gguf")
    keys = [serving.LocalStack(serving.StackConfig(model=model, data_dir=tmp_path / "d")).api_key
            for _ in range(300)]
    keys += [serving._secret_in(tmp_path / f"s{i}.txt") for i in range(300)]
    assert len(set(keys)) == len(keys)
    parser = build_parser()
    for key in keys:
        assert parser.parse_args(["--api-key", key]).api_key == key


def test_python_fallback_when_no_binary(tmp_path, monkeypatch):
    model = write_gguf(tmp_path / "m.gguf")
    monkeypatch.setattr(serving, "_llama_server_binary", lambda required: None)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    monkeypatch.setattr(serving, "SERVE_VENV", venv)
    stack = serving.LocalStack(
        serving.StackConfig(model=model, api_key="secret-key", data_dir=tmp_path)
    )
    cmd, env = stack.llama_command()
    assert (
        cmd[:3] == [str(venv / "bin" / "python"), "-m", "llama_cpp.server"]
        and stack.backend == "python"
    )
    assert "secret-key" not in cmd and env["API_KEY"] == "secret-key"
    assert cmd[cmd.index("--n_ctx") + 1] == str(serving.CTX_SIZE)


def test_webui_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("WEBUI_AUTH", "False")  # an outer setting must not leak in
    model = write_gguf(tmp_path / "m.gguf")
    stack = serving.LocalStack(serving.StackConfig(model=model, data_dir=tmp_path / "d"))
    env = stack.webui_environment()
    assert env["WEBUI_AUTH"] == "True"
    assert env["OPENAI_API_BASE_URL"] == f"http://127.0.0.1:{stack.llama_port}/v1"
    assert env["OPENAI_API_KEY"] == stack.api_key
    assert env["WEBUI_ADMIN_EMAIL"] and len(env["WEBUI_ADMIN_PASSWORD"]) >= 12
    assert len(env["WEBUI_SECRET_KEY"]) >= 32
    for key, value in serving.WEBUI_SETTINGS.items():
        assert env[key] == value
    # secrets are kept, private, across runs
    again = serving.LocalStack(
        serving.StackConfig(model=model, data_dir=tmp_path / "d")
    ).webui_environment()
    assert again["WEBUI_SECRET_KEY"] == env["WEBUI_SECRET_KEY"]
    assert again["WEBUI_ADMIN_PASSWORD"] == env["WEBUI_ADMIN_PASSWORD"]
    assert (tmp_path / "d" / "admin-password.txt").stat().st_mode & 0o077 == 0
    no_auth = serving.LocalStack(
        serving.StackConfig(model=model, auth=False, data_dir=tmp_path / "n")
    )
    env = no_auth.webui_environment()
    assert env["WEBUI_AUTH"] == "False" and "WEBUI_ADMIN_PASSWORD" not in env


def test_config_validation_messages(tmp_path):
    model = write_gguf(tmp_path / "m.gguf")
    lora = write_gguf(tmp_path / "a.gguf", "adapter")
    cases = [
        (dict(model=tmp_path / "nope.gguf"), "does not exist: pass --model"),
        (dict(model=lora), "is a LoRA adapter: pass it as --lora"),
        (dict(model=model, lora=model), "is not a GGUF LoRA adapter"),
        (dict(model=model, ctx_size=16), "too small"),
    ]
    for kwargs, message in cases:
        with pytest.raises(serving.ServeError, match=message):
            serving.StackConfig(**kwargs, data_dir=tmp_path).validate()


# --- the command line ----------------------------------------------------------------------------


def one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_usage_docstring_has_a_runnable_command():
    doc = SERVE.read_text().split('"""')[1]
    assert "Usage:" in doc and "python scripts/serve.py" in doc
    proc = run_cli("--help")
    assert proc.returncode == 0 and "--no-auth" in proc.stdout and "--lora" in proc.stdout


def test_cli_bad_input(tmp_path):
    model = write_gguf(tmp_path / "m.gguf")
    lora = write_gguf(tmp_path / "a.gguf", "adapter")
    envf = tmp_path / "e.env"
    envf.write_text("")
    base = ("--env-file", str(envf), "--data-dir", str(tmp_path / "d"))
    one_line_error(run_cli(*base, "--model", str(tmp_path / "missing.gguf")), "does not exist")
    one_line_error(run_cli(*base, "--model", str(lora)), "is a LoRA adapter")
    one_line_error(
        run_cli(*base, "--model", str(model), "--lora", str(model)), "not a GGUF LoRA adapter"
    )
    one_line_error(run_cli(*base, "--model", str(ROOT / "pyproject.toml")), "is not a GGUF file")
    one_line_error(run_cli(*base, "--model", str(model), "--threads", "0"), "must be at least 1")
    one_line_error(run_cli(*base, "--model", str(model), "--ctx-size", "lots"), "not an integer")
    one_line_error(run_cli("--env-file", str(tmp_path / "none.env")), "does not exist")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        one_line_error(run_cli(*base, "--model", str(model), "--port", str(port)), f"port {port}")


def test_cli_picks_the_default_model_from_models_dir(tmp_path, monkeypatch):
    # no GGUF at all: the error names the folder and the flag
    empty = tmp_path / "models"
    empty.mkdir()
    envf = tmp_path / "e.env"
    envf.write_text("")
    code = (
        f"import sys; sys.argv=['serve.py','--env-file',{str(envf)!r}]; sys.path.insert(0,{str(ROOT)!r});"
        f"from qwenphysics import serving; serving.MODELS_DIR=serving.Path({str(empty)!r});"
        "import runpy; runpy.run_path(%r, run_name='__main__')" % str(SERVE)
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    one_line_error(proc, f"no model GGUF under {empty}")


# --- processes -----------------------------------------------------------------------------------


def test_stop_process_ends_the_whole_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    proc = serving.start_process(
        ["/bin/sh", "-c", f"sleep 300 & echo $! > {pidfile}; trap '' TERM; wait"],
        tmp_path / "logs" / "x.log",
        dict(os.environ),
    )
    deadline = time.time() + 10
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.time() < deadline
        time.sleep(0.05)
    child = int(pidfile.read_text())
    t0 = time.monotonic()
    serving.stop_process(proc, grace=1.0)  # the shell ignores SIGTERM: SIGKILL follows
    assert proc.poll() is not None and time.monotonic() - t0 < 10
    time.sleep(0.2)
    assert (
        not Path(f"/proc/{child}").exists()
        or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
    )
    assert "===" in (tmp_path / "logs" / "x.log").read_text()


def test_wait_http_ok_fails_fast_when_the_process_dies(tmp_path):
    proc = subprocess.Popen(["/bin/sh", "-c", "exit 3"])
    proc.wait()
    with pytest.raises(
        serving.ServeError, match=r"exited with code 3 while starting: see .*x\.log"
    ):
        serving.wait_http_ok(
            f"http://127.0.0.1:{serving.free_port()}/health", 30, proc, "thing", tmp_path / "x.log"
        )
    with pytest.raises(serving.ServeError, match="not healthy .* within 1 s"):
        serving.wait_http_ok(f"http://127.0.0.1:{serving.free_port()}/health", 1, name="thing")


def load_context_filter():
    import importlib.util

    spec = importlib.util.spec_from_file_location("context_window", serving.CONTEXT_FILTER_FILE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.Filter()


def test_context_filter_keeps_the_system_prompt_and_the_newest_turns():
    f = load_context_filter()
    f.valves.context_tokens, f.valves.answer_tokens = 8192, 2048
    budget_chars = (8192 - 2048 - f.valves.margin_tokens) * f.valves.chars_per_token
    turns = []
    for i in range(12):  # 12 turns of ~1,500 tokens each: about three times the budget
        turns += [{"role": "user", "content": f"question {i} " + "q" * 1000},
                  {"role": "assistant", "content": f"answer {i} " + "a" * 3000}]
    body = {"messages": [{"role": "system", "content": "You are QwenPhysics."}, *turns,
                         {"role": "user", "content": "last question"}]}
    n = len(body["messages"])
    out = f.inlet(body)["messages"]
    assert out[0]["role"] == "system" and out[-1]["content"] == "last question"
    assert sum(len(m["content"]) for m in out) <= budget_chars
    assert 3 < len(out) < n
    kept = [m["content"].split()[1] for m in out[1:-1]]
    assert kept == sorted(kept, key=int) and kept[-1] == "11"  # the newest turns, in order
    short = {"messages": [{"role": "user", "content": "hi"}]}
    assert f.inlet(dict(short)) == short  # nothing to trim


def test_context_filter_cuts_the_middle_of_a_message_too_long_alone():
    f = load_context_filter()
    text = "BEGIN " + "x" * 100_000 + " END"
    out = f.inlet({"messages": [{"role": "user", "content": text}], "max_tokens": 1000})["messages"]
    assert len(out) == 1 and out[0]["content"].startswith("BEGIN") and out[0]["content"].endswith("END")
    assert "[...]" in out[0]["content"] and len(out[0]["content"]) < 8192 * f.valves.chars_per_token


def test_filter_outlet_rewrites_bracket_math_with_dollars_outside_code():
    f = load_context_filter()
    answer = ("Inline \\(a^2 + b^2\\) and display:\n\\[ \\int_0^1 x\\,dx \\]\n"
              "Code stays: `\\(x\\)` and\n```latex\n\\[y\\]\n```\nthen \\(z\\).")
    body = {"messages": [{"role": "user", "content": "keep \\(this\\)"}, {"role": "assistant", "content": answer}]}
    out = f.outlet(body)["messages"]
    assert out[0]["content"] == "keep \\(this\\)"  # only answers are rewritten
    text = out[1]["content"]
    assert "Inline $a^2 + b^2$ and" in text and "\n$$\\int_0^1 x\\,dx$$\n" in text and "then $z$." in text
    assert "`\\(x\\)`" in text and "```latex\n\\[y\\]\n```" in text
    assert f.outlet({"messages": [{"role": "assistant", "content": "no math $x$"}]})["messages"][0]["content"] \
        == "no math $x$"
