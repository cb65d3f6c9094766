"""Atomic, deterministic output: split files, manifest.json, a data card.

Everything is written into a hidden `.<name>.partial-<pid>` folder next to the output and
renamed into place only when complete, so an interrupted run never leaves files that look
finished (`qwenphysics.core.staging`). `--out` is replaced only when it is empty or holds an
earlier build of this project (its `manifest.json` names the files it wrote); anything else
there is refused before any work. Nothing time- or machine-dependent goes into the files: the
same inputs give byte-identical outputs.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import orjson

from qwenphysics.core.staging import Staging, check_target
from qwenphysics.qwen_tokenizer import token_counter

from .split import SPLITS, TEST_BP, VALIDATION_BP

TOKEN_SAMPLE = 500  # examples per split whose tokens are counted exactly (the first N)
BUILDER_NAME = "qwenphysics.dataset_builders"


def build_files(folder: Path) -> set[str] | None:
    """The files an earlier build wrote in `folder` (from its manifest), or None when the
    folder holds no build of this project."""
    try:
        m = json.loads((Path(folder) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict) or not isinstance(m.get("builder"), dict) or m["builder"].get("name") != BUILDER_NAME:
        return None
    files = {"manifest.json", "README.md"} | {k for k in m.get("checksums") or {} if isinstance(k, str)}
    for c in m.get("components") or []:
        path = str(c.get("path", "")).strip("/") if isinstance(c, dict) else ""
        if path:
            files |= {f"{path}/manifest.json", f"{path}/README.md"}
    return files


def check_out(out: Path, inputs: Iterable[str] = (), flag: str = "--out") -> None:
    """Refuse an `--out` a build must not replace or cannot create (one line, before any work)."""
    check_target(out, build_files, flag=flag, inputs=inputs)


def staging(out: Path, inputs: Iterable[str] = ()) -> Staging:
    """The hidden folder a build of `out` writes into (see the module docstring)."""
    return Staging(out, build_files, inputs=inputs)


class SplitWriter:
    def __init__(self, out: Path, inputs: Iterable[str] = ()):
        self.out = Path(out)
        self.staging = staging(self.out, inputs)
        self.tmp = self.staging.path
        self._files = {}
        try:
            for s in SPLITS:
                self._files[s] = open(self.tmp / f"{s}.jsonl", "wb", buffering=1 << 20)
        except BaseException:
            self.abort()
            raise
        self._sha = {s: hashlib.sha256() for s in SPLITS}
        self._buf: dict[str, list[bytes]] = {s: [] for s in SPLITS}
        self.lines: Counter[str] = Counter()
        self.papers: Counter[str] = Counter()
        self.samples: dict[str, list[dict]] = {s: [] for s in SPLITS}
        # called once per split when its token sample (the first TOKEN_SAMPLE examples) is complete
        self.on_sample_full: Callable[[str, list[dict]], None] | None = None

    def write(self, split: str, examples: list[dict]) -> None:
        self.papers[split] += 1
        buf = self._buf[split]
        samples = self.samples[split]
        for ex in examples:
            buf.append(orjson.dumps(ex))
            if len(samples) < TOKEN_SAMPLE:
                samples.append(ex)
                if len(samples) == TOKEN_SAMPLE and self.on_sample_full is not None:
                    self.on_sample_full(split, samples)
        self.lines[split] += len(examples)
        if len(buf) >= 4096:
            self._flush(split)

    def append_lines(self, split: str, data: bytes | memoryview, papers: int, lines: int) -> None:
        """Append already-serialised lines (`data` ends with a newline) for `papers` papers."""
        self._flush(split)
        self._files[split].write(data)
        self._sha[split].update(data)
        self.papers[split] += papers
        self.lines[split] += lines
        samples = self.samples[split]
        if len(samples) < TOKEN_SAMPLE:
            for line in bytes(data).split(b"\n", TOKEN_SAMPLE - len(samples))[:TOKEN_SAMPLE - len(samples)]:
                if line:
                    samples.append(orjson.loads(line))
            if len(samples) == TOKEN_SAMPLE and self.on_sample_full is not None:
                self.on_sample_full(split, samples)

    def _flush(self, split: str) -> None:
        buf = self._buf[split]
        if buf:
            data = b"\n".join(buf) + b"\n"
            self._files[split].write(data)
            self._sha[split].update(data)
            buf.clear()

    def close_files(self) -> dict[str, str]:
        for s in SPLITS:
            self._flush(s)
            self._files[s].close()
        return {f"{s}.jsonl": self._sha[s].hexdigest() for s in SPLITS}

    def write_text(self, name: str, text: str) -> None:
        (self.tmp / name).write_text(text, encoding="utf-8")

    def commit(self) -> None:
        """Put the finished folder in place of `out` (only an earlier build's files go)."""
        self.staging.commit()

    def abort(self) -> None:
        for f in self._files.values():
            if not f.closed:
                f.close()
        self.staging.abort()


def render_for_tokens(ex: dict) -> str:
    """The text a model sees for an example: Qwen's ChatML for chat, the text for completion."""
    if "messages" in ex:
        return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in ex["messages"])
    return ex["text"]


class TokenCounter:
    """Loads the Qwen2.5 token counter (`qwenphysics.qwen_tokenizer.token_counter`) on a
    thread while a build runs, and counts each split's token sample as soon as it is full."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._count = None
        self._early: dict[str, threading.Thread] = {}
        self._lengths: dict[str, tuple[int, list[int]]] = {}

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._load, name="load-token-counter", daemon=True)
            self._thread.start()

    def _load(self) -> None:
        try:
            self._count = token_counter()
        except Exception:  # token statistics are optional; a broken install only loses them
            self._count = None

    def get(self):
        """The counter (`texts -> token counts`), or None when it cannot be loaded."""
        if self._thread is None:
            self._load()
        else:
            self._thread.join()
        return self._count

    def count_soon(self, split: str, examples: list[dict]) -> None:
        """Count the tokens of a split's finished sample on a thread, while the build goes on."""
        if split in self._early:
            return
        def run() -> None:
            counted = self._counted(examples)
            if counted is not None:
                self._lengths[split] = (len(examples), counted)

        t = self._early[split] = threading.Thread(target=run, name=f"count-tokens-{split}", daemon=True)
        t.start()

    def lengths(self, split: str, examples: list[dict]) -> list[int] | None:
        """Token counts of `examples` (from `count_soon` when it counted this very sample)."""
        early = self._early.get(split)
        if early is not None:
            early.join()
            done = self._lengths.get(split)
            if done is not None and done[0] == len(examples):
                return done[1]
        return self._counted(examples)

    def _counted(self, examples: list[dict]) -> list[int] | None:
        count = self.get()
        if count is None:
            return None
        return count([render_for_tokens(x) for x in examples])


def token_stats(samples: dict[str, list[dict]], lines: Counter, counter: TokenCounter | None = None) -> dict | None:
    counter = counter or TokenCounter()
    if counter.get() is None:
        return None
    stats = {"tokenizer": "Qwen2.5 (qwen-tokenizer BPE ranks)", "sampled_per_split": TOKEN_SAMPLE}
    for split, exs in samples.items():
        if not exs:
            stats[split] = {"examples_sampled": 0}
            continue
        counted = counter.lengths(split, exs)
        assert counted is not None  # the counter loaded (checked above)
        lens = sorted(counted)
        mean = sum(lens) / len(lens)
        stats[split] = {
            "examples_sampled": len(lens),
            "mean": round(mean, 1),
            "p50": lens[len(lens) // 2],
            "p95": lens[min(len(lens) - 1, int(len(lens) * 0.95))],
            "max": lens[-1],
            "total_estimate": int(round(mean * lines[split])),
        }
    return stats


def manifest_json(manifest: dict) -> str:
    return json.dumps(manifest, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def data_card(manifest: dict) -> str:
    spec = manifest["spec"]
    c = manifest["counts"]
    lines = [
        f"# Dataset: {spec['name']}",
        "",
        spec.get("description") or "",
        "",
        f"Built by `python -m dataset_builders build --spec {spec['name']}` from:",
        "",
        *[f"- `{i['path']}` ({i.get('bytes', '?')} bytes)" for i in manifest["inputs"]],
        "",
        "## Contents",
        "",
        f"Format: `{spec['format']}` "
        + ("(`messages` for Axolotl's `chat_template` type)" if spec["format"] == "chat"
           else "(`text` for Axolotl's `completion` type)"),
        "",
        "| split | papers | examples | sha256 |",
        "|---|---:|---:|---|",
        *[f"| {s} | {c['papers'][s]} | {c['examples'][s]} | `{manifest['checksums'][s + '.jsonl'][:16]}…` |"
          for s in SPLITS],
        "",
        f"Splits are by a hash of the base arXiv id ({VALIDATION_BP / 100:g}% validation, "
        f"{TEST_BP / 100:g}% test), identical across every QwenPhysics training context.",
        "",
        "## What was dropped",
        "",
        f"Read {c['read']} records; kept {c['kept']}.",
        "",
        "| reason | records |",
        "|---|---:|",
        *[f"| {r} | {n} |" for r, n in c["dropped"].items()],
        "",
    ]
    ts = manifest.get("tokens")
    if ts:
        lines += ["## Tokens (Qwen2.5 tokenizer, sampled)", "", "| split | mean | p50 | p95 | max | total (est.) |",
                  "|---|---:|---:|---:|---:|---:|"]
        for s in SPLITS:
            t = ts.get(s, {})
            if t.get("examples_sampled"):
                lines.append(f"| {s} | {t['mean']} | {t['p50']} | {t['p95']} | {t['max']} | {t['total_estimate']} |")
        lines.append("")
    lines += [
        "## Licences",
        "",
        "arXiv metadata (titles, abstracts) is CC0. Full texts keep their authors' licences; the "
        "spec's `licenses` filter decides which papers enter (`redistributable` = CC BY, CC BY-SA, CC0).",
        "",
    ]
    return "\n".join(lines)
