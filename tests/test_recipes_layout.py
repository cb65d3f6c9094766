"""Recipes read by people first, and wired to the data the builders write (fast tier).

Dataset paths and field names are checked against the builder specs; headers, comment
groups and the batch arithmetic against the YAML values; the README table and the model
config mirrors against the recipes. Recipes are globbed recursively.
"""

from __future__ import annotations

import json
import re
import shlex

import pytest

from qwenphysics.recipes import (
    CPU_QLORA_PLUGIN,
    MODEL_CONFIGS_DIR,
    RECIPES_DIR,
    cpu_variant,
    dataset_entries,
    load_recipe,
    parse_data_path,
    write_recipe,
)
from tests.recipe_checks import (
    HEADER_FIELDS,
    check_datasets,
    model_config_dir,
    read_header,
    recipe_paths,
    stray_files,
)

RECIPES = recipe_paths()
IDS = [str(p.relative_to(RECIPES_DIR)) for p in RECIPES]
GROUPS = ("# Model", "# QLoRA", "# Chat template and end-of-turn", "# Data",
          "# Sequence packing", "# Training", "# Precision and speed",
          "# Evaluation & checkpoints", "# Logging")
README = RECIPES_DIR / "README.md"


def _recipe(rel):
    return RECIPES_DIR / rel


def test_glob_is_recursive_and_nothing_is_left_out(tmp_path):
    (tmp_path / "qwen" / "deep").mkdir(parents=True)
    (tmp_path / "top.yml").write_text("base_model: x\n")
    (tmp_path / "qwen" / "deep" / "nested.yml").write_text("base_model: x\n")
    (tmp_path / "deepspeed").mkdir()
    (tmp_path / "deepspeed" / "zero2.json").write_text("{}")
    (tmp_path / "wrong.yaml").write_text("base_model: x\n")
    assert [p.name for p in recipe_paths(tmp_path)] == ["nested.yml", "top.yml"]
    assert [p.name for p in stray_files(tmp_path)] == ["wrong.yaml"]
    assert stray_files() == [], "recipes use .yml; support files live in their folders"


@pytest.mark.parametrize("recipe", IDS)
def test_datasets_are_what_a_builder_spec_writes(recipe):
    assert check_datasets(load_recipe(_recipe(recipe))) == []


@pytest.mark.parametrize("recipe", IDS)
def test_header_block(recipe):
    path = _recipe(recipe)
    header = read_header(path)
    missing = [f for f in HEADER_FIELDS if not header.get(f)]
    assert not missing, f"header lacks {missing}"
    assert "estimate" in header["VRAM"] and re.search(r"\d+ GB", header["VRAM"])
    assert f"recipes/{recipe}" in header["Launch"]
    assert header["Launch"].startswith(("accelerate launch", "axolotl train"))
    if not load_recipe(path).get("use_ray"):
        assert "-m axolotl.cli.train" in header["Launch"]
    cfg = load_recipe(path)
    contexts = {parse_data_path(e["path"])["context"] for _, e in dataset_entries(cfg)}
    assert contexts == {header["Context"]}
    # the Data line is the exact builder command for that context
    data = shlex.split(header["Data"])
    assert data[:4] == [".venv/bin/python", "-m", "dataset_builders", "build"]  # the core env builds data
    assert data[data.index("--spec") + 1] == header["Context"]
    assert data[data.index("--out") + 1] == f"data/{header['Context']}"
    assert "--input" in data
    assert header["Merge"].startswith(f"axolotl merge-lora recipes/{recipe}")
    assert cfg["output_dir"] in header["Merge"]
    if cfg.get("adapter") in ("lora", "qlora"):  # the Merge line merges into the unquantized base
        assert cfg.get("merge_method") == "legacy"
    if not load_recipe(path).get("use_ray"):  # like-for-like: a process count is always named
        assert re.search(r"--num_processes \d+ ", header["Launch"])
    else:
        assert "--use-ray" in header["Launch"]
    if cfg.get("lora_qkv_kernel"):  # the LoRA attention patch keeps transformers' rope
        assert not cfg.get("liger_rope")


@pytest.mark.parametrize("recipe", IDS)
def test_keys_are_grouped_under_comments(recipe):
    lines = _recipe(recipe).read_text(encoding="utf-8").splitlines()
    assert [g for g in GROUPS if g not in lines] == []
    positions = [lines.index(g) for g in GROUPS]
    assert positions == sorted(positions), "groups appear in the usual order"


_ARITH = re.compile(
    r"Batch arithmetic: micro_batch_size (\d+) x sequence_len ([\d,]+) x "
    r"gradient_accumulation_steps (\d+)(?:\s+#?\s*x (\d+) (?:GPUs|workers))?"
    r"\s+#?\s*= ([\d,]+) tokens")


@pytest.mark.parametrize("recipe", IDS)
def test_batch_arithmetic_is_written_out_and_right(recipe):
    text = _recipe(recipe).read_text(encoding="utf-8")
    cfg = load_recipe(_recipe(recipe))
    m = _ARITH.search(text)
    assert m, "the tokens-per-step arithmetic comment is missing"
    micro, seq, accum, gpus, tokens = (int(g.replace(",", "")) if g else None for g in m.groups())
    assert (micro, seq, accum) == (cfg["micro_batch_size"], cfg["sequence_len"],
                                   cfg["gradient_accumulation_steps"])
    distributed = bool(cfg.get("deepspeed") or cfg.get("fsdp_config") or cfg.get("use_ray"))
    assert (gpus is not None) is distributed
    if cfg.get("use_ray"):
        assert gpus == cfg["ray_num_workers"]
    assert micro * seq * accum * (gpus or 1) == tokens
    # every recipe takes the same optimizer step, so contexts and hardware compare
    assert tokens == 65_536


@pytest.mark.parametrize("recipe", IDS)
def test_model_config_mirror_exists(recipe):
    base = load_recipe(_recipe(recipe))["base_model"]
    assert base.startswith("Qwen/Qwen2.5-")
    assert (model_config_dir(base) / "config.json").is_file()
    assert "base_model_config" not in load_recipe(_recipe(recipe)), "the harness adds it"


def _n_params(c: dict) -> int:
    h, layers, inter, vocab = (c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"],
                               c["vocab_size"])
    kv = c["num_key_value_heads"] * h // c["num_attention_heads"]
    per_layer = 2 * h * h + h + 2 * (h * kv + kv) + 3 * h * inter + 2 * h
    return layers * per_layer + vocab * h * (1 if c["tie_word_embeddings"] else 2) + h


@pytest.mark.parametrize("name,billions,tied", [("Qwen2.5-3B-Instruct", 3.09, True),
                                                ("Qwen2.5-7B-Instruct", 7.62, False),
                                                ("Qwen2.5-14B-Instruct", 14.77, False)])
def test_model_config_mirrors_match_published_sizes(name, billions, tied):
    c = json.loads((MODEL_CONFIGS_DIR / name / "config.json").read_text(encoding="utf-8"))
    assert c["model_type"] == "qwen2" and c["architectures"] == ["Qwen2ForCausalLM"]
    assert round(_n_params(c) / 1e9, 2) == billions
    assert c["tie_word_embeddings"] is tied
    assert (c["bos_token_id"], c["eos_token_id"], c["rms_norm_eps"]) == (151643, 151645, 1e-6)
    if name.startswith("Qwen2.5-3B"):
        assert (c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"],
                c["num_key_value_heads"], c["intermediate_size"], c["vocab_size"],
                c["rope_theta"], c["max_position_embeddings"]) == (
                    2048, 36, 16, 2, 11008, 151936, 1e6, 32768)


def test_every_mirror_is_used():
    used = {model_config_dir(load_recipe(p)["base_model"]) for p in RECIPES}
    assert {d for d in MODEL_CONFIGS_DIR.iterdir() if d.is_dir()} == used


def test_readme_lists_every_recipe_and_the_launch_commands():
    text = README.read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    for rel in IDS:
        row = [r for r in rows if f"`{rel}`" in r]
        assert row, f"README table lacks {rel}"
        header = read_header(_recipe(rel))
        assert f"`{header['Context']}`" in row[0] and "estimate" in text
        vram = re.search(r"~\d+ GB", header["VRAM"]).group(0)
        assert vram in row[0], f"README and {rel} disagree on the VRAM estimate"
    for needle in ("accelerate launch --num_processes 1 -m axolotl.cli.train recipes/qwen3b-physics.yml", "--use-ray",
                   "torchrun", "--nnodes", "--machine_rank", "--main_process_ip",
                   "use_ray", "ray start --head", "axolotl merge-lora", "scripts/cpu_recipe.py"):
        assert needle in text, needle


def test_check_datasets_reports_mismatches():
    good = load_recipe(RECIPES_DIR / "qwen3b-physics.yml")
    assert check_datasets(good) == []
    wrong_type = {**good, "datasets": [{**good["datasets"][0], "type": "completion"}]}
    assert any("writes chat lines" in p for p in check_datasets(wrong_type))
    wrong_field = {**good, "datasets": [{**good["datasets"][0], "field_messages": "conversations"}]}
    assert any("field_messages" in p for p in check_datasets(wrong_field))
    no_spec = {**good, "datasets": [{**good["datasets"][0], "path": "data/nope/train.jsonl"}]}
    assert any("no builder spec" in p for p in check_datasets(no_spec))
    outside = {**good, "datasets": [{**good["datasets"][0], "path": "/tmp/x.jsonl"}]}
    assert any("not data/" in p for p in check_datasets(outside))
    eval_on_train = {**good, "test_datasets": [{**good["test_datasets"][0],
                                                 "path": "data/abstracts-chat/train.jsonl"}]}
    assert any("validation split" in p for p in check_datasets(eval_on_train))
    no_eval = {k: v for k, v in good.items() if k != "test_datasets"}
    assert any("never evaluates" in p for p in check_datasets(no_eval))
    completion = load_recipe(RECIPES_DIR / "qwen3b-physics-completion.yml")
    assert check_datasets(completion) == []
    as_chat = {**completion, "datasets": [{**completion["datasets"][0], "type": "chat_template"}]}
    assert any("writes completion lines" in p for p in check_datasets(as_chat))


def test_cpu_rewrite_is_mechanical(tmp_path):
    """What the rewrite keeps and what it drops, on every recipe."""
    for path in RECIPES:
        cfg = load_recipe(path)
        cpu = cpu_variant(cfg, model_dir=tmp_path / "tiny", data_root=tmp_path / "data",
                          output_dir=tmp_path / "out")
        for key in ("adapter", "load_in_4bit", "lora_r", "lora_alpha", "chat_template",
                    "special_tokens", "eot_tokens", "sample_packing", "lr_scheduler",
                    "auto_resume_from_checkpoints", "use_tensorboard", "seed"):
            assert cpu.get(key) == cfg.get(key), (path.name, key)
        assert (cpu["bf16"], cpu["fp16"], cpu["tf32"]) == (False, False, False)
        assert cpu["attn_implementation"] == "sdpa"
        assert not any(cpu[k] for k in ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel"))
        assert not {"deepspeed", "fsdp_config", "fsdp_version", "use_ray"} & set(cpu)
        assert not [k for k in cpu if k.startswith("liger_") or k == "cut_cross_entropy"]
        for (_, before), (_, after) in zip(dataset_entries(cfg), dataset_entries(cpu)):
            assert after["path"] == str(tmp_path / "data" / before["path"][len("data/"):])
            assert {k: v for k, v in after.items() if k != "path"} == \
                {k: v for k, v in before.items() if k != "path"}
        assert cpu["base_model"] == str(tmp_path / "tiny") and cpu["max_steps"] == 4
        if cfg.get("load_in_4bit"):
            assert cpu["plugins"] == [CPU_QLORA_PLUGIN]
        assert load_recipe(write_recipe(cpu, tmp_path / "cpu.yml")) == cpu
