"""The training recipes (`recipes/**/*.yml`): load, validate, and rewrite them for CPU.

A recipe is a plain Axolotl YAML file that a user launches unchanged on a GPU. This module
holds what CI needs to prove each one works without a GPU, the hub or real weights:

* `read_header` / `dataset_entries` / `check_datasets`: the header block and the dataset
  paths, checked against the builder specs that produce them (core environment);
* `validate_recipe`: Axolotl's own schema validation under an H100 capability profile, with a
  local `config.json` mirror of the base model, plus the keys Axolotl would silently ignore
  (training environment; `python -m qwenphysics.recipes validate` reports in JSON);
* `cpu_variant`: the mechanical rewrite of a recipe for a CPU smoke run on the tiny model;
* `trained_spans` / `expected_spans`: the label check; `smoke_generate`: the merged model.

Usage:
    .venv-train/bin/python -m qwenphysics.recipes validate recipes/qwen3b-physics.yml
    .venv-train/bin/python -m qwenphysics.recipes generate outputs/qwen3b-physics/merged
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
import sys
import typing
from pathlib import Path
from typing import Any, Iterable

import yaml

from . import REPO_ROOT

RECIPES_DIR = REPO_ROOT / "recipes"
MODEL_CONFIGS_DIR = RECIPES_DIR / "model_configs"
# Folders of recipes/ that hold support files, not recipes.
SUPPORT_DIRS = ("accelerate", "deepspeed", "merges", "model_configs")  # merges: mergekit YAML
HEADER_FIELDS = ("Purpose", "Context", "Data", "Launch", "Hardware", "VRAM", "Compare")

# The capability profile of one H100 (what `axolotl` detects there), used by the validation.
H100_CAPABILITIES = {"bf16": True, "fp8": True, "tf32": True, "n_gpu": 1,
                     "compute_capability": "sm_90"}
# ... and of one T4 (Turing: no bf16, no tf32), for the recipes written for it.
T4_CAPABILITIES = {"bf16": False, "fp8": False, "tf32": False, "n_gpu": 1, "compute_capability": "sm_75"}
# Axolotl's multi-GPU validators only tell one GPU from several.
MULTI_GPU = 2

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    "AXOLOTL_DO_NOT_TRACK": "1", "DO_NOT_TRACK": "1", "WANDB_MODE": "disabled",
    "TOKENIZERS_PARALLELISM": "false",
}


class RecipeError(ValueError):
    """A recipe that cannot be loaded or rewritten; the message names the file."""


# Loading and reading ---------------------------------------------------------------------

def recipe_paths(root: Path = RECIPES_DIR) -> list[Path]:
    """Every recipe: each `.yml` file under `root`, at any depth, outside the support folders."""
    root = Path(root)
    return sorted(p for p in root.rglob("*.yml")
                  if p.relative_to(root).parts[0] not in SUPPORT_DIRS)


def stray_files(root: Path = RECIPES_DIR) -> list[Path]:
    """YAML files that would not be picked up as recipes (wrong extension or folder)."""
    root = Path(root)
    out = []
    for p in root.rglob("*"):
        if not p.is_file():
            continue
        top = p.relative_to(root).parts[0]
        if p.suffix == ".yaml" and top != "accelerate":
            out.append(p)
        elif p.suffix == ".yml" and top in SUPPORT_DIRS and top != "merges":  # merges/: mergekit recipes
            out.append(p)
    return sorted(out)


def load_recipe(path: Path) -> dict:
    path = Path(path)
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(cfg, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping of Axolotl keys")
    return cfg


def read_header(path: Path) -> dict[str, str]:
    """The `# Field: value` lines of the comment block that opens a recipe.

    Continuation lines (more indented comments) join their field's value with a space.
    """
    fields: dict[str, str] = {}
    current = None
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        text = line[1:]
        m = re.match(r"^ ([A-Z][A-Za-z &-]*):\s+(.*)$", text)
        if m and m.group(1) in HEADER_FIELDS + ("Merge",):
            current = m.group(1)
            fields[current] = m.group(2).strip()
        elif current and text.startswith("  ") and text.strip():
            fields[current] += " " + text.strip()
        else:
            current = None
    return fields


def model_config_dir(base_model: str) -> Path:
    """`Qwen/Qwen2.5-3B-Instruct` -> recipes/model_configs/Qwen2.5-3B-Instruct (config.json)."""
    return MODEL_CONFIGS_DIR / base_model.rstrip("/").split("/")[-1]


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
# What each builder format becomes in Axolotl, and the fields its lines carry.
FORMAT_TYPES = {"chat": "chat_template", "completion": "completion"}
FORMAT_FIELDS = {"chat": {"field_messages": "messages"}, "completion": {"field": "text"}}


def parse_data_path(path: str) -> dict | None:
    """`data/<context>/<split>.jsonl` or `data/<context>/<component>/<split>.jsonl`."""
    m = _DATA_PATH.match(path)
    return m.groupdict() if m else None


def _strings(obj: Any) -> Iterable[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def spec_components(spec) -> set[str]:
    """The contexts a mixture spec names (any spec name appearing in its options)."""
    from dataset_builders import spec as spec_mod

    names = set(spec_mod.list_specs())
    return {s for s in _strings(spec.options) if s in names and s != spec.name}


def check_datasets(cfg: dict) -> list[str]:
    """Problems with the recipe's dataset entries, judged by the builder specs (empty: fine).

    Each path must be `data/<context>/...` for a spec of that name (a mixture's components
    `data/<context>/<component>/...`, the component being a spec the mixture names), the
    Axolotl `type` must match the spec's format, and the field names the lines it writes.
    """
    from dataset_builders import spec as spec_mod
    from dataset_builders.records import InputError

    problems = []
    entries = dataset_entries(cfg)
    if not cfg.get("datasets"):
        problems.append("no `datasets`")
    if not cfg.get("test_datasets"):
        problems.append("no `test_datasets`: the recipe never evaluates on a validation split")
    seen_components: dict[str, set[str]] = {}
    for section, entry in entries:
        where = f"{section}: {entry.get('path')}"
        parsed = parse_data_path(str(entry.get("path", "")))
        if not parsed:
            problems.append(f"{where}: not data/<context>/[<component>/]<split>.jsonl")
            continue
        want_split = "train" if section == "datasets" else "validation"
        if parsed["split"] != want_split:
            problems.append(f"{where}: {section} should read the {want_split} split")
        if entry.get("ds_type") != "json":
            problems.append(f"{where}: ds_type must be json (the builders write JSONL)")
        try:
            spec = spec_mod.load(parsed["context"])
        except InputError as e:
            problems.append(f"{where}: no builder spec produces it ({e})")
            continue
        fmt_spec = spec
        if parsed["component"]:
            comps = spec_components(spec)
            seen_components.setdefault(spec.name, set()).add(parsed["component"])
            if parsed["component"] not in comps:
                problems.append(f"{where}: '{parsed['component']}' is not a component of "
                                f"spec '{spec.name}' (it names {sorted(comps)})")
                continue
            fmt_spec = spec_mod.load(parsed["component"])
        elif spec.source == "mixture":
            problems.append(f"{where}: '{spec.name}' is a mixture: list one dataset per "
                            f"component, data/{spec.name}/<component>/{parsed['split']}.jsonl")
            continue
        want_type = FORMAT_TYPES[fmt_spec.format]
        if entry.get("type") != want_type:
            problems.append(f"{where}: type '{entry.get('type')}' but spec '{fmt_spec.name}' "
                            f"writes {fmt_spec.format} lines (type: {want_type})")
        for key, value in FORMAT_FIELDS[fmt_spec.format].items():
            got = entry.get(key, value if key == "field" else None)
            if got != value:
                problems.append(f"{where}: {key} is {got!r}; spec '{fmt_spec.name}' writes "
                                f"'{value}'")
        if fmt_spec.format == "chat" and entry.get("roles_to_train") != ["assistant"]:
            problems.append(f"{where}: roles_to_train must be [assistant]")
    for mixture, used in seen_components.items():
        for section in ("datasets", "test_datasets"):
            used_here = {parse_data_path(e["path"])["component"] for s, e in entries
                         if s == section and parse_data_path(str(e.get("path", "")))
                         and parse_data_path(e["path"])["context"] == mixture}
            missing = spec_components(spec_mod.load(mixture)) - used_here
            if missing:
                problems.append(f"{section}: mixture '{mixture}' also builds {sorted(missing)}, "
                                "which the recipe does not read")
    return problems


# Schema validation (training environment) ------------------------------------------------

def _model_classes(annotation) -> list[type]:
    """The pydantic model classes inside a field annotation (Optional, unions, lists...)."""
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found = []
    for arg in typing.get_args(annotation):
        found += _model_classes(arg)
    return found


def _field_names(model) -> dict[str, Any]:
    """Field name and aliases -> FieldInfo."""
    names = {}
    for name, info in model.model_fields.items():
        names[name] = info
        for alias in (info.alias, info.validation_alias):
            if isinstance(alias, str):
                names[alias] = info
            for choice in getattr(alias, "choices", ()) or ():
                if isinstance(choice, str):
                    names[choice] = info
    return names


def unknown_keys(data: dict, model, prefix: str = "") -> tuple[list[str], list[str]]:
    """Keys of `data` that `model` does not declare, and keys it declares deprecated.

    Recurses into nested models (dataset entries, fsdp_config, special_tokens...); for a
    union (a dataset entry may be SFT, DPO, KTO...) the member declaring most of the keys
    is the one compared. Free-form dicts (e.g. `deepspeed`, `*_kwargs`) are not descended.
    """
    unknown, deprecated = [], []
    names = _field_names(model)
    deprecated_names = _deprecated_fields(model)
    for key, value in data.items():
        path = f"{prefix}{key}"
        info = names.get(key)
        if info is None:
            unknown.append(path)
            continue
        if key in deprecated_names or getattr(info, "deprecated", None):
            deprecated.append(path)
        classes = _model_classes(info.annotation)
        if not classes:
            continue
        items = [value] if isinstance(value, dict) else (
            [(i, v) for i, v in enumerate(value)] if isinstance(value, list) else [])
        for item in items:
            index, sub = (item if isinstance(item, tuple) else (None, item))
            if not isinstance(sub, dict):
                continue
            best = max(classes, key=lambda c: len(set(sub) & set(_field_names(c))))
            sub_prefix = f"{path}[{index}]." if index is not None else f"{path}."
            u, d = unknown_keys(sub, best, sub_prefix)
            unknown += u
            deprecated += d
    return unknown, deprecated


def _deprecated_fields(model) -> set[str]:
    try:
        from axolotl.utils.schemas.deprecated import DeprecatedParameters
    except ImportError:  # pragma: no cover - only in the training environment
        return set()
    if isinstance(model, type) and issubclass(model, DeprecatedParameters):
        return set(DeprecatedParameters.model_fields)
    return set()


def validate_recipe(path: Path) -> dict:
    """Validate one recipe as Axolotl would on an H100 (GPUs: see `gpu_count`), offline.

    Returns a JSON-able report: ok, error, unknown and deprecated keys, the DeepSpeed file,
    the GPU count used, and the resolved config (what Axolotl would train with).
    """
    path = Path(path)
    report: dict[str, Any] = {"recipe": str(path), "ok": False, "error": None,
                              "unknown_keys": [], "deprecated_keys": [], "deepspeed": None}
    try:
        cfg = load_recipe(path)
        n_gpu = gpu_count(cfg)
        report["n_gpu"] = n_gpu
        ds = deepspeed_path(cfg)
        if cfg.get("deepspeed"):
            if ds is None or not ds.is_file():
                raise RecipeError(f"deepspeed config {cfg['deepspeed']} does not exist")
            report["deepspeed"] = json.loads(ds.read_text(encoding="utf-8"))
            check_deepspeed(report["deepspeed"])
        # The key diff first: it holds even when Axolotl rejects the recipe.
        report["unknown_keys"], report["deprecated_keys"] = _key_diff(cfg)
        mirror = model_config_dir(str(cfg.get("base_model", "")))
        if not (mirror / "config.json").is_file():
            raise RecipeError(f"no config.json mirror for {cfg.get('base_model')} in {mirror}")
        collect = _Collect()
        logging.getLogger("axolotl").addHandler(collect)
        try:
            resolved = _axolotl_validate(cfg, mirror, n_gpu)
        finally:
            logging.getLogger("axolotl").removeHandler(collect)
        report["warnings"] = sorted(set(collect.messages))
        report["resolved"] = json.loads(json.dumps(resolved, default=str))
        report["ok"] = True
    except Exception as e:  # noqa: BLE001 - the report carries any failure to the test
        report["error"] = f"{type(e).__name__}: {e}"
    return report


def check_deepspeed(ds: dict) -> None:
    """DeepSpeed's own schema for the `zero_optimization` block (it rejects unknown keys).

    "auto" values are filled by the trainer at launch; a placeholder number stands in here.
    """
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    zero = {k: (10**8 if v == "auto" else v) for k, v in ds.get("zero_optimization", {}).items()}
    DeepSpeedZeroConfig(**zero)
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu",
                "gradient_accumulation_steps"):
        if ds.get(key, "auto") != "auto":
            raise RecipeError(f"deepspeed {key} is {ds[key]!r}: leave it \"auto\" so the "
                              "recipe's batch settings are the only ones")


def _input_model(cfg: dict):
    from axolotl.utils.config import prepare_plugins
    from axolotl.utils.dict import DictDefault
    from axolotl.utils.schemas.config import AxolotlInputConfig

    if cfg.get("plugins"):
        from axolotl.integrations.config import merge_input_args

        prepare_plugins(DictDefault(copy.deepcopy(cfg)))
        return merge_input_args()[1]
    return AxolotlInputConfig


def _key_diff(cfg: dict) -> tuple[list[str], list[str]]:
    return unknown_keys(cfg, _input_model(cfg))


def _axolotl_validate(cfg: dict, mirror: Path, n_gpu: int) -> dict:
    import torch
    from axolotl.utils.config import (normalize_cfg_datasets, normalize_config,
                                      prepare_plugins, validate_config)
    from axolotl.utils.dict import DictDefault

    data = DictDefault(copy.deepcopy(cfg))
    # The harness, not the recipe, points Axolotl at the local config mirror (offline).
    data.base_model_config = str(mirror)
    if data.deepspeed:
        data.deepspeed = str(deepspeed_path(cfg))
    prepare_plugins(data)
    # a recipe written for GPUs without bf16 (fp16 on) is checked against a T4, the others an H100
    base_caps = T4_CAPABILITIES if cfg.get("fp16") else H100_CAPABILITIES
    capabilities = dict(base_caps, n_gpu=n_gpu)
    env_capabilities = {"torch_version": str(torch.__version__).split("+", maxsplit=1)[0]}
    old = os.environ.get("WORLD_SIZE")
    os.environ["WORLD_SIZE"] = str(n_gpu)
    try:
        validated = validate_config(data, capabilities=capabilities,
                                    env_capabilities=env_capabilities)
        if validated.use_ray:
            # What a Ray worker derives before normalising (the driver defers it).
            validated.gradient_accumulation_steps = (
                validated.gradient_accumulation_steps
                or validated.batch_size // validated.micro_batch_size)
            validated.batch_size = (validated.batch_size or validated.micro_batch_size
                                    * validated.gradient_accumulation_steps)
        normalize_config(validated)
        normalize_cfg_datasets(validated)
    finally:
        if old is None:
            os.environ.pop("WORLD_SIZE", None)
        else:
            os.environ["WORLD_SIZE"] = old
    return validated.to_dict() if hasattr(validated, "to_dict") else dict(validated)


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


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
    from axolotl.integrations.base import BasePlugin

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


def logged_losses(state: dict) -> list[float]:
    return [float(e["loss"]) for e in state.get("log_history", []) if "loss" in e]


def all_finite(values: Iterable[float]) -> bool:
    values = list(values)
    return bool(values) and all(math.isfinite(v) for v in values)


def smoke_generate(model_dir: Path, prompt: str = "What is a black hole?",
                   max_new_tokens: int = 8) -> dict:
    """Load a merged model with transformers and generate from a chat prompt (training env)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}],
                                  add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)
    torch.manual_seed(0)
    out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    new = out[0, ids["input_ids"].shape[1]:].tolist()
    return {"eos_token": tok.eos_token, "eos_token_id": tok.eos_token_id,
            "chat_template": bool(tok.chat_template), "new_tokens": new,
            "text": tok.decode(new), "n_parameters": sum(p.numel() for p in model.parameters()),
            "finite": bool(all(torch.isfinite(p).all() for p in model.parameters()))}


# The label check -------------------------------------------------------------------------

def trained_spans(input_ids: list[int], labels: list[int]) -> list[list[int]]:
    """Maximal runs of positions whose label is not -100, as token ids."""
    spans, current = [], []
    for tok, lab in zip(input_ids, labels, strict=True):
        if lab != -100:
            if lab != tok:
                raise RecipeError(f"label {lab} differs from input id {tok}: labels are shifted")
            current.append(tok)
        elif current:
            spans.append(current)
            current = []
    if current:
        spans.append(current)
    return spans


def expected_spans(messages: list[dict], end_of_turn: str = "<|im_end|>") -> list[str]:
    """What a chat example should train on: each assistant content and its end-of-turn token."""
    return [m["content"] + end_of_turn for m in messages if m["role"] == "assistant"]


# Command line ----------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m qwenphysics.recipes",
                                 description="Check recipes with the pinned Axolotl (offline).")
    sub = ap.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="print one JSON report per recipe")
    v.add_argument("recipes", nargs="*", type=Path, help="default: every recipe")
    v.add_argument("--report", type=Path, default=None,
                   help="write the JSON there (libraries may also print to stdout)")
    g = sub.add_parser("generate", help="load a merged model and generate (prints JSON)")
    g.add_argument("model_dir", type=Path)
    args = ap.parse_args(argv)
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    if args.command == "generate":
        json.dump(smoke_generate(args.model_dir), sys.stdout)
        sys.stdout.write("\n")
        return 0
    paths = args.recipes or recipe_paths()
    reports = [validate_recipe(p) for p in paths]
    text = json.dumps(reports, indent=1) + "\n"
    if args.report:
        args.report.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0 if all(r["ok"] and not r["unknown_keys"] and not r["deprecated_keys"]
                    for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
