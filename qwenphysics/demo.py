"""The main job, end to end: arXiv sample -> dataset -> Axolotl training -> GGUF -> chat.

On a machine with a CUDA GPU and the Hugging Face hub it trains `recipes/qwen3b-physics.yml`
itself. Elsewhere (a laptop, CI) it runs the same recipe rewritten mechanically for CPU on
the tiny random-weight Qwen2.5 (real tokenizer): the same commands, files and servers, with
numbers that mean nothing. Every step skips work whose outputs are current, logs to
`<workdir>/logs/<step>.log`, and on failure names the step, the log and what to do.

The demo works in a folder of its own (`demo/` by default; `--workdir`): data, outputs,
models, logs and Open WebUI's data all go there, never into the `data/`, `outputs/` and
`models/` of a real run. It marks the folder as its own and refuses a non-empty folder
without that mark, and it deletes nothing it did not write.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from openai import OpenAI

from dataset_builders import spec as spec_mod
from dataset_builders.pipeline import build
from dataset_builders.records import InputError
from dataset_builders.sample import write_sample

from . import REPO_ROOT
from .convert import ConvertError, ConvertOptions, convert_run, load_run
from .core.offline import OFFLINE_ENV, QUIET
from .core.prompts import system_prompt
from .evaluation.questions import load as load_questions
from .hashing import sha256_file
from .recipes import DEMO_GPU_STEPS, checkpoints, cpu_variant, demo_gpu_variant, load_recipe, write_recipe
from .serving import LocalStack, ServeError, StackConfig
from .tiny_model import TINY_DIR

DEFAULT_RECIPE = REPO_ROOT / "recipes" / "qwen3b-physics.yml"
DEFAULT_WORKDIR = REPO_ROOT / "demo"
STEPS = ("data", "train", "convert", "serve")
WORKDIR_MARK = ".qwenphysics-demo"  # in a folder the demo made (or was given empty)
RUN_MARK = ".qwenphysics-demo-run"  # in a training output folder the demo started


class StepFailed(Exception):
    def __init__(self, step: str, message: str, log: Path | None = None, hint: str = ""):
        self.step, self.log, self.hint = step, log, hint
        super().__init__(message)

    def render(self) -> str:
        parts = [f"demo: step '{self.step}' failed: {self}"]
        if self.log:
            parts.append(f"  log: {self.log}")
        if self.hint:
            parts.append(f"  what to do: {self.hint}")
        return "\n".join(parts)


@dataclass
class DemoConfig:
    workdir: Path = DEFAULT_WORKDIR
    inputs: list[str] = field(default_factory=list)  # real dumps; empty: the project's sample
    recipe: Path = DEFAULT_RECIPE
    mode: str = "auto"  # auto | gpu | cpu
    steps: int = 6  # CPU smoke training steps
    serve: bool = True
    port: int = 3000  # as `make serve` and Compose
    threads: int | None = None

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"


def claim_workdir(workdir: Path) -> None:
    """Use `workdir` only if the demo made it, or it is new or empty."""
    mark = workdir / WORKDIR_MARK
    if workdir.exists() and not workdir.is_dir():
        raise StepFailed("setup", f"--workdir {workdir} is a file", hint="pass a folder for the demo's files")
    if workdir.is_dir() and not mark.exists() and any(workdir.iterdir()):
        raise StepFailed("setup", f"--workdir {workdir} is not empty and was not made by the demo",
                         hint="pass a new or empty folder (the default is demo/); the demo never writes "
                              "into folders it did not create")
    workdir.mkdir(parents=True, exist_ok=True)
    mark.touch()


def claim_run_dir(out: Path) -> None:
    """An empty training output folder marked as the demo's; an earlier demo run there is
    removed, anything else refused."""
    if out.exists() and any(out.iterdir()):
        if not (out / RUN_MARK).exists():
            raise StepFailed("train", f"{out} holds a training run the demo did not start",
                             hint="move it away, or pass another --workdir; the demo deletes only its own runs")
        shutil.rmtree(out)  # an earlier demo run, cut short or of other inputs
    out.mkdir(parents=True, exist_ok=True)
    (out / RUN_MARK).touch()


def say(msg: str) -> None:
    print(f"\033[1m[demo]\033[0m {msg}", flush=True)


def venv_bin(env: str, name: str) -> Path:
    p = REPO_ROOT / env / "bin" / name
    if not p.exists():
        raise StepFailed("setup", f"{p} is missing", hint="run `make setup` (it creates the environments)")
    return p


def run_logged(cmd: list, log: Path, step: str, env: dict | None = None, cwd: Path | None = None,
               hint: str = "") -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"\n$ {' '.join(map(str, cmd))}\n")
        f.flush()
        p = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT,
                           env={**os.environ, **(env or {})}, cwd=cwd)
    if p.returncode != 0:
        tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-3:]
        raise StepFailed(step, f"exit {p.returncode}: " + " | ".join(t.strip()[:160] for t in tail), log, hint)


# ---------------------------------------------------------------------------- 1. data

def step_data(cfg: DemoConfig) -> Path:
    inputs = list(cfg.inputs)
    if not inputs:
        sample = cfg.data_dir / "sample"
        meta = sample / "arxiv-metadata-sample.jsonl"
        if not meta.exists():
            say(f"writing the project's arXiv-format sample to {sample}")
            write_sample(sample)
        inputs = [str(meta)]
        say(f"input: the project's sample ({meta}); pass --input <Kaggle snapshot or OAI folder> for real data")
    else:
        say(f"input: {', '.join(inputs)}")
    out = cfg.data_dir / "abstracts-chat"
    spec = spec_mod.load("abstracts-chat")
    manifest = out / "manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        same_inputs = [i["path"] for i in m["inputs"]] == inputs and all(
            not Path(i["path"]).is_file() or i.get("sha256") == sha256_file(Path(i["path"])) for i in m["inputs"])
        if same_inputs and m["spec"]["sha256"] == hashlib.sha256(spec.source_bytes()).hexdigest():
            say(f"dataset {out} is current ({m['counts']['kept']} papers)")
            return out
    say("building the abstracts-chat training context")

    try:
        res = build(spec, inputs, out, progress=sys.stderr.isatty())
    except InputError as e:
        raise StepFailed("data", str(e), hint="check the --input paths (Kaggle snapshot, OAI pages folder or "
                                              "hf:<dataset id>)") from None
    c = res.manifest["counts"]
    say(f"read {c['read']} records, kept {c['kept']} papers -> {out} "
        f"(train {c['examples']['train']}, validation {c['examples']['validation']}, test {c['examples']['test']})")
    return out


# ---------------------------------------------------------------------------- 2. train

def detect_mode(cfg: DemoConfig) -> tuple[str, str]:
    if cfg.mode in ("gpu", "cpu"):
        return cfg.mode, f"--mode {cfg.mode}"
    py = venv_bin(".venv-train", "python")
    p = subprocess.run([str(py), "-c", "import torch; print(torch.cuda.is_available())"], capture_output=True,
                       text=True)
    gpu = p.stdout.strip() == "True"
    if not gpu:
        return "cpu", "no CUDA GPU visible to torch"
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return "cpu", "HF_HUB_OFFLINE=1, so Qwen2.5-3B-Instruct cannot be downloaded"
    try:
        urllib.request.urlopen("https://huggingface.co/api/models/Qwen/Qwen2.5-3B-Instruct", timeout=5)
    except Exception:
        return "cpu", "the Hugging Face hub is not reachable, so Qwen2.5-3B-Instruct cannot be downloaded"
    return "gpu", "a CUDA GPU and the Hugging Face hub are available"


def step_train(cfg: DemoConfig, data: Path) -> tuple[Path, Path, Path | None]:
    """Returns (recipe used, output dir, local base model dir or None for a hub id)."""

    mode, why = detect_mode(cfg)
    log = cfg.logs / "train.log"
    accelerate = venv_bin(".venv-train", "accelerate")
    if mode == "gpu":
        say(f"training on the GPU ({why}): {cfg.recipe.name} with its model, adapter and kernels, "
            f"{DEMO_GPU_STEPS} steps of one 4,096-token row over the sample (the full recipe takes 65,536 "
            "tokens a step, one step on a sample this small)")
        out = cfg.workdir / "outputs" / "demo-gpu"
        variant = demo_gpu_variant(load_recipe(cfg.recipe), data_root=data.parent, output_dir=out)
        header = f"# {cfg.recipe.name} for the demo on a GPU (qwenphysics.recipes.demo_gpu_variant)\n"
        base = None
        env = dict(QUIET)
        cmd = [accelerate, "launch", "--num_processes", "1", "-m", "axolotl.cli.train"]
    else:
        say(f"training on the CPU: {cfg.recipe.name} rewritten for the tiny Qwen2.5 ({why}); "
            "on a GPU machine with the hub this step runs the recipe itself")
        py = venv_bin(".venv-train", "python")
        if not (TINY_DIR / "model.safetensors").exists():
            say("building the tiny random-weight Qwen2.5 with the real tokenizer")
            run_logged([py, REPO_ROOT / "scripts" / "make_tiny_qwen.py"], cfg.logs / "tiny-model.log", "train")
        out = cfg.workdir / "outputs" / "demo-cpu"
        variant = cpu_variant(load_recipe(cfg.recipe), model_dir=TINY_DIR, data_root=data.parent, output_dir=out,
                              max_steps=cfg.steps, save_steps=cfg.steps, sequence_len=512)
        header = f"# {cfg.recipe.name} rewritten for CPU by qwenphysics.recipes.cpu_variant\n"
        base = TINY_DIR
        env = {**OFFLINE_ENV, "CUDA_VISIBLE_DEVICES": ""}
        cmd = [accelerate, "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--cpu", "-m", "axolotl.cli.train"]
    recipe = write_recipe(variant, out.parent / f"{out.name}.recipe.yml", header)
    cmd.append(recipe)
    stamp = out / ".demo-train.json"
    want = {"recipe": sha256_file(recipe), "data": sha256_file(data / "manifest.json")}
    if stamp.exists() and json.loads(stamp.read_text()) == want and (out / "adapter_model.safetensors").exists():
        say(f"trained adapter in {out} is current")
        return recipe, out, base
    claim_run_dir(out)
    say(f"$ {' '.join(str(c) for c in cmd[:3])} ... {recipe}  (log: {log})")
    t0 = time.time()
    run_logged(cmd, log, "train", env=env, cwd=cfg.workdir,
               hint="read the log's last error; `make setup` repairs missing packages")
    if not (out / "adapter_model.safetensors").exists():
        raise StepFailed("train", f"training finished without an adapter in {out}", log)
    losses = [json.loads(line)["loss"] for line in _trainer_logs(out) if "loss" in json.loads(line)]
    say(f"trained in {time.time() - t0:.0f} s; adapter in {out}"
        + (f"; loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else ""))
    stamp.write_text(json.dumps(want))
    return recipe, out, base


def _trainer_logs(out: Path) -> list[str]:
    ck = checkpoints(out)
    if not ck:
        return []
    state = json.loads((ck[-1] / "trainer_state.json").read_text())
    return [json.dumps(e) for e in state.get("log_history", [])]


# ---------------------------------------------------------------------------- 3. convert

def step_convert(cfg: DemoConfig, recipe: Path, out: Path, base: Path | None) -> dict:
    try:
        run = load_run(recipe, output_dir=out)
        run.name = "demo-gpu" if base is None else "demo-cpu"
        res = convert_run(run, ConvertOptions(out_root=cfg.workdir / "models", quants=("Q4_K_M",),
                                              base_dir=base, base_gguf=False, threads=cfg.threads,
                                              env=dict(OFFLINE_ENV) if base is not None else dict(QUIET)))
    except ConvertError as e:
        raise StepFailed("convert", str(e), cfg.workdir / "models" / run.name / "convert.log" if 'run' in dir()
                         else None, "see the log; `python scripts/convert.py --help` for options") from None
    for name in res["files"]:
        say(f"  {Path(res['dir']) / name}")
    return res


# ---------------------------------------------------------------------------- 4. serve

def step_serve(cfg: DemoConfig, model: Path, lora: Path | None = None) -> list[dict]:
    seed = [q for q in load_questions().questions if q.seed]
    stack_cfg = StackConfig(model=model, auth=False, data_dir=cfg.workdir / "webui",
                            webui_port=cfg.port if cfg.serve else 0, threads=cfg.threads,
                            log_dir=cfg.logs / "serve")
    answers = []
    say(f"starting llama.cpp's server and Open WebUI on {model.name} (logs: {stack_cfg.log_dir})")
    try:
        stack = LocalStack(stack_cfg)
        stack.start()
    except ServeError as e:
        raise StepFailed("serve", str(e), stack_cfg.log_dir, "check the logs; is the port free? (--port)") from None
    try:
        client = OpenAI(base_url=stack.openai_base_url, api_key=stack.api_key, max_retries=1, timeout=120)
        system = system_prompt()  # the prompt the model was trained with
        say(f"smoke check: the seed's {len(seed)} questions through the OpenAI API")
        for q in seed:
            r = client.chat.completions.create(model=stack.model, messages=[{"role": "system", "content": system},
                                                                         {"role": "user", "content": q.question}],
                                               temperature=0.1, max_tokens=48)
            text = (r.choices[0].message.content or "").strip().replace("\n", " ")
            answers.append({"id": q.id, "question": q.question, "answer": text})
            print(f"  Q: {q.question}\n  A: {text[:200]}", flush=True)
        (cfg.workdir / "outputs").mkdir(parents=True, exist_ok=True)
        (cfg.workdir / "outputs" / "demo-answers.json").write_text(json.dumps(answers, indent=2, ensure_ascii=False))
        if not cfg.serve:
            say("--no-serve: smoke check done, stopping the servers")
            return answers
        say(f"chat with your model: {stack.webui_url}   (Ctrl-C stops both servers)")
        while True:
            time.sleep(1)
            for proc, name in ((stack.llama_proc, "llama-server"), (stack.webui_proc, "Open WebUI")):
                if proc is not None and proc.poll() is not None:
                    raise StepFailed("serve", f"{name} exited with code {proc.returncode}", stack_cfg.log_dir)
    except KeyboardInterrupt:
        say("stopping")
        return answers
    except Exception as e:
        if isinstance(e, StepFailed):
            raise
        raise StepFailed("serve", f"{type(e).__name__}: {str(e)[:200]}", stack_cfg.log_dir) from None
    finally:
        stack.stop()


def run_demo(cfg: DemoConfig) -> int:
    t0 = time.time()
    try:
        claim_workdir(cfg.workdir)
        say(f"working in {cfg.workdir}")
        say("1/4 data")
        data = step_data(cfg)
        say("2/4 train")
        recipe, out, base = step_train(cfg, data)
        say("3/4 convert (merge -> GGUF F16 -> Q4_K_M, GGUF LoRA)")
        res = step_convert(cfg, recipe, out, base)
        q4 = next(Path(res["dir"]) / n for n in res["files"] if n.endswith("Q4_K_M.gguf"))
        say("4/4 serve")
        step_serve(cfg, q4)
    except StepFailed as e:
        print(e.render(), file=sys.stderr)
        return 1
    say(f"done in {time.time() - t0:.0f} s")
    return 0
