"""Compare evaluated models: results JSONs (+ training logs) -> report.md and PNG plots.

One run is the base (the untuned model); every table shows each fine-tune next to it with
the difference. Training loss comes from the Trainer state an Axolotl run leaves in its
output dir (``trainer_state.json`` there or in its newest ``checkpoint-*`` folder).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .exceptions import EvalError

PLOTS = {
    "loss": "loss_curves.png",
    "perplexity": "perplexity.png",
    "qa": "qa_by_category.png",
}
# the metric shown for an lm-eval task, in order of preference
LM_EVAL_METRICS = ("acc_norm", "acc", "exact_match")


@dataclass
class Run:
    name: str
    results: dict
    source: Path
    loss: dict | None = None  # {"source", "train": [(step, loss)], "eval": [(step, loss)]}


# --- inputs -----------------------------------------------------------------------------


def load_results(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise EvalError(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise EvalError(f"{path} is not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise EvalError(f"{path} is not a results JSON (expected an object)")
    for key in ("name", "model", "qa", "perplexity"):
        if key not in data:
            raise EvalError(f"{path} is not a results JSON from evaluate.py (no '{key}')")
    return data


def _state_step(path: Path) -> int:
    try:
        return int(json.loads(path.read_text()).get("global_step") or 0)
    except (OSError, ValueError, AttributeError):
        return -1


def find_trainer_state(run_dir: Path) -> Path:
    """The most advanced trainer_state.json of an Axolotl output dir."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EvalError(f"training output dir {run_dir} does not exist")
    candidates = []
    if (run_dir / "trainer_state.json").is_file():
        candidates.append(run_dir / "trainer_state.json")
    for ckpt in run_dir.glob("checkpoint-*"):
        if re.fullmatch(r"checkpoint-\d+", ckpt.name) and (ckpt / "trainer_state.json").is_file():
            candidates.append(ckpt / "trainer_state.json")
    if not candidates:
        raise EvalError(f"no trainer_state.json in {run_dir} or its checkpoint-* folders")

    def rank(p: Path) -> tuple[int, int]:
        ckpt = re.fullmatch(r"checkpoint-(\d+)", p.parent.name)
        return (_state_step(p), int(ckpt.group(1)) if ckpt else 1 << 62)

    return max(candidates, key=rank)


def read_loss_history(run_dir: Path) -> dict:
    """Training and evaluation loss by step from the newest trainer state of a run."""
    path = find_trainer_state(run_dir)
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise EvalError(f"{path} is not readable JSON ({exc})") from None
    history = state.get("log_history") if isinstance(state, dict) else None
    if not isinstance(history, list):
        raise EvalError(f"{path} has no 'log_history' list")
    train, evals = [], []
    for i, entry in enumerate(history):
        if not isinstance(entry, dict):
            continue
        step = entry.get("step", i)
        if isinstance(entry.get("loss"), (int, float)):
            train.append((step, float(entry["loss"])))
        if isinstance(entry.get("eval_loss"), (int, float)):
            evals.append((step, float(entry["eval_loss"])))
    return {"source": str(path), "global_step": state.get("global_step"), "train": train, "eval": evals}


# --- formatting ---------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _pp(delta: float | None) -> str:
    return "—" if delta is None else f"{100 * delta:+.1f} pp"


def _ppl_delta(value: float | None, base: float | None) -> str:
    if value is None or base is None:
        return "—"
    return f"{value - base:+.3f} ({100 * (value - base) / base:+.1f}%)"


def _qa(run: Run) -> dict | None:
    qa = run.results.get("qa") or {}
    return qa if "accuracy" in qa else None


def _judge(run: Run) -> dict | None:
    j = run.results.get("judge") or {}
    return j if j.get("judged") else None


def _ppl(run: Run) -> float | None:
    p = run.results.get("perplexity") or {}
    v = p.get("ppl")
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _skip_reason(block: dict | None) -> str:
    return (block or {}).get("skipped") or "not measured"


def _lm_metric(res: dict | None) -> tuple[str, float] | None:
    metrics = (res or {}).get("metrics") or {}
    for name in LM_EVAL_METRICS:
        if isinstance(metrics.get(name), (int, float)):
            return name, float(metrics[name])
    return None


def _short(sha: str | None) -> str:
    return f"`{sha[:12]}`" if sha else "—"


# --- plots --------------------------------------------------------------------------------


def _pyplot():
    import matplotlib  # noqa: PLC0415 - slow to import; the backend is chosen first

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - slow to import; the backend is chosen first

    return plt


def plot_losses(runs: list[Run], path: Path) -> bool:
    with_loss = [r for r in runs if r.loss and (r.loss["train"] or r.loss["eval"])]
    if not with_loss:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(with_loss):
        assert run.loss is not None  # with_loss keeps the runs that have one
        c = colors[i % len(colors)]
        if run.loss["train"]:
            xs, ys = zip(*run.loss["train"])
            ax.plot(xs, ys, color=c, label=f"{run.name} train")
        if run.loss["eval"]:
            xs, ys = zip(*run.loss["eval"])
            ax.plot(xs, ys, color=c, linestyle="--", marker="o", label=f"{run.name} eval")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Training and evaluation loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_perplexity(runs: list[Run], path: Path) -> bool:
    pairs = [(r.name, _ppl(r)) for r in runs if _ppl(r) is not None]
    if not pairs:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4, 1.4 * len(pairs) + 2), 4))
    names, values = zip(*pairs)
    colors = ["#999999" if n == runs[0].name else "#1f77b4" for n in names]  # base in grey
    cis: list[Any] = [(r.results.get("perplexity") or {}).get("ci95") for r in runs if _ppl(r) is not None]
    err = None
    if all(cis):  # 95 % intervals as error bars
        err = [[v - c[0] for v, c in zip(values, cis)], [c[1] - v for v, c in zip(values, cis)]]
    bars = ax.bar(names, values, color=colors, yerr=err, capsize=4 if err else 0)
    ax.bar_label(bars, fmt="%.2f")
    ax.set_ylabel("perplexity (lower is better)")
    ax.set_title("Held-out perplexity")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_qa(runs: list[Run], categories: list[str], path: Path) -> bool:
    scored = [r for r in runs if _qa(r)]
    if not scored:
        return False
    plt = _pyplot()

    groups = ["overall", *categories]
    x = np.arange(len(groups))
    width = 0.8 / len(scored)
    fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(groups) + 2), 4.5))
    for i, run in enumerate(scored):
        qa = _qa(run)
        assert qa is not None  # scored keeps the runs that have QA results
        vals = [qa["accuracy"]] + [
            (qa["by_category"].get(c) or {}).get("accuracy") for c in categories
        ]
        ax.bar(x + (i - (len(scored) - 1) / 2) * width,
               [100 * v if v is not None else 0 for v in vals], width, label=run.name)
    ax.set_xticks(x, [g.replace("_", "\n") for g in groups], fontsize="small")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Physics QA accuracy by category")
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --- report -------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def build_report(runs: list[Run], out_dir: Path, title: str = "QwenPhysics model comparison") -> str:
    """Write report.md and the plots into out_dir; returns the report text.

    runs[0] is the base model.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    base, tuned = runs[0], runs[1:]
    lines = [f"# {title}", ""]
    lines.append(f"Base model: **{base.name}**. Fine-tunes: "
                 + (", ".join(f"**{r.name}**" for r in tuned) or "none") + ".")
    lines.append("Deltas are fine-tune minus base: higher accuracy and lower perplexity are better.")
    lines.append("")

    # provenance
    lines += ["## Runs", ""]
    rows = []
    for r in runs:
        res = r.results
        model = res.get("model") or {}
        recipe = (res.get("recipe") or {}).get("name") or "—"
        manifest = (res.get("dataset_manifest") or {}).get("sha256")
        rows.append([r.name, str(model.get("model", "—")), recipe, _short(manifest),
                     _short((model.get("gguf") or {}).get("sha256")), res.get("created", "—")])
    lines += _table(["Run", "Model", "Recipe", "Dataset manifest", "GGUF SHA-256", "Evaluated"], rows)
    lines.append("")
    qsets = {((r.results.get("settings") or {}).get("question_set") or {}).get("sha256") for r in runs if _qa(r)}
    asked = {frozenset(q.get("id") for q in qa.get("questions", [])) for qa in map(_qa, runs) if qa}
    if len(qsets) > 1:
        lines += ["> Warning: the runs were asked different question sets; QA accuracies are not "
                  "directly comparable.", ""]
    elif len(asked) > 1:
        lines += ["> Warning: the runs answered different subsets of the questions (--limit or "
                  "--categories); compare categories that both answered in full.", ""]

    # QA
    lines += ["## Physics QA accuracy", ""]
    base_qa = _qa(base)
    rows = []
    for r in runs:
        qa = _qa(r)
        if qa is None:
            rows.append([r.name, "—", "—", _skip_reason(r.results.get("qa"))])
            continue
        delta = None if (r is base or base_qa is None) else qa["accuracy"] - base_qa["accuracy"]
        rows.append([r.name, f"{qa['correct']}/{qa['total']}", _pct(qa["accuracy"]),
                     "base" if r is base else _pp(delta)])
    lines += _table(["Run", "Correct", "Accuracy", "Δ vs base"], rows)
    lines.append("")
    categories = sorted({c for qa in map(_qa, runs) if qa for c in qa["by_category"]})
    if categories:
        lines += ["### By category", ""]
        header = ["Category", f"{base.name} (base)"] + [f"{r.name} (Δ)" for r in tuned]
        rows = []
        for c in categories:
            b = ((base_qa or {}).get("by_category", {}).get(c) or {}).get("accuracy")
            row = [c, _pct(b)]
            for r in tuned:
                v = ((_qa(r) or {}).get("by_category", {}).get(c) or {}).get("accuracy")
                d = None if v is None or b is None else v - b
                row.append(f"{_pct(v)} ({_pp(d)})")
            rows.append(row)
        lines += _table(header, rows)
        lines.append("")
    if plot_qa(runs, categories, out_dir / PLOTS["qa"]):
        lines += [f"![QA accuracy by category]({PLOTS['qa']})", ""]

    lines += _judge_section(runs)

    # perplexity
    lines += ["## Held-out perplexity", ""]
    base_ppl = _ppl(base)
    base_ci = (base.results.get("perplexity") or {}).get("ci95")
    rows = []
    for r in runs:
        p = r.results.get("perplexity") or {}
        v = _ppl(r)
        if v is None:
            rows.append([r.name, "—", "—", "—", "—", "—", _skip_reason(p)])
            continue
        ci = p.get("ci95")
        note = ""
        if ci and r is not base and base_ci and (ci[1] < base_ci[0] or ci[0] > base_ci[1]):
            note = "interval apart from the base's"
        elif ci and r is not base and base_ci:
            note = "interval overlaps the base's: no clear difference"
        rows.append([r.name, f"{v:.3f}", f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "—",
                     "base" if r is base else _ppl_delta(v, base_ppl),
                     str(p.get("tokens", "—")), str(p.get("documents", "—")), note])
    lines += _table(["Run", "Perplexity", "95 % interval", "Δ vs base", "Tokens", "Documents", "Note"], rows)
    lines += ["", "Perplexity of the paper text only (answers of chat lines, whole completion lines), on "
              "papers no context trained on; the interval is a bootstrap over documents.", ""]
    measured = [r.results["perplexity"] for r in runs if _ppl(r) is not None]
    if len({(p.get("test_sha256"), p.get("n_ctx"), p.get("max_tokens")) for p in measured}) > 1:
        lines += ["> Warning: perplexities were measured on different test files or settings "
                  "and are not directly comparable.", ""]
    if plot_perplexity(runs, out_dir / PLOTS["perplexity"]):
        lines += [f"![Perplexity]({PLOTS['perplexity']})", ""]

    # lm-eval
    tasks = sorted({t for r in runs for t in (r.results.get("lm_eval") or {})})
    if tasks:
        lines += ["## lm-eval tasks", ""]
        header = ["Task", f"{base.name} (base)"] + [f"{r.name} (Δ)" for r in tuned]
        rows = []
        reasons: dict[str, int] = {}
        for t in tasks:
            b = _lm_metric((base.results.get("lm_eval") or {}).get(t))
            row = [t]
            for r in runs:
                task_res = (r.results.get("lm_eval") or {}).get(t)
                m = _lm_metric(task_res)
                if m is None:
                    reason = _skip_reason(task_res)
                    reasons.setdefault(reason, len(reasons) + 1)
                    row.append(f"skipped [{reasons[reason]}]")
                elif r is base or b is None:
                    row.append(f"{m[1]:.3f} ({m[0]})")
                else:
                    row.append(f"{m[1]:.3f} ({m[1] - b[1]:+.3f})")
            rows.append(row)
        lines += _table(header, rows)
        lines.append("")
        lines += [f"[{n}] {reason}" for reason, n in reasons.items()]
        if reasons:
            lines.append("")

    # training
    lines += ["## Training loss", ""]
    with_loss = [r for r in runs if r.loss]
    if with_loss:
        rows = []
        for r in with_loss:
            assert r.loss is not None  # with_loss keeps the runs that have one
            tr, ev = r.loss["train"], r.loss["eval"]
            rows.append([r.name, str(r.loss.get("global_step") or (tr[-1][0] if tr else "—")),
                         f"{tr[-1][1]:.4f}" if tr else "—", f"{ev[-1][1]:.4f}" if ev else "—",
                         f"{min(v for _, v in ev):.4f}" if ev else "—", f"`{r.loss['source']}`"])
        lines += _table(["Run", "Steps", "Final train loss", "Final eval loss", "Best eval loss",
                         "Source"], rows)
        lines.append("")
        if plot_losses(runs, out_dir / PLOTS["loss"]):
            lines += [f"![Training and evaluation loss]({PLOTS['loss']})", ""]
    else:
        lines += ["No training output dir was given (`--train-dir NAME=DIR`).", ""]

    text = "\n".join(lines).rstrip("\n") + "\n"
    (out_dir / "report.md").write_text(text, encoding="utf-8")
    return text


def _judge_section(runs: list[Run]) -> list[str]:
    """The judge's verdicts beside the automatic scorers', with how often the two agree."""
    lines = ["## Judge", ""]
    judged = [r for r in runs if _judge(r)]
    if not judged:
        return lines + ["No run was graded by a judge (`evaluate.py --judge-url URL` or `--judge-gguf FILE`): "
                        "the accuracies above come from the automatic scorers alone.", ""]
    rows = []
    for r in runs:
        j = _judge(r)
        if j is None:
            reason = (r.results.get("judge") or {}).get("skipped") or "no answer was judged"
            rows.append([r.name, "—", "—", "—", "—", "—", "—", reason])
            continue
        a = j.get("agreement") or {}
        failed = sum((j.get("failed") or {}).values())
        kappa = a.get("kappa")
        rows.append([r.name, f"{j['correct']}/{j['judged']}", f"{j.get('partly_correct', 0)}",
                     _pct(j.get("accuracy")), "—" if j.get("mean_credit") is None else f"{j['mean_credit']:.2f}",
                     f"{_pct(a.get('rate'))} of {a.get('n', 0)}", "—" if kappa is None else f"{kappa:.2f}",
                     f"{failed} not graded" if failed else ""])
    lines += _table(["Run", "Judged correct", "Partly", "Judge accuracy", "Mean credit", "Agrees with scorers",
                     "Cohen's κ", "Note"], rows)
    lines += ["", "The judge reads each question, its reference answer and the model's answer under a written "
              "rubric; *correct* counts 1, *partly correct* 0.5 in the mean credit. Agreement: the share of "
              "answers on which the judge (correct vs not) and the automatic scorer (right vs wrong) say the "
              "same; κ discounts the agreement expected by chance.", ""]
    judges = {((r.results.get("judge") or {}).get("judge") or {}).get("identity") for r in judged}
    rubrics = {(((r.results.get("judge") or {}).get("judge") or {}).get("rubric") or {}).get("sha256")
               for r in judged}
    if len(judges) > 1 or len(rubrics) > 1:
        lines += ["> Warning: the runs were graded by different judges or rubrics; their judge accuracies "
                  "are not directly comparable.", ""]
    return lines


# --- command line -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="compare.py",
        description="Compare evaluate.py results: report.md with deltas vs a base model, and plots.",
    )
    p.add_argument("results", nargs="+", type=Path, help="results JSONs from evaluate.py")
    p.add_argument("--base", help="name of the base run (default: the first results file)")
    p.add_argument("--train-dir", action="append", default=[], metavar="NAME=DIR",
                   help="Axolotl output dir of run NAME, for its loss curves (repeatable)")
    p.add_argument("--out", type=Path, required=True, help="output dir for report.md and PNGs")
    p.add_argument("--title", default="QwenPhysics model comparison")
    return p


def collect_runs(paths: list[Path], base: str | None, train_dirs: list[str]) -> list[Run]:
    runs: list[Run] = []
    for path in paths:
        data = load_results(path)
        name = str(data.get("name") or Path(path).stem)
        if any(r.name == name for r in runs):
            raise EvalError(f"two results are named {name!r}; give one another --name in evaluate.py")
        runs.append(Run(name=name, results=data, source=Path(path)))
    by_name = {r.name: r for r in runs}
    for spec in train_dirs:
        name, sep, directory = spec.partition("=")
        if not sep or not name or not directory:
            raise EvalError(f"--train-dir {spec!r}: expected NAME=DIR")
        if name not in by_name:
            raise EvalError(f"--train-dir {spec!r}: no run named {name!r} (runs: {', '.join(by_name)})")
        by_name[name].loss = read_loss_history(Path(directory))
    if base is not None:
        if base not in by_name:
            raise EvalError(f"--base {base!r}: no run of that name (runs: {', '.join(by_name)})")
        runs.sort(key=lambda r: r.name != base)
    return runs


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        runs = collect_runs(args.results, args.base, args.train_dir)
        build_report(runs, args.out, args.title)
    except EvalError as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"compare: cannot write to {args.out}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"wrote {args.out / 'report.md'}", file=sys.stderr)
    return 0
