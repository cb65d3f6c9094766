"""Convert, serve, evaluate and compare, tried the way a careless or hostile user would.

Each case ends in one line with exit 2 (or a failure counted in the results), with nothing
half-written and no secret in the output.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from qwenphysics.evaluation import runner

ROOT = Path(__file__).resolve().parent.parent
TINY_CONFIG = {"architectures": ["Qwen2ForCausalLM"], "hidden_size": 256, "intermediate_size": 512,
               "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
               "vocab_size": 151936, "tie_word_embeddings": True}


def one_line(p: subprocess.CompletedProcess, needle: str, rc: int = 2) -> None:
    assert p.returncode == rc, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in p.stderr, p.stderr


def safetensors_bytes(n_floats: int = 64) -> bytes:
    header = json.dumps({"base_model.model.lm.lora_A.weight": {"dtype": "F32", "shape": [n_floats],
                                                                "data_offsets": [0, 4 * n_floats]}}).encode()
    return len(header).to_bytes(8, "little") + header + b"\0" * (4 * n_floats)


def fake_run(tmp_path: Path, adapter_config: str | None = None, weights: bytes | None = None) -> Path:
    """An Axolotl output folder (adapter only) trained on a local base model folder."""
    base = tmp_path / "base"
    base.mkdir(exist_ok=True)
    (base / "config.json").write_text(json.dumps(TINY_CONFIG))
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    (run / "adapter_config.json").write_text(adapter_config if adapter_config is not None else
                                             json.dumps({"base_model_name_or_path": str(base)}))
    (run / "adapter_model.safetensors").write_bytes(weights if weights is not None else safetensors_bytes())
    return run


def convert(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, ROOT / "scripts" / "convert.py", *map(str, args)], capture_output=True,
                          text=True, **kw)


# ------------------------------------------------------------------ convert

def test_convert_corrupt_adapter_config(tmp_path):
    run = fake_run(tmp_path, adapter_config="{not json")
    one_line(convert(run, "--out", tmp_path / "models"), "is not a valid adapter config")
    assert not (tmp_path / "models").exists()


def test_convert_truncated_safetensors_is_refused_before_the_merge(tmp_path, toolchain):
    run = fake_run(tmp_path, weights=safetensors_bytes()[:-40])
    one_line(convert(run, "--out", tmp_path / "models"), "truncated or not a safetensors file")
    run = fake_run(tmp_path, weights=b"\x00\x01garbage")
    one_line(convert(run, "--out", tmp_path / "models"), "truncated or not a safetensors file")
    assert not (tmp_path / "models").exists()


def test_convert_refuses_an_output_folder_it_did_not_write(tmp_path, toolchain):
    run = fake_run(tmp_path)
    mine = tmp_path / "models" / "run"
    mine.mkdir(parents=True)
    (mine / "my-own-model.gguf").write_bytes(b"GGUF mine")
    one_line(convert(run, "--out", tmp_path / "models"), "holds files convert did not write")
    assert (mine / "my-own-model.gguf").read_bytes() == b"GGUF mine"
    assert sorted(p.name for p in mine.iterdir()) == ["my-own-model.gguf"]


@contextlib.contextmanager
def small_filesystem(size: str = "1m"):
    """A tmpfs of `size` (needs root, as on CI machines)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    where = Path(tempfile.mkdtemp(prefix="qp-small-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)
        where.rmdir()


def test_convert_on_a_full_disk_stops_before_any_work(tmp_path, toolchain):
    run = fake_run(tmp_path)
    with small_filesystem() as small:
        p = convert(run, "--out", small / "models")
        one_line(p, "not enough disk")
        assert [x for x in (small / "models").rglob("*") if x.is_file()] == []


@contextlib.contextmanager
def read_only_folder():
    """A folder nobody can write into, root included (a read-only mount for root)."""
    where = Path(tempfile.mkdtemp(prefix="qp-ro-"))
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(where)], check=True)
    else:
        where.chmod(0o555)
    try:
        yield where
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(where)], check=True)
        else:
            where.chmod(0o755)
        where.rmdir()


# ------------------------------------------------------------------ serve (before anything starts)

def write_gguf(path: Path) -> Path:
    from tests.test_serve_local import write_gguf as w

    return w(path)


def serve_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, ROOT / "scripts" / "serve.py", *map(str, args)], capture_output=True,
                          text=True, timeout=60)


def test_serve_port_taken_is_one_line(tmp_path):
    model = write_gguf(tmp_path / "m.gguf")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        one_line(serve_cli("--model", model, "--port", port, "--data-dir", tmp_path / "d"), f"port {port}")


def test_serve_read_only_data_folder_is_one_line(tmp_path):
    model = write_gguf(tmp_path / "m.gguf")
    with read_only_folder() as ro:
        one_line(serve_cli("--model", model, "--data-dir", ro / "webui"), "is not writable")


def test_serve_a_file_that_is_not_gguf(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_text("<html>a download page</html>")
    one_line(serve_cli("--model", bad, "--data-dir", tmp_path / "d"), "is not a GGUF file")


# ------------------------------------------------------------------ evaluate and compare

class _Endpoint:
    """A loopback OpenAI-compatible endpoint that lists a model and then misbehaves:
    `hang` never answers a chat; `die_after=n` closes the server after n answers."""

    def __init__(self, hang: bool = False, die_after: int | None = None):
        self.answers = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _json(self, obj):
                body = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # noqa: N802
                self._json({"object": "list", "data": [{"id": "m", "object": "model"}]})

            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if hang:
                    time.sleep(30)
                    return
                outer.answers += 1
                self._json({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                            "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": "E = mc^2"}}]})
                if die_after is not None and outer.answers >= die_after:
                    threading.Thread(target=outer.httpd.shutdown).start()
                    outer.httpd.socket.close()

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"


def test_evaluate_a_hanging_server_gives_counted_failures(tmp_path, capsys):
    ep = _Endpoint(hang=True)
    out = tmp_path / "r.json"
    assert runner.main(["--base-url", ep.url, "--api-key", "k", "--limit", "2", "--timeout", "1",
                        "--no-lm-eval", "--out", str(out)]) == 0
    qa = json.loads(out.read_text())["qa"]
    assert qa["total"] == 2 and qa["correct"] == 0
    assert all(q["error"] == "request timed out" for q in qa["questions"])


def test_evaluate_a_server_that_dies_mid_run_is_one_line_and_writes_nothing(tmp_path, capsys):
    ep = _Endpoint(die_after=1)
    out = tmp_path / "r.json"
    assert runner.main(["--base-url", ep.url, "--api-key", "k", "--limit", "4", "--timeout", "5",
                        "--no-lm-eval", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("evaluate: lost the connection") and not out.exists()


def test_evaluate_empty_test_split_is_refused_before_work(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "test.jsonl").write_text("")
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    assert runner.main(["--gguf", str(gguf), "--data", str(data), "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "test.jsonl is empty" in err[0]


def test_compare_malformed_results_is_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 1, "name": ')
    p = subprocess.run([sys.executable, ROOT / "scripts" / "compare.py", bad, "--out", tmp_path / "rep"],
                       capture_output=True, text=True)
    one_line(p, "is not JSON")
    assert not (tmp_path / "rep").exists()
