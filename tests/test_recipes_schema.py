"""Every recipe validates against the pinned Axolotl, offline, as on an H100 (fast tier).

One subprocess in the training environment validates all recipes (and a few deliberately
broken ones, to prove the harness catches what Axolotl lets through); the tests read its
JSON report. Recipes are globbed recursively: a recipe the harness did not report fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from qwenphysics.recipes import RECIPES_DIR, demo_gpu_variant, load_recipe
from tests.conftest import ROOT, run
from tests.recipe_checks import recipe_paths

RECIPES = recipe_paths()
IDS = [str(p.relative_to(RECIPES_DIR)) for p in RECIPES]
DEFAULT = RECIPES_DIR / "qwen3b-physics.yml"

# Deliberately broken copies of the default recipe: what each must be reported for.
BROKEN = {
    "typo-top": ({"lora_dropuot": 0.05}, "unknown", "lora_dropuot"),
    "typo-dataset": ({"datasets": [{**load_recipe(DEFAULT)["datasets"][0],
                                    "field_mesages": "messages"}]},
                     "unknown", "datasets[0].field_mesages"),
    "typo-fsdp": ({"fsdp_version": 2, "fsdp_config": {"reshard_after_forwards": True}},
                  "unknown", "fsdp_config.reshard_after_forwards"),
    "typo-special-tokens": ({"special_tokens": {"eos_tokn": "<|im_end|>"}},
                            "unknown", "special_tokens.eos_tokn"),
    "typo-plugin-key": ({"liger_rms_nrom": True}, "unknown", "liger_rms_nrom"),
    "liger-without-plugin": ({"plugins": None}, "unknown", "liger_rms_norm"),
    "deprecated-flash": ({"flash_attention": True, "attn_implementation": None},
                         "deprecated", "flash_attention"),
    "missing-deepspeed": ({"deepspeed": "recipes/deepspeed/zero9.json"}, "error", "zero9.json"),
    "qlora-without-4bit": ({"load_in_4bit": False}, "error", "load_in_4bit"),
}


@pytest.fixture(scope="session")
def reports(train_python, tmp_path_factory) -> dict[str, dict]:
    broken_dir = tmp_path_factory.mktemp("broken-recipes")
    broken = []
    for name, (patch, _, _) in BROKEN.items():
        cfg = {**load_recipe(DEFAULT), **patch}
        path = broken_dir / f"{name}.yml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        broken.append(path)
    demo = broken_dir / "demo-gpu.yml"  # what `make demo` trains on a GPU
    demo.write_text(yaml.safe_dump(demo_gpu_variant(load_recipe(DEFAULT), data_root=ROOT / "demo" / "data",
                                                    output_dir=ROOT / "demo" / "outputs" / "demo-gpu"),
                                   sort_keys=False), encoding="utf-8")
    t4_bf16 = broken_dir / "t4-with-bf16.yml"  # the T4 profile refuses bf16
    t4_bf16.write_text(yaml.safe_dump({**load_recipe(RECIPES_DIR / "qwen3b-physics-t4.yml"), "bf16": True,
                                       "fp16": True}, sort_keys=False), encoding="utf-8")
    report = broken_dir / "report.json"
    p = run([train_python, "-m", "tests.recipe_checks", "validate", "--report", report,
             *RECIPES, *broken, demo, t4_bf16], env={"PYTHONPATH": str(ROOT)}, check=False, timeout=900)
    if not report.exists():
        raise AssertionError(f"no report:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    out = json.loads(report.read_text(encoding="utf-8"))
    return {Path(r["recipe"]).stem if Path(r["recipe"]).parent == broken_dir else
            str(Path(r["recipe"]).resolve().relative_to(RECIPES_DIR)): r for r in out}


def test_the_demo_gpu_recipe_validates_and_trains_enough_steps(reports):
    r = reports["demo-gpu"]
    assert r["ok"], r["error"]
    assert r["unknown_keys"] == [] and r["deprecated_keys"] == [] and r["warnings"] == []
    cfg = demo_gpu_variant(load_recipe(DEFAULT), data_root=Path("/d"), output_dir=Path("/o/demo-gpu"))
    assert cfg["max_steps"] >= 50 and cfg["micro_batch_size"] * cfg["gradient_accumulation_steps"] == 1
    assert cfg["datasets"][0]["path"].startswith("/d/") and cfg["output_dir"] == "/o/demo-gpu"
    for key in ("base_model", "adapter", "lora_r", "attn_implementation", "bf16", "chat_template", "special_tokens"):
        assert cfg[key] == load_recipe(DEFAULT)[key], key


def test_the_t4_recipe_is_checked_against_a_t4(reports):
    assert reports["qwen3b-physics-t4.yml"]["ok"]
    bad = reports["t4-with-bf16"]  # Axolotl warns that training would fail there
    assert any("bf16 requested" in w for w in bad["warnings"]), bad


def test_recipes_are_found_recursively():
    assert len(RECIPES) >= 12, IDS
    assert (RECIPES_DIR / "qwen3b-physics.yml") in RECIPES


def test_every_recipe_was_validated(reports):
    assert set(IDS) <= set(reports), sorted(set(IDS) - set(reports))


@pytest.mark.parametrize("recipe", IDS)
def test_recipe_validates_on_h100_profile(reports, recipe):
    r = reports[recipe]
    assert r["ok"], r["error"]
    assert r["unknown_keys"] == [], "keys Axolotl would silently ignore"
    assert r["deprecated_keys"] == []
    assert r["warnings"] == [], "Axolotl warned about this recipe"


@pytest.mark.parametrize("recipe", IDS)
def test_resolved_config_is_what_the_recipe_promises(reports, recipe):
    r = reports[recipe]
    assert r["ok"], r["error"]
    c = r["resolved"]
    fp16 = bool(c.get("fp16"))
    # precision and attention: bf16/tf32/FA2 everywhere but the fp16 (T4) recipe
    assert c["bf16"] is (not fp16) and bool(c.get("tf32")) is (not fp16)
    assert c["attn_implementation"] == ("sdpa" if fp16 else "flash_attention_2")
    assert "flash_attention" not in load_recipe(RECIPES_DIR / recipe)
    assert c["sample_packing"] is True
    # QLoRA, 4-bit NF4 with double quantisation; no embedding/lm_head in the adapter
    assert c["adapter"] == "qlora" and c["load_in_4bit"] is True
    assert c["bnb_config_kwargs"] == {"bnb_4bit_quant_type": "nf4",
                                      "bnb_4bit_use_double_quant": True}
    assert not {"embed_tokens", "lm_head"} & set(c.get("lora_modules_to_save") or [])
    # Qwen2.5 stops on <|im_end|>; chat turns train on assistant content + <|im_end|>
    assert c["chat_template"] == "qwen_25"
    assert c["special_tokens"]["eos_token"] == "<|im_end|>"
    chat = [d for d in c["datasets"] + c["test_datasets"] if d["type"] == "chat_template"]
    for d in chat:
        assert d["roles_to_train"] == ["assistant"] and d["train_on_eos"] == "turn"
    if chat:
        assert c["eot_tokens"] == ["<|im_end|>"]
    assert c["train_on_inputs"] is False
    # memory, schedule, evaluation, checkpoints, logging, reproducibility
    fsdp = c.get("fsdp_config") or {}
    assert c["gradient_checkpointing"] or fsdp.get("activation_checkpointing")
    assert c["lr_scheduler"] == "cosine" and (c.get("warmup_ratio") or c.get("warmup_steps"))
    assert c["test_datasets"] and c["eval_steps"] and c["save_steps"]
    assert c["auto_resume_from_checkpoints"] is True
    assert c["use_tensorboard"] is True and isinstance(c["seed"], int)
    if not fp16:
        assert "axolotl.integrations.liger.LigerPlugin" in c["plugins"]


@pytest.mark.parametrize("recipe", IDS)
def test_distributed_recipes_validate_with_several_gpus(reports, recipe):
    cfg = load_recipe(RECIPES_DIR / recipe)
    distributed = bool(cfg.get("deepspeed") or cfg.get("fsdp_config") or cfg.get("use_ray"))
    assert (reports[recipe]["n_gpu"] > 1) is distributed
    if cfg.get("fsdp_config"):
        assert cfg.get("fsdp_version") == 2, "FSDP1 is deprecated: use fsdp_version: 2"
    if cfg.get("deepspeed"):
        ds = reports[recipe]["deepspeed"]
        stage = ds["zero_optimization"]["stage"]
        assert f"zero{stage}" in cfg["deepspeed"] and f"zero{stage}" in recipe
        assert cfg["deepspeed"].startswith("recipes/deepspeed/")


@pytest.mark.parametrize("name", BROKEN)
def test_harness_reports_what_axolotl_accepts_silently(reports, name):
    _, kind, needle = BROKEN[name]
    r = reports[name]
    if kind == "unknown":
        assert r["ok"], "Axolotl itself accepts this recipe"
        assert needle in r["unknown_keys"]
    elif kind == "deprecated":
        assert needle in r["deprecated_keys"]
    else:
        assert not r["ok"] and needle in r["error"]


def test_deepspeed_files_are_all_used_and_valid_json():
    used = {load_recipe(p).get("deepspeed") for p in RECIPES}
    for f in sorted((RECIPES_DIR / "deepspeed").glob("*")):
        assert f.suffix == ".json", f
        ds = json.loads(f.read_text(encoding="utf-8"))
        assert f"recipes/deepspeed/{f.name}" in used, f"{f.name} is used by no recipe"
        assert ds["zero_optimization"]["stage"] == int(f.stem.removeprefix("zero"))
        for key in ("train_batch_size", "train_micro_batch_size_per_gpu",
                    "gradient_accumulation_steps"):
            assert ds[key] == "auto", "batch sizes belong to the recipe"
