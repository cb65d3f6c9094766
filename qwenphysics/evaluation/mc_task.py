"""A physics multiple-choice task in lm-evaluation-harness's own format, written from held-out papers.

`qwenphysics_title_choice`: given the abstract of a paper from a dataset's `test` split (papers
no training context saw), pick its title among four: its own and three other held-out papers'.
The title and abstract of each paper are read back out of the test lines through the spec's
templates (recorded in the dataset's manifest), so any chat or completion context built from
metadata can supply the task. Distractors and the order of the options are drawn from a seeded
generator: the same data gives the same task.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import yaml

from .exceptions import EvalError

TASK = "qwenphysics_title_choice"
N_CHOICES = 4
# placeholders that carry a paper's text; the abstract may come in two parts
_FIELDS = {"title", "abstract", "abstract_opening", "abstract_rest"}


def _pattern(template: str) -> re.Pattern:
    """A template's text as a regex with one named group per placeholder (repeats must agree)."""
    out, seen, pos = [], set(), 0
    for m in re.finditer(r"\{(\w+)\}", template):
        out.append(re.escape(template[pos:m.start()]))
        name = m.group(1)
        if name in seen:
            out.append(f"(?P={name})")
        else:
            out.append(f"(?P<{name}>.+?)")
            seen.add(name)
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out), re.S)


def _paper(fields: dict) -> tuple[str, str] | None:
    title = (fields.get("title") or "").strip()
    abstract = fields.get("abstract")
    if abstract is None and fields.get("abstract_opening") and fields.get("abstract_rest"):
        abstract = fields["abstract_opening"].strip() + " " + fields["abstract_rest"].strip()
    if not title or not abstract:
        return None
    return title, abstract.strip()


def papers(data_dir: Path) -> list[tuple[str, str, str]]:
    """(id, title, abstract) of each held-out paper whose test line holds both."""
    data_dir = Path(data_dir)
    try:
        spec = json.loads((data_dir / "manifest.json").read_text(encoding="utf-8"))["spec"]["resolved"]
    except (OSError, ValueError, KeyError):
        raise EvalError(f"{data_dir} has no dataset manifest: pass a folder written by dataset_builders") from None
    chat = {t["id"]: (_pattern(t["user"]), _pattern(t["assistant"])) for t in spec.get("templates") or []}
    text = _pattern(spec.get("text") or "{title}\n\n{abstract}")
    out: dict[str, tuple[str, str, str]] = {}
    with open(data_dir / "test.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            row = json.loads(line)
            fields: dict = {}
            if isinstance(row.get("messages"), list) and row.get("template") in chat:
                user_re, asst_re = chat[row["template"]]
                turns = {m["role"]: m["content"] for m in row["messages"]}
                mu = user_re.fullmatch(turns.get("user", ""))
                ma = asst_re.fullmatch(turns.get("assistant", ""))
                if mu and ma:
                    fields = {**mu.groupdict(), **ma.groupdict()}
            elif isinstance(row.get("text"), str):
                mt = text.fullmatch(row["text"])
                fields = mt.groupdict() if mt else {}
            found = _paper({k: v for k, v in fields.items() if k in _FIELDS})
            pid = str(row.get("id") or len(out))
            if found and pid not in out:
                out[pid] = (pid, *found)
    return sorted(out.values())


def write_task(data_dir: Path, out_dir: Path, *, limit: int | None = None, seed: int = 0) -> tuple[Path, int]:
    """Write the items (JSONL) and the lm-eval task config (YAML) into `out_dir`; returns the
    folder to pass as lm-eval's include path and the number of items."""
    items = papers(data_dir)
    titles = sorted({t for _, t, _ in items})
    if len(titles) < N_CHOICES:
        raise EvalError(f"{data_dir}/test.jsonl yields {len(titles)} held-out papers with a title and an "
                        f"abstract; the title-choice task needs at least {N_CHOICES}")
    rng = random.Random(seed)
    if limit is not None:
        items = items[:limit]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = out_dir / f"{TASK}.jsonl"
    with open(data, "w", encoding="utf-8") as fh:
        for pid, title, abstract in items:
            others = rng.sample([t for t in titles if t != title], N_CHOICES - 1)
            choices = [title, *others]
            rng.shuffle(choices)
            fh.write(json.dumps({"id": pid, "abstract": abstract, "choices": choices,
                                 "gold": choices.index(title)}, ensure_ascii=False) + "\n")
    config = {
        "task": TASK,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "Abstract of a physics paper: {{abstract}}\n\nTitle of the paper:",
        "doc_to_choice": "choices",
        "doc_to_target": "gold",
        "target_delimiter": " ",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                        {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0, "source": str(Path(data_dir).resolve() / "test.jsonl")},
    }
    (out_dir / f"{TASK}.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True),
                                          encoding="utf-8")
    return out_dir, len(items)
