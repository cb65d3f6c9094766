"""Benchmark tasks through EleutherAI's lm-evaluation-harness, offline.

The harness runs in whichever Python environment has it (``--lm-eval-python``, by default
the training environment), as a subprocess. Two kinds of task:

* the project's own ``qwenphysics_title_choice`` (:mod:`.mc_task`), written from the
  dataset's held-out papers, scored by log-likelihood against the GGUF through llama.cpp
  (llama-cpp-python's server, started for the run) or against a Hugging Face model folder;
* hub tasks (MMLU's physics subjects, SciQ), which run only when their data is already in
  the local Hugging Face cache; otherwise they are recorded as skipped with the reason.

Network access is switched off for the subprocess. A run that fails is recorded as
``failed: ...`` with the harness's last error line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from qwenphysics import REPO_ROOT
from qwenphysics.core.offline import OFFLINE_ENV

from . import mc_task

DEFAULT_TASKS = (
    "qwenphysics_title_choice",
    "mmlu_college_physics",
    "mmlu_high_school_physics",
    "mmlu_conceptual_physics",
    "mmlu_astronomy",
    "sciq",
)
# where each task's data may come from: (dataset repo, config or None)
TASK_DATA: dict[str, list[tuple[str, str | None]]] = {
    **{
        f"mmlu_{subject}": [("cais/mmlu", subject), ("hails/mmlu_no_train", subject)]
        for subject in ("college_physics", "high_school_physics", "conceptual_physics", "astronomy")
    },
    "sciq": [("allenai/sciq", None), ("sciq", None)],
}

_RUNNER = r"""
import json, sys
import lm_eval
args = json.loads(sys.argv[1])
extra = {"apply_chat_template": True} if args["chat"] else {}
res = lm_eval.simple_evaluate(model=args["model_type"], model_args=args["model_args"],
                              tasks=args["tasks"], limit=args["limit"], log_samples=False, **extra)
out = {"results": res.get("results", {}), "versions": res.get("versions", {}),
       "lm_eval_version": getattr(lm_eval, "__version__", None)}
with open(args["out"], "w") as fh:
    json.dump(out, fh, default=str)
"""


TRAIN_PYTHON = REPO_ROOT / ".venv-train" / "bin" / "python"
CORE_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
LOCAL_TASKS = (mc_task.TASK,)

# Runs the project's tasks with log_samples, so that every item's choice can be compared
# across backends. `qwenphysics-llama-cpp` scores log-likelihoods on the GGUF with llama.cpp,
# in-process, through the helper `qwenphysics.evaluation.llama_scorer` (run by the core
# environment's Python, where llama-cpp-python is): the OpenAI-style servers cannot (see the
# helper's docstring).
_LOCAL_RUNNER = r"""
import json, subprocess, sys
import lm_eval
import lm_eval.models  # the harness's own models (hf, local-completions, ...), registered first
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.tasks import TaskManager


@register_model("qwenphysics-llama-cpp")
class LlamaCppLM(LM):
    def __init__(self, gguf, python, n_ctx=2048, **kwargs):
        super().__init__()
        self.proc = subprocess.Popen([python, "-m", "qwenphysics.evaluation.llama_scorer", "--gguf", gguf,
                                      "--n-ctx", str(n_ctx)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)

    def loglikelihood(self, requests, disable_tqdm=False):
        out = []
        for req in requests:
            context, continuation = req.args
            self.proc.stdin.write(json.dumps({"context": context, "continuation": continuation}) + "\n")
            ans = json.loads(self.proc.stdout.readline() or '{"error": "the llama.cpp scorer exited"}')
            if "error" in ans:
                raise RuntimeError(ans["error"])
            out.append((ans["loglikelihood"], ans["greedy"]))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        raise NotImplementedError("qwenphysics-llama-cpp scores continuations only")

    def generate_until(self, requests, disable_tqdm=False):
        raise NotImplementedError("qwenphysics-llama-cpp scores continuations only")


args = json.loads(sys.argv[1])
tm = TaskManager(include_path=args["include_path"], include_defaults=False)
res = lm_eval.simple_evaluate(model=args["model_type"], model_args=args["model_args"], tasks=args["tasks"],
                              task_manager=tm, limit=args["limit"], log_samples=True, bootstrap_iters=0)
per_item = {}
for task, samples in res.get("samples", {}).items():
    rows = []
    for s in sorted(samples, key=lambda s: s["doc_id"]):
        lls = [float(r[0] if isinstance(r, (list, tuple)) else r) for r in s["filtered_resps"]]
        rows.append({"doc_id": s["doc_id"], "loglikelihoods": lls,
                     "choice": max(range(len(lls)), key=lls.__getitem__), "target": s.get("target")})
    per_item[task] = rows
out = {"results": res.get("results", {}), "versions": res.get("versions", {}), "items": per_item,
       "lm_eval_version": getattr(lm_eval, "__version__", None)}
with open(args["out"], "w") as fh:
    json.dump(out, fh, default=str)
"""


def default_python() -> str:
    """The training environment's Python when it exists (it has lm-eval), else this one."""
    return str(TRAIN_PYTHON) if TRAIN_PYTHON.exists() else sys.executable


def run_local_task(data_dir: Path, *, gguf: Path | None = None, hf_model: Path | None = None,
                   python: Path | str = TRAIN_PYTHON, core_python: Path | str = CORE_PYTHON,
                   limit: int | None = None, timeout: float = 3600, work: Path | None = None) -> dict:
    """The title-choice task written from `data_dir`'s test split and scored by lm-eval (run by
    `python`) on the GGUF through llama.cpp (`core_python` runs llama-cpp-python) or on a
    Hugging Face model folder: {"metrics", "items", "n_items", "backend", ...}."""
    if (gguf is None) == (hf_model is None):
        raise ValueError("pass exactly one of gguf, hf_model")
    with tempfile.TemporaryDirectory(prefix="qwenphysics-lmeval-") as tmp_dir:
        tmp = Path(work or tmp_dir)
        include, n_items = mc_task.write_task(data_dir, tmp / "tasks")
        if hf_model is not None:
            model_args = {"pretrained": str(hf_model), "device": "cpu", "dtype": "float32", "batch_size": 1}
            return _run_runner(python, "hf", model_args, include, limit, timeout, tmp, "hf", n_items)
        assert gguf is not None  # exactly one of gguf, hf_model (checked above)
        model_args = {"gguf": str(Path(gguf).resolve()), "python": str(core_python), "n_ctx": 2048}
        return _run_runner(python, "qwenphysics-llama-cpp", model_args, include, limit, timeout, tmp, "llama.cpp",
                           n_items)


def _run_runner(python, model_type: str, model_args: dict, include: Path, limit, timeout: float, tmp: Path,
                backend: str, n_items: int) -> dict:
    out_path = tmp / "results.json"
    args = {"model_type": model_type, "model_args": model_args, "tasks": list(LOCAL_TASKS), "limit": limit,
            "include_path": str(include), "out": str(out_path)}
    env = {**os.environ, **OFFLINE_ENV, "OPENAI_API_KEY": "none"}
    try:
        proc = subprocess.run([str(python), "-c", _LOCAL_RUNNER, json.dumps(args)], capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"skipped": f"failed: lm-eval did not finish within {timeout:.0f} s", "backend": backend}
    if proc.returncode != 0 or not out_path.exists():
        tail = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()]
        return {"skipped": f"failed: lm-eval exited {proc.returncode}: {tail[-1][:300] if tail else 'no output'}",
                "backend": backend}
    data = json.loads(out_path.read_text())
    task = LOCAL_TASKS[0]
    return {"metrics": _metrics(data["results"].get(task, {})), "items": data["items"].get(task, []),
            "n_items": n_items, "backend": backend, "version": data.get("versions", {}).get(task),
            "lm_eval_version": data.get("lm_eval_version")}


def cache_dirs(env: Mapping[str, str] | None = None) -> tuple[list[Path], list[Path]]:
    """(hub caches, datasets caches) as the Hugging Face libraries would look them up."""
    env = os.environ if env is None else env
    home = Path(env.get("HF_HOME") or Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface")
    hub = [Path(p) for p in (env.get("HF_HUB_CACHE"), env.get("HUGGINGFACE_HUB_CACHE")) if p]
    hub.append(home / "hub")
    datasets = [Path(env["HF_DATASETS_CACHE"])] if env.get("HF_DATASETS_CACHE") else []
    datasets.append(home / "datasets")
    return hub, datasets


def dataset_cached(repo: str, config: str | None, hub: list[Path], datasets: list[Path]) -> bool:
    """Whether a dataset (and config) is present in one of the local caches."""
    for root in hub:
        snapshots = root / ("datasets--" + repo.replace("/", "--")) / "snapshots"
        if snapshots.is_dir():
            for snap in snapshots.iterdir():
                if snap.is_dir() and any(snap.iterdir()) and (config is None or (snap / config).exists()):
                    return True
    for root in datasets:
        d = root / repo.replace("/", "___")
        if d.is_dir() and (config is None or (d / config).is_dir()) and any(d.iterdir()):
            return True
    return False


def task_data_available(task: str, env: dict | None = None) -> bool:
    hub, datasets = cache_dirs(env)
    return any(dataset_cached(repo, cfg, hub, datasets) for repo, cfg in TASK_DATA.get(task, []))


def lm_eval_importable(python: str) -> bool:
    probe = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('lm_eval') else 1)"
    try:
        return subprocess.run([python, "-c", probe], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _metrics(task_result: dict) -> dict:
    """Numeric metrics of one task, with lm-eval's ',none' filter suffix removed."""
    out = {}
    for key, value in task_result.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "alias":
            out[key.split(",")[0] if key.endswith(",none") else key] = value
    return out


def run(
    tasks: list[str],
    base_url: str | None,
    model: str | None,
    api_key: str | None = None,
    python: str | None = None,
    model_type: str = "local-completions",
    tokenizer: str | None = None,
    limit: int | None = None,
    timeout: float = 3600,
    env: dict | None = None,
    gguf: Path | None = None,
    data: Path | None = None,
    hf_model: Path | None = None,
) -> dict:
    """Run what can run; returns {task: {"metrics": {...}} | {"skipped": reason}}. The project's
    own task needs the GGUF and the dataset folder; hub tasks need a served model."""
    python = python or default_python()
    results: dict[str, dict] = {}
    for t in [t for t in tasks if t in LOCAL_TASKS]:
        if (gguf is None and hf_model is None) or data is None:
            results[t] = {"skipped": f"skipped: {t} needs --gguf and --data (it is written from the held-out papers)"}
        elif not lm_eval_importable(python):
            results[t] = {"skipped": f"skipped: lm_eval not installed (in {python})"}
        else:
            model_file = {"hf_model": hf_model} if hf_model is not None else {"gguf": gguf}
            res = run_local_task(data, python=python, limit=limit, timeout=timeout, **model_file)
            results[t] = res if "skipped" in res else {k: v for k, v in res.items() if k != "items"} | {
                "choices": [i["choice"] for i in res["items"]]}
    tasks = [t for t in tasks if t not in LOCAL_TASKS]
    if not tasks:
        return results
    if base_url is None:
        return results | {t: {"skipped": "skipped: hub tasks need a served model (--base-url)"} for t in tasks}
    if not lm_eval_importable(python):
        return results | {t: {"skipped": f"skipped: lm_eval not installed (in {python})"} for t in tasks}
    runnable = []
    for t in tasks:
        if t not in TASK_DATA:
            results[t] = {"skipped": f"skipped: no offline data source known for task {t}"}
        elif not task_data_available(t, env):
            results[t] = {"skipped": f"skipped: task data for {t} not in the local datasets cache"}
        else:
            runnable.append(t)
    if not runnable:
        return results
    endpoint = "/chat/completions" if "chat" in model_type else "/completions"
    model_args = {"model": model, "base_url": base_url.rstrip("/") + endpoint,
                  "num_concurrent": 1, "max_retries": 3}
    if tokenizer:
        model_args.update(tokenizer_backend="huggingface", tokenizer=tokenizer)
    elif "chat" in model_type:
        model_args.update(tokenizer_backend=None)
    sub_env = dict(os.environ if env is None else env)
    sub_env.update(OFFLINE_ENV)
    if api_key:
        sub_env["OPENAI_API_KEY"] = api_key
    with tempfile.TemporaryDirectory(prefix="qwenphysics-lmeval-") as tmp:
        out_path = Path(tmp) / "results.json"
        args = {"model_type": model_type, "model_args": model_args, "tasks": runnable,
                "limit": limit, "out": str(out_path), "chat": "chat" in model_type}
        cmd = [python, "-c", _RUNNER, json.dumps(args)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=sub_env)
        except subprocess.TimeoutExpired:
            proc = None
            reason = f"failed: lm-eval did not finish within {timeout:.0f} s"
        if proc is not None and proc.returncode == 0 and out_path.exists():
            out = json.loads(out_path.read_text())
            for t in runnable:
                if t in out["results"]:
                    results[t] = {"metrics": _metrics(out["results"][t]),
                                  "version": out.get("versions", {}).get(t),
                                  "lm_eval_version": out.get("lm_eval_version")}
                else:
                    results[t] = {"skipped": f"failed: lm-eval returned no result for {t}"}
            return results
        if proc is not None:
            tail = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()]
            reason = f"failed: lm-eval exited {proc.returncode}: {tail[-1][:300] if tail else 'no output'}"
        for t in runnable:
            results[t] = {"skipped": reason}
    return results
