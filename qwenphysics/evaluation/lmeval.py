"""Standard benchmark tasks through EleutherAI's lm-evaluation-harness, offline.

The harness runs in whichever Python environment has it (``--lm-eval-python``), as a
subprocess talking to the served model. A task runs only when ``lm_eval`` imports there
and the task's data is already in the local Hugging Face cache; otherwise it is recorded
as skipped with the reason. Network access is switched off for the subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_TASKS = (
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
OFFLINE_ENV = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

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


def cache_dirs(env: dict | None = None) -> tuple[list[Path], list[Path]]:
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
) -> dict:
    """Run what can run; returns {task: {"metrics": {...}} | {"skipped": reason}}."""
    python = python or sys.executable
    results: dict[str, dict] = {}
    if base_url is None:
        return {t: {"skipped": "skipped: lm-eval tasks need a served model (--base-url)"} for t in tasks}
    if not lm_eval_importable(python):
        return {t: {"skipped": f"skipped: lm_eval not installed (in {python})"} for t in tasks}
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
            data = json.loads(out_path.read_text())
            for t in runnable:
                if t in data["results"]:
                    results[t] = {"metrics": _metrics(data["results"][t]),
                                  "version": data.get("versions", {}).get(t),
                                  "lm_eval_version": data.get("lm_eval_version")}
                else:
                    results[t] = {"skipped": f"failed: lm-eval returned no result for {t}"}
            return results
        if proc is not None:
            tail = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()]
            reason = f"failed: lm-eval exited {proc.returncode}: {tail[-1][:300] if tail else 'no output'}"
        for t in runnable:
            results[t] = {"skipped": reason}
    return results
