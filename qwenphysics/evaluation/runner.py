"""Evaluate one model: physics QA, held-out perplexity, lm-eval tasks -> one results JSON.

The model is either served behind an OpenAI-compatible endpoint (``--base-url``) or a GGUF
file run in-process (``--gguf``). Both may be given: QA then goes through the endpoint and
the GGUF file (the one being served) provides the perplexity and the model's identity. An
optional judge model grades the QA answers beside the automatic scorers (``judge.py``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

from qwenphysics.hashing import sha256_file

from ..core.prompts import system_prompt
from . import judge, lmeval, perplexity, questions
from .backends import EndpointBackend, GGUFBackend
from .exceptions import EvalError, QuestionFailed

SCHEMA_VERSION = 1
SYSTEM_PROMPT = system_prompt()  # what the models were trained and are served with
MAX_TOKENS_CAP = 4096


def aggregate(records: list[dict]) -> dict:
    """Overall, per-category and per-language accuracy of scored answers."""

    def block(rows: list[dict]) -> dict:
        correct = sum(1 for r in rows if r["score"] == 1)
        return {"correct": correct, "total": len(rows),
                "accuracy": correct / len(rows) if rows else None}

    out = block(records)
    for key, name in (("category", "by_category"), ("language", "by_language")):
        groups: dict[str, list[dict]] = {}
        for r in records:
            groups.setdefault(r[key], []).append(r)
        out[name] = {k: block(v) for k, v in sorted(groups.items())}
    return out


def run_qa(
    chat: Callable[[list[dict]], str],
    selected: list[questions.Question],
    system_prompt: str,
    log: Callable[[str], None] = lambda s: None,
) -> dict:
    """Ask every question through `chat` (messages -> answer text) and score the answers."""
    records = []
    width = len(str(len(selected)))
    for i, q in enumerate(selected, 1):
        messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": q.question}]
        t0 = time.monotonic()
        error = None
        try:
            answer = chat(messages)
        except QuestionFailed as exc:
            answer, error = "", str(exc)
        seconds = time.monotonic() - t0
        score = int(q.score(answer)) if error is None else 0
        rec = {"id": q.id, "category": q.category, "language": q.language, "seed": q.seed,
               "question": q.question, "reference": q.reference, "answer": answer,
               "score": score, "seconds": round(seconds, 3)}
        if error:
            rec["error"] = error
        records.append(rec)
        verdict = "error: " + error if error else ("correct" if score else "wrong")
        log(f"[{i:>{width}}/{len(selected)}] {q.id} ({q.category}): {verdict}  {seconds:.1f}s")
    return {"questions": records, **aggregate(records)}


def _have_llama_cpp() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def _file_identity(path: Path) -> dict:
    return {"path": str(path), "file": path.name, "bytes": path.stat().st_size,
            "sha256": sha256_file(path)}


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="evaluate.py",
        description="Evaluate one model (QA, perplexity, lm-eval) into a results JSON.",
    )
    m = p.add_argument_group("model")
    m.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1")
    m.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"),
                   help="API key for --base-url (default: $OPENAI_API_KEY)")
    m.add_argument("--model", help="model name at the endpoint (default: the first it lists)")
    m.add_argument("--gguf", type=Path, help="GGUF file: asked directly when no --base-url; "
                   "always used for perplexity and hashed for the model's identity")
    m.add_argument("--n-ctx", type=int, default=4096, help="context for --gguf QA (default 4096)")
    m.add_argument("--timeout", type=float, default=300, help="seconds per request (default 300)")
    r = p.add_argument_group("provenance")
    r.add_argument("--name", help="run name in reports (default: the --out file name)")
    r.add_argument("--recipe", help="recipe name or path (recipes/*.yml) that trained the model")
    r.add_argument("--dataset-manifest", type=Path,
                   help="manifest.json of the training dataset (default: <data>/manifest.json)")
    r.add_argument("--out", type=Path, help="results JSON (default: results/<name>.json)")
    q = p.add_argument_group("physics QA")
    q.add_argument("--questions", type=Path, help="question file (default: the shipped set)")
    q.add_argument("--categories", type=_csv, help="comma-separated categories to ask")
    q.add_argument("--limit", type=int, help="ask at most this many questions")
    q.add_argument("--temperature", type=float, default=0.1)
    q.add_argument("--max-tokens", type=int, default=512, help=f"answer length cap (<= {MAX_TOKENS_CAP})")
    q.add_argument("--system-prompt", default=SYSTEM_PROMPT)
    q.add_argument("--no-qa", action="store_true", help="skip the QA part")
    x = p.add_argument_group("perplexity")
    x.add_argument("--data", type=Path, help="dataset builder output dir (its test.jsonl is scored)")
    x.add_argument("--ppl-n-ctx", type=int, default=512, help="window size in tokens (default 512)")
    x.add_argument("--ppl-max-tokens", type=int, default=32768,
                   help="score at most this many tokens of paper text (default 32768; the report's 95 %% "
                        "interval says whether two runs differ)")
    e = p.add_argument_group("lm-eval")
    e.add_argument("--lm-eval-tasks", type=_csv, default=list(lmeval.DEFAULT_TASKS))
    e.add_argument("--lm-eval-python", default=lmeval.default_python(),
                   help="Python of the environment that has lm_eval (default: the training environment's)")
    e.add_argument("--lm-eval-model-type", default="local-completions",
                   choices=["local-completions", "local-chat-completions"])
    e.add_argument("--lm-eval-tokenizer", help="local Hugging Face tokenizer dir for lm-eval")
    e.add_argument("--lm-eval-limit", type=int, help="examples per task (default: all)")
    e.add_argument("--lm-eval-hf-model", type=Path,
                   help="score qwenphysics_title_choice on this Hugging Face model folder (e.g. a run's merged/) "
                        "with transformers, instead of the GGUF with llama.cpp")
    e.add_argument("--no-lm-eval", action="store_true", help="skip lm-eval tasks")
    j = p.add_argument_group("judge (optional: a model grades the QA answers against the references)")
    j.add_argument("--judge-url", help="OpenAI-compatible server of the judge (…/v1), e.g. the Q&A teacher's")
    j.add_argument("--judge-gguf", type=Path, metavar="MODEL.gguf",
                   help="start llama.cpp's server on this GGUF as the judge (after the QA, to spare memory)")
    j.add_argument("--judge-model", help="model name to request (default: the server's first model)")
    j.add_argument("--judge-key-env", default="JUDGE_API_KEY", metavar="VAR",
                   help="environment variable holding the judge's API key (default: JUDGE_API_KEY)")
    j.add_argument("--judge-rubric", type=Path, default=judge.DEFAULT_RUBRIC, metavar="FILE",
                   help="the grading rules the judge reads (default: the shipped judge-rubric.md)")
    j.add_argument("--judge-cache", type=Path, metavar="PATH",
                   help="verdict cache (default: $QWENPHYSICS_CACHE/judge-cache.sqlite); an unchanged answer "
                        "is never graded twice")
    j.add_argument("--judge-concurrency", type=int, metavar="N",
                   help="requests in flight (default: the slots llama.cpp reports, else 4)")
    j.add_argument("--judge-parallel", type=int, default=2, metavar="N",
                   help="slots of the server started on --judge-gguf (default 2)")
    j.add_argument("--judge-max-tokens", type=int, default=1024, metavar="N",
                   help="length cap of a verdict with its reason (default 1024; the reason gets up to 600 "
                        "characters)")
    j.add_argument("--judge-timeout", type=float, default=300.0, metavar="S", help="per request (default 300)")
    j.add_argument("--judge-retries", type=int, default=2, metavar="N", help="per request, with backoff (default 2)")
    return p


def judge_options(a: argparse.Namespace) -> judge.JudgeOptions:
    return judge.JudgeOptions(
        url=a.judge_url, gguf=a.judge_gguf, model=a.judge_model, key_env=a.judge_key_env, rubric=a.judge_rubric,
        cache=a.judge_cache, concurrency=a.judge_concurrency, parallel=a.judge_parallel, timeout=a.judge_timeout,
        retries=a.judge_retries, max_tokens=a.judge_max_tokens)


def check_args(a: argparse.Namespace) -> None:
    """Reject bad input with one line that says what to fix."""
    if not a.base_url and not a.gguf:
        raise EvalError("give the model: --base-url URL (a served model) or --gguf FILE")
    if a.base_url and not a.base_url.startswith(("http://", "https://")):
        raise EvalError(f"--base-url must start with http:// or https:// (got {a.base_url!r})")
    if a.gguf and not a.gguf.is_file():
        raise EvalError(f"--gguf {a.gguf}: no such file")
    if a.lm_eval_hf_model and not (a.lm_eval_hf_model / "config.json").is_file():
        raise EvalError(f"--lm-eval-hf-model {a.lm_eval_hf_model}: no model there (config.json missing)")
    if a.gguf and a.gguf.is_file():
        with open(a.gguf, "rb") as fh:
            if fh.read(4) != b"GGUF":
                raise EvalError(f"--gguf {a.gguf} is not a GGUF file")
    if a.data is not None and not (a.data / "test.jsonl").is_file():
        raise EvalError(f"--data {a.data}: no test.jsonl there (pass a dataset builder output dir)")
    if a.data is not None and not (a.data / "test.jsonl").read_bytes().strip():
        raise EvalError(f"--data {a.data}: test.jsonl is empty, so there is nothing to score; "
                        "build the dataset from more papers or drop --data")
    if a.dataset_manifest is not None and not a.dataset_manifest.is_file():
        raise EvalError(f"--dataset-manifest {a.dataset_manifest}: no such file")
    if a.limit is not None and a.limit < 1:
        raise EvalError("--limit must be >= 1")
    if not 0 <= a.temperature <= 2:
        raise EvalError("--temperature must be between 0 and 2")
    if not 1 <= a.max_tokens <= MAX_TOKENS_CAP:
        raise EvalError(f"--max-tokens must be between 1 and {MAX_TOKENS_CAP}")
    if a.n_ctx < 256 or a.ppl_n_ctx < 16:
        raise EvalError("--n-ctx must be >= 256 and --ppl-n-ctx >= 16")
    if a.ppl_max_tokens < 1:
        raise EvalError("--ppl-max-tokens must be >= 1")
    if a.timeout <= 0:
        raise EvalError("--timeout must be > 0")
    known = [*lmeval.LOCAL_TASKS, *lmeval.TASK_DATA]
    unknown = [t for t in (a.lm_eval_tasks or []) if t not in known]
    if unknown:
        raise EvalError(f"--lm-eval-tasks: unknown task {unknown[0]!r} (known: {', '.join(known)})")
    judge.check_options(judge_options(a))


def _provenance(a: argparse.Namespace) -> tuple[dict | None, dict | None]:
    recipe = None
    if a.recipe:
        path = Path(a.recipe)
        recipe = {"name": path.stem if path.suffix in (".yml", ".yaml") else a.recipe}
        if path.is_file():
            recipe.update(path=str(path), sha256=sha256_file(path))
    manifest_path = a.dataset_manifest
    if manifest_path is None and a.data is not None and (a.data / "manifest.json").is_file():
        manifest_path = a.data / "manifest.json"
    manifest = None
    if manifest_path is not None:
        manifest = {"path": str(manifest_path), "sha256": sha256_file(manifest_path)}
    return recipe, manifest


def evaluate(a: argparse.Namespace, log: Callable[[str], None]) -> dict:
    check_args(a)
    started = time.monotonic()
    try:
        qset = questions.load(a.questions)
    except questions.QuestionSetError as exc:
        raise EvalError(str(exc)) from None
    if a.categories:
        unknown = sorted(set(a.categories) - set(qset.categories))
        if unknown:
            raise EvalError(f"--categories: unknown {unknown[0]!r} (known: {', '.join(qset.categories)})")
    recipe, manifest = _provenance(a)
    timings: dict[str, float] = {}
    jopts = judge_options(a)
    grader = judge.Judge(jopts, log) if jopts.enabled and not a.no_qa else None
    try:
        if grader is not None and a.judge_url:
            grader.connect()  # an unreachable judge stops the run before any question is asked
        return _evaluate(a, log, qset, recipe, manifest, timings, started, grader)
    finally:
        if grader is not None:
            grader.close()


def _evaluate(a: argparse.Namespace, log: Callable[[str], None], qset: questions.QuestionSet,
              recipe: dict | None, manifest: dict | None, timings: dict[str, float], started: float,
              grader: judge.Judge | None) -> dict:

    model: dict = {}
    endpoint = None
    if a.base_url:
        endpoint = EndpointBackend(a.base_url, a.api_key, a.model, timeout=a.timeout)
        model.update(endpoint.identity())
    if a.gguf:
        log(f"hashing {a.gguf} ...")
        model["gguf"] = _file_identity(a.gguf)
        if endpoint is None:
            model.update(backend="gguf", model=a.gguf.name)
    name = a.name or (a.out.stem if a.out else None) or (a.gguf.stem if a.gguf else model["model"])
    out_path = a.out or Path("results") / f"{name}.json"

    qa: dict
    if a.no_qa:
        qa = {"skipped": "skipped: --no-qa"}
    else:
        selected = qset.select(a.categories, a.limit)
        log(f"QA: {len(selected)} questions via {model['backend']} ({model['model']})")
        t0 = time.monotonic()
        gguf_backend = None
        backend: EndpointBackend | GGUFBackend
        if endpoint is not None:
            backend = endpoint
        else:
            gguf_backend = backend = GGUFBackend(a.gguf, n_ctx=a.n_ctx)
        try:
            qa = run_qa(lambda msgs: backend.chat(msgs, a.temperature, a.max_tokens),
                        selected, a.system_prompt, log)
        finally:
            if gguf_backend is not None:
                gguf_backend.close()
        timings["qa_s"] = round(time.monotonic() - t0, 3)
        log(f"QA accuracy: {qa['correct']}/{qa['total']}")

    if a.no_qa:
        verdicts: dict = {"skipped": "skipped: --no-qa (no answers to judge)"}
    elif grader is None:
        verdicts = {"skipped": judge.NO_JUDGE}
    else:
        t0 = time.monotonic()
        verdicts = grader.grade(qa["questions"])
        timings["judge_s"] = round(time.monotonic() - t0, 3)
        agree = verdicts["agreement"]
        log(f"judge: {verdicts['correct']}/{verdicts['judged']} correct ({verdicts['asked']} asked, "
            f"{verdicts['from_cache']} from cache); agrees with the scorers on "
            + (f"{agree['rate']:.0%} of {agree['n']}" if agree["n"] else "no answer"))

    if a.data is None:
        ppl: dict = {"skipped": "skipped: no --data given"}
    elif a.gguf is None:
        ppl = {"skipped": "skipped: perplexity needs --gguf (the model file to score)"}
    elif not _have_llama_cpp():
        ppl = {"skipped": "skipped: llama-cpp-python not installed (needed for perplexity)"}
        log(f"perplexity {ppl['skipped']}")
    else:
        t0 = time.monotonic()
        ppl = perplexity.perplexity_gguf(a.gguf, a.data / "test.jsonl", a.ppl_n_ctx,
                                         a.ppl_max_tokens, progress=None)
        timings["perplexity_s"] = round(time.monotonic() - t0, 3)
        log(f"perplexity: {ppl['ppl']:.3f} (95 % interval {ppl['ci95'][0]:.3f}-{ppl['ci95'][1]:.3f}) over "
            f"{ppl['tokens']} tokens of paper text, {ppl['documents']} documents")

    if a.no_lm_eval:
        lm = {t: {"skipped": "skipped: --no-lm-eval"} for t in a.lm_eval_tasks}
    else:
        t0 = time.monotonic()
        lm = lmeval.run(a.lm_eval_tasks, a.base_url, model.get("model"), a.api_key,
                        python=a.lm_eval_python, model_type=a.lm_eval_model_type,
                        tokenizer=a.lm_eval_tokenizer, limit=a.lm_eval_limit, gguf=a.gguf, data=a.data,
                        hf_model=a.lm_eval_hf_model)
        timings["lm_eval_s"] = round(time.monotonic() - t0, 3)
        for task, res in lm.items():
            log(f"lm-eval {task}: {res.get('skipped') or res.get('metrics')}")
    timings["total_s"] = round(time.monotonic() - started, 3)

    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "model": model,
        "recipe": recipe,
        "dataset_manifest": manifest,
        "settings": {
            "question_set": {"path": str(qset.path), "sha256": qset.sha256},
            "categories": a.categories, "limit": a.limit, "temperature": a.temperature,
            "max_tokens": a.max_tokens, "system_prompt": a.system_prompt, "n_ctx": a.n_ctx,
            "ppl_n_ctx": a.ppl_n_ctx, "ppl_max_tokens": a.ppl_max_tokens,
            "data": str(a.data) if a.data else None,
            "lm_eval": {"tasks": a.lm_eval_tasks, "model_type": a.lm_eval_model_type,
                        "python": a.lm_eval_python, "limit": a.lm_eval_limit},
        },
        "environment": {"python": platform.python_version(), "platform": platform.platform()},
        "qa": qa,
        "judge": verdicts,
        "perplexity": ppl,
        "lm_eval": lm,
        "timings": timings,
        "out": str(out_path),
    }


def write_results(results: dict, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise EvalError(f"cannot write {path}: {exc.strerror}") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        results = evaluate(args, log)
        out = Path(results.pop("out"))
        write_results(results, out)
    except EvalError as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("evaluate: interrupted", file=sys.stderr)
        return 130
    log(f"wrote {out}")
    return 0
