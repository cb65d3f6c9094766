"""Merge -> GGUF -> quantize -> GGUF LoRA, with llama.cpp's own converter and quantizer.

Every step is a call of a pinned llama.cpp tool (see `qwenphysics.toolchain`):
* `axolotl merge-lora --merge-method=legacy` merges the adapter into the base in 16/32-bit.
  (Axolotl's default "memory-efficient" merge, for QLoRA recipes, adds the adapter to
  NF4-round-tripped base weights. We merge into the unquantized base instead, so that the
  merged GGUF equals the 16-bit base GGUF + the GGUF LoRA, as the tests check.)
* `convert_hf_to_gguf.py` writes the F16 (or BF16) GGUF, with provenance and the seed's
  sampling defaults in the GGUF metadata;
* `llama-quantize` makes each quantized type, optionally with an importance matrix from
  `llama-imatrix` calibrated on the run's own validation split;
* `convert_lora_to_gguf.py` turns the adapter into a GGUF LoRA for the base model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import orjson
import yaml

from . import REPO_ROOT
from .hashing import sha256_file
from .model_card import write_model_card, write_modelfile
from .toolchain import Toolchain, find_toolchain

DEFAULT_QUANTS = ("Q4_K_M", "Q8_0")
# bits per weight of each type, for disk-space estimates (roughly; embeddings differ).
BITS = {"F32": 32, "F16": 16, "BF16": 16, "Q8_0": 8.5, "Q6_K": 6.6, "Q5_K_M": 5.7, "Q5_K_S": 5.5,
        "Q4_K_M": 4.9, "Q4_K_S": 4.6, "Q4_0": 4.5, "IQ4_XS": 4.3, "Q3_K_M": 3.9, "Q2_K": 3.4}
# The seed's chat defaults, written into every GGUF (llama.cpp reads general.sampling.*).
SAMPLING = {"general.sampling.temp": 0.1, "general.sampling.top_p": 0.9}


MERGE_MARKER = "merge.json"  # written by qwenphysics.merge next to a merged model


def is_merge_recipe(cfg) -> bool:
    """A mergekit recipe (recipes/merges/), not an Axolotl one (which may set its own
    `merge_method`, for `axolotl merge-lora`)."""
    return (isinstance(cfg, dict) and "merge_method" in cfg and ("models" in cfg or "slices" in cfg)
            and "datasets" not in cfg and "adapter" not in cfg)


class ConvertError(Exception):
    """One-line, actionable failure of a conversion step."""


def _run(cmd: list, *, env: dict | None = None, log: Path | None = None, step: str) -> None:
    cmd = [str(c) for c in cmd]
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"\n$ {' '.join(cmd)}\n")
            f.flush()
            p = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
        if p.returncode != 0:
            tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] or [""]
            raise ConvertError(f"{step} failed (exit {p.returncode}): {tail[0][:200]} — full log: {log}")
    else:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
            raise ConvertError(f"{step} failed (exit {done.returncode}): {last[0][:300]}")


def _into(tmp: Path, out: Path, step) -> Path:
    """Run `step()` (which writes `tmp`), then rename `tmp` to `out`; `tmp` never outlives a failure."""
    try:
        step()
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def check_safetensors(path: Path) -> None:
    """A safetensors file whose header parses and whose tensors' bytes are all there."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if size < 8 or n <= 0 or 8 + n > size:
                raise ValueError("header cut off")
            header = json.loads(f.read(n))
        ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
        if 8 + n + max(ends, default=0) > size:
            raise ValueError(f"{8 + n + max(ends) - size} bytes of tensor data missing")
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise ConvertError(f"{path} is truncated or not a safetensors file ({str(e)[:80]}): copy it again "
                           "or retrain") from None


def hf_to_gguf(model_dir: Path, out: Path, *, outtype: str = "f16", python: Path | None = None,
               toolchain: Toolchain | None = None, metadata: dict | None = None, log: Path | None = None) -> Path:
    """HF model folder -> GGUF with llama.cpp's converter (run by the training env's Python)."""
    tc = toolchain or find_toolchain()
    python = Path(python or REPO_ROOT / ".venv-train" / "bin" / "python")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    cmd = [python, tc.convert_hf, model_dir, "--outfile", tmp, "--outtype", outtype]
    meta_file = None
    if metadata:
        meta_file = out.with_name(out.name + ".metadata.json")
        meta_file.write_text(json.dumps(metadata, indent=2))
        cmd += ["--metadata", meta_file]
    try:
        _into(tmp, out, lambda: _run(cmd, env=tc.env(), log=log, step=f"convert {model_dir} to GGUF"))
    finally:
        if meta_file is not None:
            meta_file.unlink(missing_ok=True)
    return out


def lora_to_gguf(adapter_dir: Path, base_dir: Path, out: Path, *, outtype: str = "f16", python: Path | None = None,
                 toolchain: Toolchain | None = None, log: Path | None = None) -> Path:
    tc = toolchain or find_toolchain()
    python = Path(python or REPO_ROOT / ".venv-train" / "bin" / "python")
    tmp = Path(out).with_name(Path(out).name + ".partial")
    return _into(tmp, Path(out), lambda: _run(
        [python, tc.convert_lora, adapter_dir, "--base", base_dir, "--outfile", tmp, "--outtype", outtype],
        env=tc.env(), log=log, step="convert the LoRA adapter to GGUF"))


def quantize(src: Path, out: Path, qtype: str, *, imatrix: Path | None = None, threads: int | None = None,
             toolchain: Toolchain | None = None, log: Path | None = None) -> Path:
    tc = toolchain or find_toolchain()
    tmp = Path(out).with_name(Path(out).name + ".partial")
    cmd: list[str | Path] = [tc.bin("llama-quantize")]
    if imatrix is not None:
        cmd += ["--imatrix", imatrix]
    cmd += [src, tmp, qtype, str(threads or os.cpu_count() or 1)]
    return _into(tmp, Path(out), lambda: _run(cmd, log=log, step=f"quantize to {qtype}"))


def compute_imatrix(model: Path, calib_text: Path, out: Path, *, ctx: int = 512, chunks: int = 64,
                    threads: int | None = None, toolchain: Toolchain | None = None, log: Path | None = None) -> Path:
    tc = toolchain or find_toolchain()
    tmp = Path(out).with_name(Path(out).name + ".partial.gguf")
    cmd = [tc.bin("llama-imatrix"), "-m", model, "-f", calib_text, "-o", tmp, "-c", str(ctx),
           "--chunks", str(chunks), "-t", str(threads or os.cpu_count() or 1), "--no-ppl"]
    return _into(tmp, Path(out), lambda: _run(cmd, log=log, step="compute the importance matrix"))


# ---------------------------------------------------------------------------- runs


@dataclass
class Run:
    """What the convert script needs to know about an Axolotl run."""

    name: str
    output_dir: Path
    base_model: str
    recipe: Path | None = None
    recipe_cfg: dict = field(default_factory=dict)
    data_dirs: list[Path] = field(default_factory=list)
    merge: dict | None = None  # a mergekit merge's merge.json: full weights, no adapter

    @property
    def adapter_config(self) -> Path:
        return self.output_dir / "adapter_config.json"


def load_run(target: Path, *, output_dir: Path | None = None) -> Run:
    """`target` is a recipe (.yml) or an Axolotl output dir holding the adapter."""

    target = Path(target)
    if not target.exists():
        raise ConvertError(f"{target} does not exist: pass a recipe .yml or a training output folder")
    if target.is_dir() and (target / MERGE_MARKER).is_file():
        return load_merge(target)
    cfg: dict = {}
    recipe = None
    if target.is_file():
        recipe = target
        try:
            cfg = yaml.safe_load(target.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConvertError(f"{target} is not valid YAML: {str(e).splitlines()[0]}") from None
        if is_merge_recipe(cfg):
            merged_out = Path(output_dir or Path("outputs") / "merges" / target.stem)
            if not (merged_out / MERGE_MARKER).is_file():
                raise ConvertError(f"no merge in {merged_out}: run `python scripts/merge.py {target}` first, "
                                   "or pass the merge's folder")
            return load_merge(merged_out)
        out = Path(output_dir or cfg.get("output_dir") or "")
        if not str(out):
            raise ConvertError(f"{target} sets no output_dir: pass --output-dir")
        if not out.is_absolute():
            out = (Path.cwd() / out)
    else:
        out = target
        for cand in (out / "recipe.yml", out / "recipe.cpu.yml"):
            if cand.exists():
                recipe = cand
                cfg = yaml.safe_load(cand.read_text()) or {}
                break
    adapter_cfg = out / "adapter_config.json"
    if not adapter_cfg.exists():
        raise ConvertError(f"no LoRA adapter in {out} (adapter_config.json missing): train first, or point at the "
                           "run's output_dir")
    try:
        adapter = json.loads(adapter_cfg.read_text())
        if not isinstance(adapter, dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError) as e:
        raise ConvertError(f"{adapter_cfg} is not a valid adapter config ({str(e).splitlines()[0][:80]}): "
                           "restore it from the run or train again") from None
    base = cfg.get("base_model") or adapter.get("base_model_name_or_path")
    if not base:
        raise ConvertError(f"cannot tell the base model of {out}: adapter_config.json names none and no recipe given")
    a_base = adapter.get("base_model_name_or_path")
    if cfg.get("base_model") and a_base and not _same_model(cfg["base_model"], a_base):
        raise ConvertError(f"base mismatch: the recipe says {cfg['base_model']} but the adapter in {out} was trained "
                           f"on {a_base}; pass the recipe that produced this run")
    data_dirs = _data_dirs(cfg)
    name = (recipe.stem.replace(".cpu", "") if recipe else out.name)
    return Run(name=name, output_dir=out, base_model=str(base), recipe=recipe, recipe_cfg=cfg, data_dirs=data_dirs)


def load_merge(folder: Path) -> Run:
    """A folder written by `scripts/merge.py`: full weights and merge.json."""
    try:
        rec = json.loads((folder / MERGE_MARKER).read_text())
        refs = [(p["ref"], p.get("role")) for p in rec["parents"]]
        base = (next((r for r, role in refs if role == "base"), None)
                or next((r for r, _ in refs if not r.startswith(("outputs/", "/", "."))), refs[0][0]))
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise ConvertError(f"{folder / MERGE_MARKER} is damaged ({str(e)[:60]}): run the merge again") from None
    if not (folder / "config.json").is_file():
        raise ConvertError(f"{folder} holds no merged model (config.json missing): run the merge again")
    recipe = folder / "merge-recipe.yml"
    data_dirs: list[Path] = []
    for parent in rec["parents"]:
        if parent.get("recipe") and Path(parent["recipe"]).is_file():
            for d in load_run_data_dirs(Path(parent["recipe"])):
                if d not in data_dirs:
                    data_dirs.append(d)
    return Run(name=rec.get("recipe_name") or folder.name, output_dir=folder, base_model=str(base),
               recipe=recipe if recipe.is_file() else None, data_dirs=data_dirs, merge=rec)


def load_run_data_dirs(recipe: Path) -> list[Path]:
    """The dataset folders (with a manifest) a training recipe reads."""

    try:
        cfg = yaml.safe_load(recipe.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    return _data_dirs(cfg)


def _data_dirs(cfg: dict) -> list[Path]:
    data_dirs: list[Path] = []
    for ds in (cfg.get("test_datasets") or []) + (cfg.get("datasets") or []):
        p = Path(str(ds.get("path", "")))
        d = p.parent if p.suffix in (".jsonl", ".json") else p
        if d not in data_dirs and (d / "manifest.json").exists():
            data_dirs.append(d)
        elif d not in data_dirs and d.parent.joinpath("manifest.json").exists():
            data_dirs.append(d.parent)
    return data_dirs


def _same_model(a: str, b: str) -> bool:
    return Path(a).name.lower() == Path(b).name.lower() or a.rstrip("/") == b.rstrip("/")


def resolve_base_dir(base_model: str) -> Path:
    """A local HF folder for the base model: a path, or a hub id found in the local HF cache."""
    p = Path(base_model)
    if p.is_dir() and (p / "config.json").exists():
        return p
    try:
        from huggingface_hub import snapshot_download  # noqa: PLC0415 - only when a base model must be fetched

        return Path(snapshot_download(base_model, local_files_only=True))
    except Exception:
        raise ConvertError(f"base model {base_model} is not available locally: download it first "
                           f"(`huggingface-cli download {base_model}`) or pass --base-dir") from None


def provenance(run: Run) -> dict:
    """GGUF metadata override: names, licence, base model, datasets and hashes of the inputs."""
    if run.merge is not None:
        return merge_provenance(run)
    recipe_sha = sha256_file(run.recipe) if run.recipe else "unknown"
    manifests = [d / "manifest.json" for d in run.data_dirs]
    data_sha = [sha256_file(m) for m in manifests]
    tags = ["qwenphysics", "physics", "arxiv", f"recipe:{run.name}", f"recipe-sha256:{recipe_sha}"]
    tags += [f"dataset-manifest-sha256:{s}" for s in data_sha]
    base_name = run.base_model.split("/")[-1]
    meta = {
        "general.name": f"QwenPhysics {run.name}",
        "general.finetune": run.name,
        "general.description": (f"QwenPhysics fine-tune of {run.base_model} with recipe {run.name} "
                                f"(sha256 {recipe_sha[:16]}); datasets: "
                                + ", ".join(f"{d.name} (manifest sha256 {s[:16]})"
                                            for d, s in zip(run.data_dirs, data_sha))),
        "general.tags": tags,
        "general.base_models": [{"name": base_name, "organization": run.base_model.split("/")[0]
                                 if "/" in run.base_model else "local", "repo_url":
                                 f"https://huggingface.co/{run.base_model}" if "/" in run.base_model else ""}],
        "general.datasets": [{"name": d.name} for d in run.data_dirs],
        **SAMPLING,
    }
    if "qwen2.5-3b" in run.base_model.lower():
        meta["general.license.name"] = "qwen-research"
    return meta


def merge_provenance(run: Run) -> dict:
    """GGUF metadata of a merge: the merge recipe, its method, and each parent (run, recipe,
    weights) by name and hash."""
    rec = run.merge or {}
    parents = rec.get("parents", [])
    tags = ["qwenphysics", "physics", "arxiv", "merge", f"recipe:{run.name}",
            f"recipe-sha256:{rec.get('recipe_sha256', 'unknown')}", f"merge-method:{rec.get('merge_method')}"]
    for p in parents:
        tags.append(f"parent:{p.get('run') or p['ref']}")
        if p.get("recipe_sha256"):
            tags.append(f"parent-recipe-sha256:{p.get('run')}:{p['recipe_sha256']}")
        if p.get("weights_sha256"):
            tags.append(f"parent-weights-sha256:{p.get('run') or p['ref']}:{p['weights_sha256']}")
    tags += [f"dataset-manifest-sha256:{sha256_file(d / 'manifest.json')}" for d in run.data_dirs]

    def model_entry(p: dict) -> dict:
        ref = p["ref"]
        if p.get("run"):
            return {"name": p["run"], "organization": "local", "repo_url": ""}
        return {"name": ref.split("/")[-1], "organization": ref.split("/")[0] if "/" in ref else "local",
                "repo_url": f"https://huggingface.co/{ref}" if "/" in ref and not Path(ref).exists() else ""}

    shares = ", ".join(f"{p.get('run') or p['ref']} {json.dumps(p.get('parameters') or {}, sort_keys=True)}"
                       for p in parents)
    meta = {
        "general.name": f"QwenPhysics {run.name}",
        "general.finetune": run.name,
        "general.description": (f"QwenPhysics {rec.get('merge_method')} merge with recipe {run.name} "
                                f"(sha256 {str(rec.get('recipe_sha256', ''))[:16]}) of: {shares}"),
        "general.tags": tags,
        "general.base_models": [model_entry(p) for p in parents],
        "general.datasets": [{"name": d.name} for d in run.data_dirs],
        **SAMPLING,
    }
    if "qwen2.5-3b" in run.base_model.lower():
        meta["general.license.name"] = "qwen-research"
    return meta


def check_disk(out_dir: Path, params: int, quants: list[str], extra_f16: bool) -> None:
    need = params * 16 / 8 * (2 if extra_f16 else 1) + sum(params * BITS.get(q, 8) / 8 for q in quants)
    need += params * 2  # the merged HF checkpoint
    out_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out_dir).free
    if free < need * 1.05:
        raise ConvertError(f"not enough disk in {out_dir}: about {need / 1e9:.1f} GB needed, {free / 1e9:.1f} GB free; "
                           "free space or pass --out elsewhere")


def count_params(model_dir: Path) -> int:
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    h, i, layers, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    kv = h * cfg.get("num_key_value_heads", cfg["num_attention_heads"]) // cfg["num_attention_heads"]
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * i
    return v * h * (1 if cfg.get("tie_word_embeddings") else 2) + layers * per_layer


def calibration_text(data_dirs: list[Path], out: Path, max_chars: int = 400_000) -> Path | None:
    """Validation-split text of the run's own data, for the importance matrix."""

    parts, total = [], 0
    for d in data_dirs:
        f = d / "validation.jsonl"
        if not f.exists():
            continue
        for line in f.open("rb"):
            ex = orjson.loads(line)
            text = ex.get("text") or "\n".join(m["content"] for m in ex.get("messages", []))
            parts.append(text)
            total += len(text)
            if total >= max_chars:
                break
    if not parts:
        return None
    out.write_text("\n\n".join(parts), encoding="utf-8")
    return out


def progress(msg: str) -> None:
    print(f"[convert] {msg}", file=sys.stderr, flush=True)


def timed(fn, *a, **kw):
    t0 = time.perf_counter()
    r = fn(*a, **kw)
    return r, time.perf_counter() - t0


# ---------------------------------------------------------------------------- the whole job


@dataclass
class ConvertOptions:
    out_root: Path = REPO_ROOT / "models"
    quants: tuple[str, ...] = DEFAULT_QUANTS
    outtype: str = "f16"
    imatrix: bool = False
    lora: bool = True
    base_gguf: bool = False  # also convert the base model, to pair with the GGUF LoRA
    base_dir: Path | None = None
    threads: int | None = None
    train_python: Path = REPO_ROOT / ".venv-train" / "bin" / "python"
    env: dict = field(default_factory=dict)


def _fingerprint(*paths: Path, extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for p in paths:
        st = Path(p).stat()
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


class Stamps:
    """Which step outputs are current: step -> fingerprint of its inputs."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {}

    def current(self, step: str, fp: str, *outputs: Path) -> bool:
        return self.data.get(step) == fp and all(Path(o).exists() for o in outputs)

    def set(self, step: str, fp: str) -> None:
        self.data[step] = fp
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2))
        tmp.replace(self.path)


def check_out_dir(out: Path) -> None:
    """`models/<run>/` is new, empty, or an earlier conversion's (it keeps `.stamps.json`)."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ConvertError(f"{out} is not a folder: pass --out elsewhere")
    if out.is_dir() and any(out.iterdir()) and not (out / ".stamps.json").exists():
        raise ConvertError(f"{out} holds files convert did not write: move them, or pass --out elsewhere; "
                           "nothing was changed")


def _local_base_config(run: Run, opts: ConvertOptions) -> Path | None:
    for cand in (opts.base_dir, Path(run.base_model)):
        if cand is not None and (Path(cand) / "config.json").is_file():
            return Path(cand)
    return None


def merge_adapter(run: Run, opts: ConvertOptions, *, log: Path | None = None) -> Path:
    """The run's adapter merged into its unquantized base: `<output_dir>/merged` (Axolotl's
    legacy merge; its default for QLoRA would add the adapter to NF4-rounded weights)."""
    if run.recipe is None:
        raise ConvertError(f"merging needs the run's recipe: pass --recipe (no recipe.yml in {run.output_dir})")
    merged = run.output_dir / "merged"
    env = {**os.environ, "AXOLOTL_DO_NOT_TRACK": "1", "DO_NOT_TRACK": "1", "WANDB_MODE": "disabled", **opts.env}
    _run([opts.train_python, "-m", "axolotl.cli.merge_lora", run.recipe, f"--lora-model-dir={run.output_dir}",
          f"--output-dir={run.output_dir}", "--merge-method=legacy"], env=env, log=log,
         step="merge the adapter (axolotl merge-lora)")
    if not (merged / "config.json").exists():
        raise ConvertError(f"axolotl merge-lora wrote no model to {merged}" + (f"; see {log}" if log else ""))
    return merged


def convert_run(run: Run, opts: ConvertOptions) -> dict:
    """Run every step whose outputs are missing or stale; return what was produced."""

    tc = find_toolchain()
    out = Path(opts.out_root) / run.name
    adapter_files = [] if run.merge is not None else sorted(run.output_dir.glob("adapter_model.*"))
    if run.merge is None and not adapter_files:
        raise ConvertError(f"no adapter weights (adapter_model.safetensors) in {run.output_dir}")
    for f in adapter_files:
        if f.suffix == ".safetensors":
            check_safetensors(f)
    if run.merge is not None:
        for f in sorted(run.output_dir.glob("*.safetensors")):
            check_safetensors(f)
        opts = replace(opts, lora=False)  # full weights: there is no adapter to convert
    check_out_dir(out)
    base_cfg = run.output_dir if run.merge is not None else _local_base_config(run, opts)
    if base_cfg is not None:  # the disk check before the merge, when the base's shape is known here
        check_disk(out, count_params(base_cfg),
                   [q for q in opts.quants if not (out / f"{run.name}-{q}.gguf").exists()], opts.base_gguf)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "convert.log"
    stamps = Stamps(out / ".stamps.json")
    produced: dict = {"run": run.name, "dir": str(out), "files": {}, "timings": {}}

    # 1. merge in 16/32-bit with Axolotl (reloads the base unquantized)
    if run.merge is not None:
        merged = run.output_dir
        progress(f"1/5 {run.name} is a {run.merge.get('merge_method')} merge: full weights, nothing to merge")
    else:
        merged = run.output_dir / "merged"
        fp_merge = _fingerprint(*adapter_files, extra=str(run.recipe))
        if not stamps.current("merge", fp_merge, merged / "config.json"):
            progress(f"1/5 merging the adapter into {run.base_model} (axolotl merge-lora)")
            _, produced["timings"]["merge_s"] = timed(merge_adapter, run, opts, log=log)
            stamps.set("merge", fp_merge)
        else:
            progress("1/5 merged model is current")
    params = count_params(merged)
    check_disk(out, params, [q for q in opts.quants if not (out / f"{run.name}-{q}.gguf").exists()], opts.base_gguf)

    # 2. merged -> F16/BF16 GGUF, with provenance
    f16 = out / f"{run.name}-{opts.outtype.upper()}.gguf"
    fp_f16 = _fingerprint(merged / "config.json", *sorted(merged.glob("*.safetensors")), extra=opts.outtype)
    meta = provenance(run)
    if not stamps.current("gguf", fp_f16, f16):
        progress(f"2/5 converting to GGUF {opts.outtype.upper()} -> {f16}")
        _, produced["timings"]["convert_s"] = timed(hf_to_gguf, merged, f16, outtype=opts.outtype,
                                                    python=opts.train_python, toolchain=tc, metadata=meta, log=log)
        stamps.set("gguf", fp_f16)
    else:
        progress(f"2/5 {f16.name} is current")
    produced["files"][f16.name] = f16

    # 3. importance matrix from the run's own validation split (physics-aware quantization)
    imat = None
    if opts.imatrix:
        imat = out / "imatrix.gguf"
        fp_im = _fingerprint(f16)
        if not stamps.current("imatrix", fp_im, imat):
            calib = calibration_text(run.data_dirs, out / "calibration.txt")
            if calib is None:
                raise ConvertError("--imatrix needs the run's validation split (data/<context>/validation.jsonl); "
                                   "build the dataset or drop --imatrix")
            progress("3/5 computing the importance matrix on the validation split")
            compute_imatrix(f16, calib, imat, threads=opts.threads, toolchain=tc, log=log)
            stamps.set("imatrix", fp_im)
        produced["files"][imat.name] = imat
    else:
        progress("3/5 no importance matrix (pass --imatrix to calibrate on the validation split)")

    # 4. quantize
    for q in opts.quants:
        qf = out / f"{run.name}-{q}.gguf"
        fp_q = _fingerprint(f16, *( [imat] if imat else []), extra=q)
        if not stamps.current(f"quant:{q}", fp_q, qf):
            progress(f"4/5 quantizing to {q}{' with the importance matrix' if imat else ''}")
            _, produced["timings"][f"quantize_{q}_s"] = timed(quantize, f16, qf, q, imatrix=imat,
                                                              threads=opts.threads, toolchain=tc, log=log)
            stamps.set(f"quant:{q}", fp_q)
        else:
            progress(f"4/5 {qf.name} is current")
        produced["files"][qf.name] = qf

    # 5. GGUF LoRA (+ optionally the base model's GGUF to apply it to)
    if opts.lora or opts.base_gguf:
        base_dir = Path(opts.base_dir) if opts.base_dir else resolve_base_dir(run.base_model)
        if opts.lora:
            lf = out / f"{run.name}-lora-{opts.outtype.upper()}.gguf"
            fp_l = _fingerprint(*adapter_files, extra=str(base_dir))
            if not stamps.current("lora", fp_l, lf):
                progress(f"5/5 converting the adapter to a GGUF LoRA against {base_dir}")
                lora_to_gguf(run.output_dir, base_dir, lf, outtype=opts.outtype, python=opts.train_python,
                             toolchain=tc, log=log)
                stamps.set("lora", fp_l)
            produced["files"][lf.name] = lf
        if opts.base_gguf:
            bf = out / f"base-{opts.outtype.upper()}.gguf"
            fp_b = _fingerprint(base_dir / "config.json", extra=opts.outtype)
            if not stamps.current("base", fp_b, bf):
                progress(f"5/5 converting the base model to GGUF -> {bf.name}")
                hf_to_gguf(base_dir, bf, outtype=opts.outtype, python=opts.train_python, toolchain=tc, log=log)
                stamps.set("base", fp_b)
            produced["files"][bf.name] = bf

    # checksums, model card, Ollama Modelfile
    sums = {}
    for name, path in sorted(produced["files"].items()):
        sums[name] = sha256_file(path)
    (out / "SHA256SUMS").write_text("".join(f"{s}  {n}\n" for n, s in sums.items()))
    write_model_card(out / "README.md", run, sums, meta)
    quant_default = next((n for n in sums if "Q4_K_M" in n), f16.name)
    write_modelfile(out / "Modelfile", quant_default)
    produced["sha256"] = sums
    produced["files"] = {k: str(v) for k, v in produced["files"].items()}
    (out / "convert.json").write_text(json.dumps(produced, indent=2))
    progress(f"done: {out}")
    return produced
