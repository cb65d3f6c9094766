"""The training recipes (`recipes/**/*.yml`): load them and rewrite them for other machines.

A recipe is a plain Axolotl YAML file that a user launches unchanged on a GPU. This module
holds what the project's own steps need from one:

* `load_recipe`, `dataset_entries` / `parse_data_path`: the recipe and the training contexts it
  reads (`data/<context>/...`);
* `cpu_variant`: the mechanical rewrite of a recipe for a CPU smoke run on the tiny model (what
  `make demo` trains without a GPU, and CI), with the small Axolotl plugin it needs for 4-bit
  layers on CPU; `demo_gpu_variant`: the short run `make demo` trains on a GPU;
* `checkpoints` / `trainer_state`: what a run left behind.

The checks that prove every recipe valid (Axolotl's schema, headers, dataset paths, label spans)
live with the tests (`tests/recipe_checks.py`).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import yaml

from . import REPO_ROOT

RECIPES_DIR = REPO_ROOT / "recipes"
MODEL_CONFIGS_DIR = RECIPES_DIR / "model_configs"
# Axolotl's multi-GPU validators only tell one GPU from several.
MULTI_GPU = 2



class RecipeError(ValueError):
    """A recipe that cannot be loaded or rewritten; the message names the file."""

# Loading and reading ---------------------------------------------------------------------





def load_recipe(path: Path) -> dict:
    path = Path(path)
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(cfg, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping of Axolotl keys")
    return cfg






def is_distributed(cfg: dict) -> bool:
    return bool(cfg.get("deepspeed") or cfg.get("fsdp_config") or cfg.get("fsdp")
                or (cfg.get("use_ray") and int(cfg.get("ray_num_workers") or 1) > 1))


def gpu_count(cfg: dict) -> int:
    """GPUs the validation profile claims: several for DeepSpeed/FSDP/Ray recipes, else one."""
    if cfg.get("use_ray"):
        return max(int(cfg.get("ray_num_workers") or 1), 1)
    return MULTI_GPU if is_distributed(cfg) else 1


def deepspeed_path(cfg: dict) -> Path | None:
    ds = cfg.get("deepspeed")
    if not ds or not isinstance(ds, str):
        return None
    return (REPO_ROOT / ds) if not Path(ds).is_absolute() else Path(ds)


# Datasets against the builder specs ------------------------------------------------------

def dataset_entries(cfg: dict) -> list[tuple[str, dict]]:
    """(section, entry) for every entry of `datasets` and `test_datasets`."""
    out = []
    for section in ("datasets", "test_datasets"):
        for entry in cfg.get(section) or []:
            out.append((section, entry))
    return out


_DATA_PATH = re.compile(r"^data/(?P<context>[^/]+)/(?:(?P<component>[^/]+)/)?"
                        r"(?P<split>train|validation|test)\.jsonl$")


def parse_data_path(path: str) -> dict | None:
    """`data/<context>/<split>.jsonl` or `data/<context>/<component>/<split>.jsonl`."""
    m = _DATA_PATH.match(path)
    return m.groupdict() if m else None








# Schema validation (training environment) ------------------------------------------------





















# The CPU rewrite -------------------------------------------------------------------------

_GPU_ONLY_KEYS = ("deepspeed", "fsdp", "fsdp_config", "fsdp_version", "use_ray", "ray_run_name",
                  "ray_num_workers", "resources_per_worker", "plugins", "cut_cross_entropy",
                  "torch_compile", "torch_compile_backend", "torch_compile_mode",
                  "bfloat16", "float16", "flash_attention", "xformers_attention",
                  "sdp_attention", "flex_attention", "base_model_config", "tokenizer_config",
                  "context_parallel_size", "tensor_parallel_size", "dp_shard_size",
                  "use_wandb", "wandb_project", "wandb_name", "wandb_entity", "use_mlflow",
                  "mlflow_tracking_uri", "mlflow_experiment_name", "hub_model_id")
_KERNEL_KEYS = ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel", "lora_embedding_kernel")


def rewrite_data_path(path: str, data_root: Path) -> str:
    if not path.startswith("data/"):
        raise RecipeError(f"dataset path {path} is not under data/")
    return str(Path(data_root) / path[len("data/"):])


def _relocate(cfg: dict, data_root: Path, output_dir: Path, prepared_path: Path | None = None) -> None:
    """In place: `data/` read from `data_root`, outputs (and Axolotl's tokenised cache) under
    `output_dir`."""
    for section in ("datasets", "test_datasets"):
        for entry in cfg.get(section) or []:
            entry["path"] = rewrite_data_path(str(entry["path"]), data_root)
    cfg["output_dir"] = str(output_dir)
    # Axolotl keys its cache by dataset settings and tokenizer: runs can share one folder.
    cfg["dataset_prepared_path"] = str(prepared_path or Path(output_dir) / "prepared")


def cpu_variant(cfg: dict, *, model_dir: Path, data_root: Path, output_dir: Path,
                max_steps: int = 4, save_steps: int | None = None, sequence_len: int = 512,
                micro_batch_size: int = 1, gradient_accumulation_steps: int = 2,
                prepared_path: Path | None = None) -> dict:
    """The recipe, rewritten mechanically to run on a CPU in a minute.

    Kept: adapter and 4-bit loading (bitsandbytes runs on CPU), LoRA shape, chat template,
    special and end-of-turn tokens, dataset types and fields, packing, gradient checkpointing,
    schedule, evaluation, checkpointing, resume and TensorBoard settings. Changed: the model
    (`model_dir`), fp32 instead of bf16/fp16/tf32, `sdpa` attention, LoRA kernels, Liger and
    cut-cross-entropy off, DeepSpeed/FSDP/Ray dropped (FSDP's activation checkpointing becomes
    gradient checkpointing), `data/` read from `data_root`, outputs under `output_dir`, a few
    short steps with a checkpoint and an evaluation at `save_steps`, and for 4-bit recipes
    the plugin below.
    """
    out = copy.deepcopy(cfg)
    if (cfg.get("fsdp_config") or {}).get("activation_checkpointing"):
        out["gradient_checkpointing"] = True  # FSDP's checkpointing, without FSDP
    for key in list(out):
        if key in _GPU_ONLY_KEYS or key.startswith("liger_"):
            del out[key]
    out["base_model"] = str(model_dir)
    out.update(bf16=False, fp16=False, tf32=False, attn_implementation="sdpa")
    for key in _KERNEL_KEYS:
        out[key] = False
    if str(out.get("optimizer", "")).startswith("paged_"):
        out["optimizer"] = "adamw_bnb_8bit"  # paged optimizers page through CUDA memory
    _relocate(out, data_root, output_dir, prepared_path)
    save_steps = save_steps or max_steps
    out.update(max_steps=max_steps, save_steps=save_steps, eval_steps=save_steps,
               logging_steps=1, sequence_len=sequence_len, micro_batch_size=micro_batch_size,
               gradient_accumulation_steps=gradient_accumulation_steps,
               dataset_num_proc=1, dataloader_num_workers=0, dataloader_pin_memory=False)
    if out.get("load_in_4bit"):
        out["plugins"] = [CPU_QLORA_PLUGIN]
    out.pop("warmup_steps", None)
    out["warmup_ratio"] = out.get("warmup_ratio", 0.0)
    return out


# The demo's GPU run: the default recipe on the demo's small sample would take one optimizer
# step of 65,536 tokens per epoch and leave the model where it was.
DEMO_GPU_STEPS = 60


def demo_gpu_variant(cfg: dict, *, data_root: Path, output_dir: Path, max_steps: int = DEMO_GPU_STEPS) -> dict:
    """The recipe for the demo on a GPU: the same model, adapter, kernels, template and
    precision, with `data/` read from `data_root`, outputs under `output_dir`, and rows of one
    packed 4,096-token micro-batch per optimizer step for `max_steps` steps (epochs repeat
    over the sample), so that a few minutes of training move the model visibly."""
    out = copy.deepcopy(cfg)
    _relocate(out, data_root, output_dir)
    out.update(micro_batch_size=1, gradient_accumulation_steps=1, max_steps=max_steps, num_epochs=max_steps,
               save_steps=max_steps, eval_steps=max_steps // 2, logging_steps=5, warmup_ratio=0.1)
    out.pop("warmup_steps", None)
    out.pop("save_total_limit", None)
    return out


# bitsandbytes on a CPU with AVX512-BF16 repacks a 4-bit layer's weights into an inference-only
# layout the first time the layer runs in eval mode without grad, and never unpacks them:
# after Axolotl's evaluation at step 0, training goes through the inference kernel (no
# gradient through the frozen base, and an in-place bias add that autograd rejects). GPUs
# are unaffected. The CPU rewrite adds this Axolotl plugin, which turns the repack off.
CPU_QLORA_PLUGIN = "qwenphysics.recipes.CpuQLoRAPlugin"


def _make_cpu_qlora_plugin():
    from axolotl.integrations.base import BasePlugin  # noqa: PLC0415 - training environment only

    class CpuQLoRAPlugin(BasePlugin):
        """Keeps bitsandbytes' 4-bit layers on the trainable code path on CPU."""

        def post_model_load(self, cfg, model):
            for module in model.modules():
                if hasattr(module, "support_avx512bf16_for_cpu"):
                    module.support_avx512bf16_for_cpu = False

    return CpuQLoRAPlugin


def __getattr__(name: str):
    # Built on first use: the training environment has Axolotl, the core one does not.
    if name == "CpuQLoRAPlugin":
        cls = _make_cpu_qlora_plugin()
        globals()[name] = cls
        return cls
    raise AttributeError(name)


# Keys that change numbers, not code paths, in a one-process CPU run (plus where it writes).
CPU_INERT_KEYS = ("learning_rate", "cosine_min_lr_ratio", "warmup_ratio", "weight_decay",
                  "max_grad_norm", "save_total_limit", "ddp_find_unused_parameters",
                  "output_dir", "dataset_prepared_path")


def cpu_signature(cpu_cfg: dict) -> str:
    """What a CPU run of this rewrite exercises: equal signatures make the same run.

    Drops `CPU_INERT_KEYS` and fills Axolotl's default checkpointing arguments, so recipes
    that differ only in learning rate or in what the rewrite removed share one smoke run.
    """
    cfg = {k: v for k, v in cpu_cfg.items() if k not in CPU_INERT_KEYS}
    if cfg.get("gradient_checkpointing") and cfg.get("gradient_checkpointing_kwargs") is None:
        cfg["gradient_checkpointing_kwargs"] = {"use_reentrant": True}  # Axolotl's default
    return json.dumps(cfg, sort_keys=True)


def write_recipe(cfg: dict, path: Path, header: str = "") -> Path:
    """`cfg` as YAML at `path`, after `header` (comment lines); left untouched when unchanged."""
    path = Path(path)
    text = header + yaml.safe_dump(cfg, sort_keys=False)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return path


# Reading a run back ----------------------------------------------------------------------

def checkpoints(output_dir: Path) -> list[Path]:
    """`checkpoint-N` folders, by step."""
    found = [p for p in Path(output_dir).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def trainer_state(output_dir: Path) -> dict:
    """The newest checkpoint's trainer_state.json."""
    ckpts = checkpoints(output_dir)
    if not ckpts:
        raise RecipeError(f"{output_dir}: no checkpoint-N folder")
    return json.loads((ckpts[-1] / "trainer_state.json").read_text(encoding="utf-8"))








# The label check -------------------------------------------------------------------------





# Command line ----------------------------------------------------------------------------



