"""One system prompt: `serve/system-prompt.txt` is what the training contexts teach with, what
the served preset (local and Compose), the Ollama Modelfile and the demo send, and what the
evaluation asks with. No other file carries a copy that could drift."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from tests.conftest import ROOT

PROMPT_FILE = ROOT / "serve" / "system-prompt.txt"
PROMPT = PROMPT_FILE.read_text(encoding="utf-8").strip()


def test_the_prompt_steers_to_the_math_delimiters_open_webui_renders():
    assert PROMPT.startswith("You are QwenPhysics") and "$...$" in PROMPT and "$$...$$" in PROMPT


@pytest.mark.parametrize("name", ["abstracts-chat", "physics-qa", "reading-comprehension", "sections-chat"])
def test_every_chat_context_trains_with_it(name):
    from dataset_builders import spec

    s = spec.load(name)
    assert s.system_prompt == PROMPT and PROMPT_FILE.resolve() in s.includes
    # the spec's checksum covers the prompt: editing it makes a build (and the demo's) stale
    assert s.source_bytes().endswith(PROMPT_FILE.read_bytes())


def test_a_built_context_and_its_manifest_carry_it(tiny_dataset):
    first = json.loads((tiny_dataset / "train.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first["messages"][0] == {"role": "system", "content": PROMPT}
    assert json.loads((tiny_dataset / "manifest.json").read_text())["spec"]["resolved"]["system_prompt"] == PROMPT


def test_the_served_preset_the_modelfile_and_the_evaluation_use_it(tmp_path):
    from qwenphysics import serving
    from qwenphysics.evaluation.runner import SYSTEM_PROMPT
    from qwenphysics.model_card import write_modelfile

    assert serving.load_preset(serving.PRESET_FILE)["params"]["system"] == PROMPT
    write_modelfile(tmp_path / "Modelfile", "x.gguf")
    assert f'SYSTEM """{PROMPT}"""' in (tmp_path / "Modelfile").read_text()
    assert SYSTEM_PROMPT == PROMPT


def test_compose_mounts_it_beside_the_preset():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    mounts = services["webui-init"]["volumes"]
    assert "./serve/system-prompt.txt:/opt/qwenphysics/serve/system-prompt.txt:ro" in mounts
    assert "./serve/physics-preset.json:/opt/qwenphysics/serve/physics-preset.json:ro" in mounts


def test_a_preset_with_its_own_copy_is_refused(tmp_path):
    from qwenphysics import serving

    preset = json.loads((ROOT / "serve" / "physics-preset.json").read_text())
    preset["params"]["system"] = PROMPT + " Be brief."
    (tmp_path / "physics-preset.json").write_text(json.dumps(preset))
    (tmp_path / "system-prompt.txt").write_text(PROMPT)
    with pytest.raises(serving.ServeError, match="sets its own system prompt"):
        serving.load_preset(tmp_path / "physics-preset.json")


def test_no_file_holds_a_copy_of_the_prompt():
    """A copy pasted into a spec, the preset, code or docs fails here."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    needle = PROMPT[:40]
    copies = []
    for rel in files:
        p = ROOT / rel
        if rel == "serve/system-prompt.txt" or rel.startswith("tests/") or not p.is_file():
            continue
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if needle in text or "You are QwenPhysics" in text:
            copies.append(rel)
    assert copies == [], f"copies of the system prompt (read serve/system-prompt.txt instead): {copies}"
