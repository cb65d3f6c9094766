"""Merge fine-tunes with mergekit, from the merge recipes in `recipes/merges/`.

A merge recipe is plain mergekit YAML whose models are training runs' merged weights
(`outputs/<run>/merged`) and Hugging Face ids (the Instruct model). `merge_recipe()`:

1. reads the recipe and resolves each model: `outputs/...` under `--outputs`, the Instruct
   id to `--base-dir` or the local Hugging Face cache;
2. merges a run's adapter into full weights first when `outputs/<run>/merged` is missing
   (the same 16-bit merge `scripts/convert.py` does, with the run's recipe);
3. checks, before any work: every parent exists; all share one architecture and shape and
   one tokenizer; the weights are what the method needs (linear: they sum to 1; SLERP: two
   models, `t` in [0, 1]; TIES / DARE-TIES: a base model, densities in (0, 1]);
4. runs `mergekit-yaml` (training environment) on the resolved recipe into a staging
   folder, and puts the result in place with `merge.json` (the recipe's and each parent's
   provenance) only when complete. `scripts/convert.py` then takes the folder like a run.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import REPO_ROOT
from .convert import ConvertError, ConvertOptions, is_merge_recipe, load_run, merge_adapter, resolve_base_dir
from .core.errors import UserError
from .core.offline import OFFLINE_ENV
from .core.staging import Staging, check_target, files_under
from .hashing import sha256_file

MERGES_DIR = REPO_ROOT / "recipes" / "merges"
MARKER = "merge.json"
RECIPE_COPY = "merge-recipe.yml"
METHODS = ("linear", "slerp", "ties", "dare_ties")
# config.json fields that must agree for tensors to line up
SHAPE_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "vocab_size", "tie_word_embeddings")
WEIGHT_SUM_TOL = 1e-6


def progress(msg: str) -> None:
    print(f"[merge] {msg}", file=sys.stderr, flush=True)


@dataclass
class Parent:
    """One model of a merge: as the recipe names it, and where its weights are."""

    ref: str
    path: Path
    run_dir: Path | None = None  # the training run it came from, if any
    role: str = "model"  # "model" or "base"
    parameters: dict = field(default_factory=dict)


@dataclass
class MergePlan:
    recipe: Path
    config: dict
    parents: list[Parent]
    out: Path

    @property
    def name(self) -> str:
        return self.recipe.stem

    @property
    def method(self) -> str:
        return self.config["merge_method"]


def read_recipe(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(MERGES_DIR.glob("*.yml")))
        raise UserError(f"{path} does not exist: pass a merge recipe (recipes/merges/: {known})")
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise UserError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not is_merge_recipe(cfg):
        raise UserError(f"{path} is not a merge recipe (mergekit YAML with merge_method and models): training "
                        "recipes go to `accelerate launch -m axolotl.cli.train`")
    if cfg["merge_method"] not in METHODS:
        raise UserError(f"{path}: merge_method {cfg['merge_method']!r} is not one of {', '.join(METHODS)}")
    if "slices" in cfg or not isinstance(cfg.get("models"), list) or not cfg["models"]:
        raise UserError(f"{path}: list the parents under `models:` (one `model:` each)")
    for m in cfg["models"]:
        if not isinstance(m, dict) or not isinstance(m.get("model"), str):
            raise UserError(f"{path}: every entry of `models:` needs a `model:` path or id")
    return cfg


def check_weights(cfg: dict, where: str) -> None:
    """The parameters each method needs, with the numbers it can use."""
    method, models = cfg["merge_method"], cfg["models"]
    params = [m.get("parameters") or {} for m in models]
    if method == "linear":
        weights: list[Any] = [p.get("weight") for p in params]  # as written in the YAML; checked next
        if any(not isinstance(w, (int, float)) or w < 0 for w in weights):
            raise UserError(f"{where}: a linear merge needs a non-negative `weight` for every model")
        if abs(sum(weights) - 1.0) > WEIGHT_SUM_TOL:
            raise UserError(f"{where}: linear weights sum to {sum(weights):g}, not 1: make them the shares "
                            "of each model (e.g. 0.75 and 0.25)")
    elif method == "slerp":
        if len(models) != 2 or not cfg.get("base_model"):
            raise UserError(f"{where}: SLERP interpolates two models: list exactly two and name one as base_model")
        if cfg["base_model"] not in [m["model"] for m in models]:
            raise UserError(f"{where}: SLERP's base_model must be one of its two models")
        t = (cfg.get("parameters") or {}).get("t")
        if not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0:
            raise UserError(f"{where}: SLERP needs parameters.t between 0 (the base model) and 1 (the other)")
    else:  # ties, dare_ties: task vectors against a base
        if not cfg.get("base_model"):
            raise UserError(f"{where}: {method} needs base_model (the model the fine-tunes started from)")
        for m, p in zip(models, params):
            if m["model"] == cfg["base_model"]:
                continue
            d, w = p.get("density"), p.get("weight")
            if not isinstance(d, (int, float)) or not 0.0 < d <= 1.0:
                raise UserError(f"{where}: {m['model']} needs a density in (0, 1] (the share of its changes kept)")
            if not isinstance(w, (int, float)) or w <= 0:
                raise UserError(f"{where}: {m['model']} needs a positive weight")


def _resolve(ref: str, *, outputs: Path, base_dir: Path | None) -> Parent:
    """`outputs/<run>/merged` under `outputs`; another path as written; a hub id to `base_dir`
    or the local Hugging Face cache."""
    if "+" in ref or "@" in ref:
        raise UserError(f"model {ref!r}: '+' and '@' mean LoRA and revision to mergekit; rename the folder")
    parts = Path(ref).parts
    if parts and parts[0] == "outputs":
        path = Path(outputs).joinpath(*parts[1:])
    elif Path(ref).is_absolute() or ref.startswith(".") or Path(ref).exists():
        path = Path(ref)
    elif base_dir is not None:
        return Parent(ref, Path(base_dir))
    else:
        try:
            return Parent(ref, resolve_base_dir(ref))
        except ConvertError:
            raise UserError(f"parent {ref} is neither a folder nor in the local Hugging Face cache: download "
                            "it (`huggingface-cli download ...`) or pass --base-dir") from None
    return Parent(ref, path, run_dir=path.parent if path.name == "merged" else None)


def owned(folder: Path) -> set[str] | None:
    """What an earlier merge wrote in `folder`: everything, when it holds our merge.json."""
    marker = folder / MARKER
    if not marker.is_file():
        return None
    try:
        json.loads(marker.read_text())
    except ValueError:
        return None
    return set(files_under(folder))


def plan(recipe: Path, *, out: Path | None = None, outputs: Path = Path("outputs"),
         base_dir: Path | None = None) -> MergePlan:
    """Read and check a merge recipe; resolve its parents. Raises UserError, before any work."""
    recipe = Path(recipe)
    cfg = read_recipe(recipe)
    check_weights(cfg, str(recipe))
    base_id = cfg.get("base_model")
    parents: list[Parent] = []
    for m in cfg["models"]:
        p = _resolve(m["model"], outputs=outputs, base_dir=base_dir)
        p.parameters = dict(m.get("parameters") or {})
        p.role = "base" if m["model"] == base_id else "model"
        parents.append(p)
    if base_id and base_id not in [p.ref for p in parents]:
        b = _resolve(base_id, outputs=outputs, base_dir=base_dir)
        b.role = "base"
        parents.append(b)
    for p in parents:
        if (p.path / "config.json").is_file():
            continue
        if p.run_dir is not None and (p.run_dir / "adapter_config.json").is_file():
            continue  # merged into full weights first
        hint = (f"train it (its recipe's output_dir is {p.run_dir})" if p.run_dir is not None
                else "download it or pass --base-dir")
        raise UserError(f"parent {p.ref} does not exist ({p.path} has no config.json): {hint}")
    check_parents([p for p in parents if (p.path / "config.json").is_file()])
    out = Path(out) if out is not None else Path(outputs) / "merges" / recipe.stem
    check_target(out, owned, flag="--out", inputs=[str(p.path) for p in parents])
    return MergePlan(recipe=recipe, config=cfg, parents=parents, out=out)


def _tokenizer_identity(folder: Path) -> str | None:
    """A digest of the vocabulary, merges and special tokens (not the file's formatting)."""
    f = folder / "tokenizer.json"
    if not f.is_file():
        return None
    try:
        tok = json.loads(f.read_text(encoding="utf-8"))
    except ValueError:
        raise UserError(f"{f} is not valid JSON; copy the tokenizer again") from None
    model = tok.get("model") or {}
    key = {"vocab": model.get("vocab"), "merges": model.get("merges"),
           "added": sorted((t.get("id"), t.get("content")) for t in tok.get("added_tokens") or [])}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def check_parents(parents: list[Parent]) -> None:
    """One architecture, one shape, one tokenizer."""
    first = None
    for p in parents:
        try:
            cfg = json.loads((p.path / "config.json").read_text())
        except ValueError:
            raise UserError(f"parent {p.ref}: {p.path / 'config.json'} is not valid JSON; copy it again") from None
        sig = {"architectures": cfg.get("architectures"), **{k: cfg.get(k) for k in SHAPE_KEYS}}
        tok = _tokenizer_identity(p.path)
        if tok is None:
            raise UserError(f"parent {p.ref} has no tokenizer.json: merge from folders that carry their tokenizer")
        if first is None:
            first = (p, sig, tok)
            continue
        p0, sig0, tok0 = first
        diff = [k for k in sig if sig[k] != sig0[k]]
        if diff:
            k = diff[0]
            raise UserError(f"parents differ in {k}: {p0.ref} has {sig0[k]}, {p.ref} has {sig[k]}; merge models "
                            "fine-tuned from the same base")
        if tok != tok0:
            raise UserError(f"parents {p0.ref} and {p.ref} have different tokenizers: merge models that share one")


def ensure_merged(p: Parent, *, train_python: Path, base_dir: Path | None) -> bool:
    """A run's adapter merged into full weights at `<run>/merged` (16-bit, unquantized base);
    True when it had to be merged now."""
    if (p.path / "config.json").is_file() or p.run_dir is None:
        return False
    try:
        run = load_run(p.run_dir)
        if run.recipe is None:
            candidate = REPO_ROOT / "recipes" / f"{p.run_dir.name}.yml"
            if candidate.is_file():
                run = load_run(candidate, output_dir=p.run_dir)
        progress(f"merging the adapter of {p.run_dir} into full weights first")
        merge_adapter(run, ConvertOptions(base_dir=base_dir, train_python=train_python), log=p.run_dir / "merge.log")
    except ConvertError as e:
        raise UserError(str(e)) from None
    return True


def parent_record(p: Parent) -> dict:
    rec: dict = {"ref": p.ref, "role": p.role, "path": str(p.path), "parameters": p.parameters}
    for name in ("model.safetensors", "model.safetensors.index.json"):
        if (p.path / name).is_file():
            rec["weights_sha256"] = sha256_file(p.path / name)
            break
    if p.run_dir is not None:
        rec["run"] = p.run_dir.name
        for cand in (p.run_dir / "recipe.yml", REPO_ROOT / "recipes" / f"{p.run_dir.name}.yml"):
            if cand.is_file():
                rec["recipe"] = str(cand)
                rec["recipe_sha256"] = sha256_file(cand)
                break
        if (p.run_dir / "adapter_model.safetensors").is_file():
            rec["adapter_sha256"] = sha256_file(p.run_dir / "adapter_model.safetensors")
    return rec


def resolved_config(mp: MergePlan) -> dict:
    """The recipe with every model reference replaced by its local folder."""
    where = {p.ref: str(p.path.resolve()) for p in mp.parents}
    cfg = json.loads(json.dumps(mp.config))
    for m in cfg["models"]:
        m["model"] = where[m["model"]]
    if cfg.get("base_model"):
        cfg["base_model"] = where[cfg["base_model"]]
    return cfg


def merge_recipe(mp: MergePlan, *, train_python: Path = REPO_ROOT / ".venv-train" / "bin" / "python",
                 base_dir: Path | None = None, seed: int = 0) -> Path:
    """Run the planned merge; returns the output folder."""
    merged_now = [ensure_merged(p, train_python=train_python, base_dir=base_dir) for p in mp.parents]
    if any(merged_now):  # plan() checked the parents that had weights already
        check_parents(mp.parents)
    stage = Staging(mp.out, owned, flag="--out", checked=True)
    try:
        resolved = stage.path / ".mergekit-config.yml"
        resolved.write_text(yaml.safe_dump(resolved_config(mp), sort_keys=False))
        weights = stage.path / "model"
        mergekit = Path(train_python).parent / "mergekit-yaml"
        cmd = [str(mergekit), str(resolved), str(weights), "--copy-tokenizer", "--random-seed", str(seed),
               "--quiet"]
        log = stage.path / "mergekit.log"
        progress(f"{mp.method} merge of {', '.join(p.ref for p in mp.parents)} -> {mp.out}")
        t0 = time.perf_counter()
        with open(log, "w", encoding="utf-8") as f:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT,
                                  env={**os.environ, **OFFLINE_ENV})
        if proc.returncode != 0 or not (weights / "config.json").is_file():
            lines = log.read_text(errors="replace").strip().splitlines()
            raise UserError(f"mergekit failed (exit {proc.returncode}): {(lines[-1] if lines else '')[:200]}; "
                            "nothing was written")
        for item in weights.iterdir():  # the merged model's files at the top of the folder
            item.rename(stage.path / item.name)
        weights.rmdir()
        resolved.unlink()
        (stage.path / RECIPE_COPY).write_text(mp.recipe.read_text(encoding="utf-8"), encoding="utf-8")
        record = {
            "recipe": str(mp.recipe), "recipe_name": mp.name, "recipe_sha256": sha256_file(mp.recipe),
            "merge_method": mp.method, "random_seed": seed, "seconds": round(time.perf_counter() - t0, 1),
            "parents": [parent_record(p) for p in mp.parents],
        }
        (stage.path / MARKER).write_text(json.dumps(record, indent=2) + "\n")
        stage.commit()
    except BaseException:
        stage.abort()
        raise
    progress(f"done in {record['seconds']} s: {mp.out} (convert with scripts/convert.py {mp.out})")
    return mp.out
