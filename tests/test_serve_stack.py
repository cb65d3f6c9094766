"""The local stack end to end on the tiny GGUF: llama-server + Open WebUI, auth on, and the CLI."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from openai import OpenAI

from qwenphysics import serving

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = [{"role": "user", "content": "What is the Riemann zeta function?"}]


@pytest.fixture(scope="module")
def stack(tiny_gguf, tmp_path_factory):
    data = tmp_path_factory.mktemp("webui")
    config = serving.StackConfig(
        model=tiny_gguf,
        parallel=2,
        data_dir=data,
        admin_email="admin@localhost",
        admin_password=secrets.token_urlsafe(12),
        webui_env={"ENABLE_TITLE_GENERATION": "False"},
    )
    with serving.LocalStack(config) as s:
        yield s


def test_openai_client_chat_completion(stack):
    client = OpenAI(base_url=stack.openai_base_url, api_key=stack.api_key)
    assert [m.id for m in client.models.list().data] == [serving.MODEL_ALIAS]
    r = client.chat.completions.create(
        model=stack.model,
        messages=MESSAGES,
        max_tokens=12,
        temperature=serving.TEMPERATURE,
        stop=list(serving.STOP),
    )
    assert r.choices[0].message.role == "assistant"
    assert r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 5


def test_openai_client_streams(stack):
    client = OpenAI(base_url=stack.openai_base_url, api_key=stack.api_key)
    stream = client.chat.completions.create(
        model=stack.model, messages=MESSAGES, max_tokens=12, stream=True
    )
    pieces = [
        c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) >= 2  # arrives token by token


def test_llama_server_refuses_requests_without_the_key(stack):
    body = {"model": stack.model, "messages": MESSAGES, "max_tokens": 4}
    assert requests.get(f"{stack.llama_url}/v1/models", timeout=10).status_code == 401
    r = requests.post(f"{stack.llama_url}/v1/chat/completions", json=body, timeout=10)
    assert r.status_code == 401
    r = requests.post(
        f"{stack.llama_url}/v1/chat/completions",
        json=body,
        timeout=10,
        headers={"Authorization": "Bearer wrong"},
    )
    assert r.status_code == 401
    assert (
        requests.get(f"{stack.llama_url}/health", timeout=10).status_code == 200
    )  # for healthchecks


def test_open_webui_refuses_unauthenticated_calls(stack):
    url = stack.webui_url
    assert requests.get(f"{url}/api/models", timeout=10).status_code == 401
    r = requests.post(
        f"{url}/api/chat/completions",
        timeout=10,
        json={"model": stack.preset_model, "messages": MESSAGES},
    )
    assert r.status_code == 401
    r = requests.post(f"{url}/api/v1/auths/signin", json={"email": "", "password": ""}, timeout=10)
    assert r.status_code in (400, 401, 403)
    email, _ = stack.admin_credentials()
    r = requests.post(
        f"{url}/api/v1/auths/signin", json={"email": email, "password": "wrong"}, timeout=10
    )
    assert r.status_code in (400, 401, 403)
    r = requests.post(
        f"{url}/api/v1/auths/signup",
        json={"name": "x", "email": "x@example.org", "password": "pw-123456"},
        timeout=10,
    )
    assert r.status_code in (400, 401, 403)  # sign-up is closed once the admin exists


def webui_chat(stack, token: str, stream: bool) -> requests.Response:
    return requests.post(
        f"{stack.webui_url}/api/chat/completions",
        timeout=120,
        stream=stream,
        headers={"Authorization": f"Bearer {token}"},
        json={
            "model": stack.preset_model,
            "messages": MESSAGES,
            "stream": stream,
            "max_tokens": 12,
        },
    )


def test_open_webui_answers_through_the_physics_preset(stack):
    direct = OpenAI(base_url=stack.openai_base_url, api_key=stack.api_key).chat.completions.create(
        model=stack.model, messages=MESSAGES, max_tokens=1
    )
    r = webui_chat(stack, stack.webui_token, stream=False)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["role"] == "assistant"
    # the preset's system prompt went along with the question
    assert r.json()["usage"]["prompt_tokens"] > direct.usage.prompt_tokens + 20
    with webui_chat(stack, stack.webui_token, stream=True) as r:
        assert r.status_code == 200
        # bytes lines: str.splitlines would also split at U+2028 and friends inside the JSON
        data = [line[6:].decode() for line in r.iter_lines() if line.startswith(b"data: ")]
    chunks = [json.loads(d) for d in data if d != "[DONE]"]
    assert (
        sum(1 for c in chunks if c.get("choices") and c["choices"][0]["delta"].get("content")) >= 2
    )


def test_preset_is_visible_to_a_regular_user(stack):
    admin = {"Authorization": f"Bearer {stack.webui_token}"}
    user = {
        "name": "Reader",
        "email": "reader@example.org",
        "password": secrets.token_urlsafe(12),
        "role": "user",
    }
    r = requests.post(f"{stack.webui_url}/api/v1/auths/add", json=user, headers=admin, timeout=30)
    assert r.status_code == 200, r.text
    token = serving.webui_signin(stack.webui_url, user["email"], user["password"])
    r = requests.get(
        f"{stack.webui_url}/api/models", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert serving.load_preset(serving.PRESET_FILE)["id"] in {m["id"] for m in r.json()["data"]}
    assert webui_chat(stack, token, stream=False).status_code == 200
    # provisioning again is harmless
    assert serving.provision_preset(stack.webui_url, stack.webui_token, serving.PRESET_FILE) == "qwenphysics-physics"


def test_preset_holds_the_system_prompt_and_sampling_defaults(stack):
    r = requests.get(
        f"{stack.webui_url}/api/v1/models/model",
        params={"id": "qwenphysics-physics"},
        headers={"Authorization": f"Bearer {stack.webui_token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    params = r.json()["params"]
    assert params["temperature"] == serving.TEMPERATURE and params["stop"] == list(serving.STOP)
    assert params["system"] == serving.load_preset(serving.PRESET_FILE)["params"]["system"]


def test_llama_restart_is_survived_by_open_webui(stack):
    down = stack.restart_llama()
    assert down < 60
    r = webui_chat(stack, stack.webui_token, stream=False)
    assert r.status_code == 200, r.text


def children_of(pid: int) -> set[int]:
    """All descendants of `pid` (from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_cli_starts_prints_the_url_and_stops_cleanly_on_ctrl_c(tiny_gguf, tmp_path):
    port = serving.free_port()
    env_file = tmp_path / "serve.env"
    env_file.write_text("ENABLE_TITLE_GENERATION=False\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "scripts" / "serve.py"),
            "--model",
            str(tiny_gguf),
            "--no-auth",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "webui"),
            "--env-file",
            str(env_file),
            "--parallel",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        # started the way a background job of a script starts it: with SIGINT ignored, which
        # Python would otherwise keep (no KeyboardInterrupt); the script must still stop on it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops" in line:
                break
        out = "".join(lines)
        assert f"Open WebUI: http://127.0.0.1:{port}" in out, out
        assert "qwenphysics-physics" in out
        kids = children_of(proc.pid)
        assert len(kids) >= 2  # llama-server and Open WebUI
        assert requests.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        time.sleep(0.5)
        assert not [k for k in kids if alive(k)], "servers left running after Ctrl-C"
        assert "stopped" in proc.stdout.read()
        logs = tmp_path / "webui" / "logs"
        assert (logs / "llama-server.log").stat().st_size > 0 and (
            logs / "open-webui.log"
        ).stat().st_size > 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for k in children_of(proc.pid):
            try:
                os.kill(k, signal.SIGKILL)
            except ProcessLookupError:
                pass


def make_lora(base: Path, out: Path, gguf_py: Path, rank: int = 4) -> Path:
    """A random GGUF LoRA adapter on every attn_q of `base`, strong enough to change its answers."""
    import numpy as np

    sys.path.insert(0, str(gguf_py))
    import gguf

    reader = gguf.GGUFReader(base)
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    writer = gguf.GGUFWriter(out, arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(rank))
    rng = np.random.default_rng(0)
    for t in reader.tensors:
        if t.name.endswith("attn_q.weight"):
            n_in, n_out = int(t.shape[0]), int(t.shape[1])  # ggml order
            stem = t.name[: -len(".weight")]
            writer.add_tensor(
                f"{stem}.weight.lora_a", rng.standard_normal((rank, n_in)).astype(np.float32)
            )
            writer.add_tensor(
                f"{stem}.weight.lora_b", rng.standard_normal((n_out, rank)).astype(np.float32)
            )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def test_lora_adapter_on_top_of_the_base(tiny_gguf, toolchain, tmp_path):
    lora = make_lora(tiny_gguf, tmp_path / "adapter-F32.gguf", toolchain.gguf_py)
    assert serving.is_lora_gguf(lora) and not serving.is_lora_gguf(tiny_gguf)
    answers = {}
    for name, adapter in (("base", None), ("lora", lora)):
        config = serving.StackConfig(
            model=tiny_gguf, lora=adapter, webui=False, parallel=1, data_dir=tmp_path / name
        )
        with serving.LocalStack(config) as s:
            client = OpenAI(base_url=s.openai_base_url, api_key=s.api_key)
            r = client.chat.completions.create(
                model=s.model, messages=MESSAGES, max_tokens=8, temperature=0, seed=1
            )
            answers[name] = r.choices[0].message.content
    assert answers["base"] != answers["lora"]  # greedy decoding, so the adapter made the difference


def test_python_server_fallback(tiny_gguf, tmp_path):
    python = serving.SERVE_VENV / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import llama_cpp.server"], capture_output=True)
    assert probe.returncode == 0, "llama-cpp-python[server] is missing from .venv-serve: run `make setup`"
    config = serving.StackConfig(model=tiny_gguf, webui=False, backend="python", data_dir=tmp_path)
    with serving.LocalStack(config) as s:
        assert s.backend == "python"
        assert requests.get(f"{s.openai_base_url}/models", timeout=10).status_code == 401
        client = OpenAI(base_url=s.openai_base_url, api_key=s.api_key)
        r = client.chat.completions.create(model=s.model, messages=MESSAGES, max_tokens=8)
        assert r.choices[0].message.role == "assistant"
        assert re.search(r"llama_cpp|Uvicorn|uvicorn", s.llama_log.read_text())


def test_secrets_never_reach_process_lists_or_logs(stack):
    """The API key, Open WebUI's secret and the admin password travel in the environment only."""
    env = stack.webui_environment()
    secrets_ = {
        "api key": stack.api_key,
        "webui secret": env["WEBUI_SECRET_KEY"],
        "admin password": env["WEBUI_ADMIN_PASSWORD"],
    }
    # a request with the key, so that a server that logs request headers would have it in its log
    OpenAI(base_url=stack.openai_base_url, api_key=stack.api_key).models.list()
    pids = {stack.llama_proc.pid, stack.webui_proc.pid}
    pids |= children_of(stack.llama_proc.pid) | children_of(stack.webui_proc.pid)
    cmdlines = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                for pid in pids if alive(pid)}
    assert len(cmdlines) >= 2
    logs = {p.name: p.read_text(errors="replace") for p in (stack.llama_log, stack.webui_log)}
    for what, value in secrets_.items():
        assert len(value) >= 16
        for pid, cmd in cmdlines.items():
            assert value not in cmd, f"{what} visible in the command line of pid {pid}"
        for name, text in logs.items():
            assert value not in text, f"{what} written to {name}"


def test_model_file_removed_while_serving_keeps_answering(tiny_gguf, tmp_path):
    """llama.cpp maps the file: deleting (or replacing) it under a running server changes nothing."""
    model = tmp_path / "moving.gguf"
    model.write_bytes(tiny_gguf.read_bytes())
    config = serving.StackConfig(model=model, webui=False, parallel=1, data_dir=tmp_path / "d")
    with serving.LocalStack(config) as s:
        client = OpenAI(base_url=s.openai_base_url, api_key=s.api_key)
        before = client.chat.completions.create(
            model=s.model, messages=MESSAGES, max_tokens=8, temperature=0, seed=1
        )
        model.unlink()
        after = client.chat.completions.create(
            model=s.model, messages=MESSAGES, max_tokens=8, temperature=0, seed=1
        )
        assert after.choices[0].message.content == before.choices[0].message.content
        assert s.llama_proc.poll() is None
    # started again on the missing file, the stack refuses in one line instead of a traceback
    with pytest.raises(serving.ServeError, match="moving.gguf"):
        serving.LocalStack(config).start()


def test_a_conversation_longer_than_the_context_still_gets_an_answer(stack):
    """Open WebUI sends whole conversations; the provisioned filter keeps them inside the llama
    server's context per chat, so the answer comes instead of a context-size error."""
    headers = {"Authorization": f"Bearer {stack.webui_token}"}
    f = requests.get(f"{stack.webui_url}/api/v1/functions/id/{serving.CONTEXT_FILTER_ID}",
                     headers=headers, timeout=10).json()
    assert f["is_active"] and f["is_global"] and f["type"] == "filter"
    valves = requests.get(f"{stack.webui_url}/api/v1/functions/id/{serving.CONTEXT_FILTER_ID}/valves",
                          headers=headers, timeout=10).json()
    assert valves["context_tokens"] == stack.config.ctx_size
    history = []
    for i in range(6):  # ~6 x 4,000 tokens: three times the context
        history += [{"role": "user", "content": f"Derive result {i}. " + "Consider $x^2 + y^2 = r^2$. " * 350},
                    {"role": "assistant",
                     "content": f"Result {i}: " + "$\\nabla \\cdot E = \\rho/\\epsilon_0$. " * 350}]
    messages = history + MESSAGES
    size = sum(len(m["content"]) for m in messages)
    assert size / 2.5 > 2 * stack.config.ctx_size
    # sent straight to the llama server, the same conversation is refused
    direct = requests.post(f"{stack.openai_base_url}/chat/completions", timeout=120,
                           headers={"Authorization": f"Bearer {stack.api_key}"},
                           json={"model": stack.model, "messages": messages, "max_tokens": 16})
    assert direct.status_code == 400 and "context" in direct.text, direct.text[:300]
    refused = stack.llama_log.read_text(errors="replace").count("exceeds the available context size")
    r = requests.post(f"{stack.webui_url}/api/chat/completions", headers=headers, timeout=300,
                      json={"model": stack.preset_model, "messages": messages, "stream": False, "max_tokens": 16})
    assert r.status_code == 200, r.text[:500]
    body = r.json()
    assert body["choices"][0]["message"]["content"], body
    assert stack.llama_log.read_text(errors="replace").count("exceeds the available context size") == refused
