"""Checks that prove each training recipe works without a GPU, the hub or real weights (the
test harness of `qwenphysics.recipes`):

* `read_header` / `check_datasets`: the header block and the dataset paths, checked against the
  builder specs that produce them (core environment);
* `validate_recipe`: Axolotl's own schema validation under an H100 capability profile, with a
  local `config.json` mirror of the base model, plus the keys Axolotl would silently ignore
  (training environment; `python -m tests.recipe_checks validate` reports in JSON);
* `trained_spans` / `expected_spans`: the label check; `smoke_generate`: the merged model.

Usage (from the checkout):
    .venv-train/bin/python -m tests.recipe_checks validate recipes/qwen3b-physics.yml
    .venv-train/bin/python -m tests.recipe_checks generate outputs/qwen3b-physics/merged
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import re
import sys
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dataset_builders import spec as spec_mod
from dataset_builders.records import InputError
from qwenphysics.core.offline import OFFLINE_ENV
from qwenphysics.recipes import (
    MODEL_CONFIGS_DIR,
    RECIPES_DIR,
    RecipeError,
    dataset_entries,
    deepspeed_path,
    gpu_count,
    load_recipe,
    parse_data_path,
)

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


# What each builder format becomes in Axolotl, and the fields its lines carry.
FORMAT_TYPES = {"chat": "chat_template", "completion": "completion"}


FORMAT_FIELDS = {"chat": {"field_messages": "messages"}, "completion": {"field": "text"}}


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

    names = set(spec_mod.list_specs())
    return {s for s in _strings(spec.options) if s in names and s != spec.name}


def check_datasets(cfg: dict) -> list[str]:
    """Problems with the recipe's dataset entries, judged by the builder specs (empty: fine).

    Each path must be `data/<context>/...` for a spec of that name (a mixture's components
    `data/<context>/<component>/...`, the component being a spec the mixture names), the
    Axolotl `type` must match the spec's format, and the field names the lines it writes.
    """

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
    for mixture in seen_components:
        for section in ("datasets", "test_datasets"):
            used_here = {parsed["component"] for s, e in entries if s == section
                         for parsed in [parse_data_path(str(e.get("path", "")))]
                         if parsed and parsed["context"] == mixture}
            missing = spec_components(spec_mod.load(mixture)) - used_here
            if missing:
                problems.append(f"{section}: mixture '{mixture}' also builds {sorted(missing)}, "
                                "which the recipe does not read")
    return problems


def _model_classes(annotation) -> list[type]:
    """The pydantic model classes inside a field annotation (Optional, unions, lists...)."""
    from pydantic import BaseModel  # noqa: PLC0415 - training environment only (Axolotl's schema)

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
        from axolotl.utils.schemas.deprecated import DeprecatedParameters  # noqa: PLC0415 - training environment only
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
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig  # noqa: PLC0415 - training environment only

    zero = {k: (10**8 if v == "auto" else v) for k, v in ds.get("zero_optimization", {}).items()}
    DeepSpeedZeroConfig(**zero)
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu",
                "gradient_accumulation_steps"):
        if ds.get(key, "auto") != "auto":
            raise RecipeError(f"deepspeed {key} is {ds[key]!r}: leave it \"auto\" so the "
                              "recipe's batch settings are the only ones")


def _input_model(cfg: dict):
    from axolotl.utils.config import prepare_plugins  # noqa: PLC0415 - training environment only
    from axolotl.utils.dict import DictDefault  # noqa: PLC0415 - training environment only
    from axolotl.utils.schemas.config import AxolotlInputConfig  # noqa: PLC0415 - training environment only

    if cfg.get("plugins"):
        from axolotl.integrations.config import merge_input_args  # noqa: PLC0415 - training environment only

        prepare_plugins(DictDefault(copy.deepcopy(cfg)))
        return merge_input_args()[1]
    return AxolotlInputConfig


def _key_diff(cfg: dict) -> tuple[list[str], list[str]]:
    return unknown_keys(cfg, _input_model(cfg))


def _axolotl_validate(cfg: dict, mirror: Path, n_gpu: int) -> dict:
    import torch  # noqa: PLC0415 - training environment only
    from axolotl.utils.config import normalize_cfg_datasets, normalize_config, prepare_plugins, validate_config  # noqa: PLC0415 - training environment only
    from axolotl.utils.dict import DictDefault  # noqa: PLC0415 - training environment only

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


def logged_losses(state: dict) -> list[float]:
    return [float(e["loss"]) for e in state.get("log_history", []) if "loss" in e]


def all_finite(values: Iterable[float]) -> bool:
    values = list(values)
    return bool(values) and all(math.isfinite(v) for v in values)


def smoke_generate(model_dir: Path, prompt: str = "What is a black hole?",
                   max_new_tokens: int = 8) -> dict:
    """Load a merged model with transformers and generate from a chat prompt (training env)."""
    import torch  # noqa: PLC0415 - training environment only
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415 - training environment only

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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.recipe_checks",
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
