"""`source: mixture` specs: several contexts at declared ratios, one subfolder each.

1. Every component spec is built whole into `<work>/components/<name>/` (full-text ones over
   one shared shard map), while a tally records each example's split, Qwen2.5 tokens
   (exact: ChatML for chat, the chunker's count for chunks) and a 64-bit hash of
   `id + chunk/template`.
2. With `unit` = tokens (or examples) of the train split, the component with the least units
   per weight is kept whole and each other one keeps the fraction that brings it to its
   weight. In every split the examples with the smallest hashes are kept, up to that
   fraction of the split's units: deterministic, independent of input order, and each paper
   stays in the split every context gives it.
3. `<out>/<component>/{train,validation,test}.jsonl` + `manifest.json` + `README.md`, and a
   top-level `manifest.json` (targets, achieved shares in tokens and examples, checksums) and
   `README.md`, all written into a hidden folder and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import pipeline
from .. import spec as spec_mod
from ..contexts import render as render_metadata
from ..output import BUILDER_NAME, check_out, data_card, manifest_json, render_for_tokens, staging
from ..readers import check_metadata
from ..records import InputError
from ..spec import Spec
from ..split import SPLITS, TEST_BP, VALIDATION_BP, split_of_bucket
from .atoms import exact_token_stats, require_tokenizer
from .engine import Engine
from .inputs import classify
from .mapreduce import build_context, card_notes, default_work_dir, map_sources, prepare, work_area
from .remote import is_url

UNITS = ("tokens", "examples")


@dataclass
class MixtureResult:
    out: Path
    manifest: dict
    seconds: float


def example_hash(ex: dict) -> int:
    key = f"{ex['id']}\0{ex.get('chunk', ex.get('template', ''))}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


class Tally:
    """Per split, in write order: example hash, tokens, paper ordinal."""

    def __init__(self, tok):
        self.tok = tok
        self.hashes = {s: [] for s in SPLITS}
        self.tokens = {s: [] for s in SPLITS}
        self.paper = {s: [] for s in SPLITS}
        self._pending: list[tuple[str, int, str]] = []  # (split, index, text to count)
        self._papers = 0

    def __call__(self, spec, p, bucket, examples, tokens=None) -> None:
        s = split_of_bucket(bucket)
        self._papers += 1
        for k, ex in enumerate(examples):
            self.hashes[s].append(example_hash(ex))
            self.paper[s].append(self._papers)
            if tokens is not None:
                self.tokens[s].append(tokens[k])
            else:
                self._pending.append((s, len(self.tokens[s]), render_for_tokens(ex)))
                self.tokens[s].append(-1)
        if len(self._pending) >= 2048:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            enc = self.tok.encode_batch_fast([t for _, _, t in self._pending], add_special_tokens=False)
            for (s, i, _), e in zip(self._pending, enc):
                self.tokens[s][i] = len(e.ids)
            self._pending.clear()

    def finish(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        self._flush()
        return {s: (np.array(self.hashes[s], dtype=np.uint64), np.array(self.tokens[s], dtype=np.int64),
                    np.array(self.paper[s], dtype=np.int64)) for s in SPLITS}


def _components(spec: Spec) -> tuple[list[tuple[str, Spec, float]], str]:
    raw = spec.options.get("components")
    unit = spec.options.get("unit", "tokens")
    if unit not in UNITS:
        raise InputError(f"spec {spec.name}: options.unit must be one of {UNITS}, not {unit!r}")
    if not isinstance(raw, list) or not raw:
        raise InputError(f"spec {spec.name}: options.components must list {{spec: <name>, weight: <number>}}")
    out, names = [], set()
    for i, c in enumerate(raw):
        if not isinstance(c, dict) or "spec" not in c or not isinstance(c.get("weight"), (int, float)) \
                or c["weight"] <= 0:
            raise InputError(f"spec {spec.name}: components[{i}] needs spec: <name> and weight: <positive number>")
        s = spec_mod.load(str(c["spec"]))
        if s.source == "mixture":
            raise InputError(f"spec {spec.name}: component {s.name} is itself a mixture")
        if s.name in names:
            raise InputError(f"spec {spec.name}: component {s.name} listed twice")
        names.add(s.name)
        out.append((s.name, s, float(c["weight"])))
    return out, unit


def _select(hashes: np.ndarray, units: np.ndarray, fraction: float) -> np.ndarray:
    """Mask of the examples kept: smallest hashes first, up to `fraction` of the units."""
    n = len(hashes)
    if fraction >= 1.0 or n == 0:
        return np.ones(n, dtype=bool)
    order = np.argsort(hashes, kind="stable")
    cum = np.cumsum(units[order])
    target = fraction * cum[-1]
    k = int(np.searchsorted(cum, target))  # cum[k] >= target
    if k > 0 and abs(cum[k - 1] - target) <= abs(cum[min(k, n - 1)] - target):
        k -= 1  # the closer of the two neighbours
    keep = np.zeros(n, dtype=bool)
    keep[order[: k + 1]] = True
    return keep


def build_mixture(spec: Spec, inputs: list[str], out: Path, *, metadata: Sequence[str] = (), workers: int = 1,
                  work_dir: str | Path | None = None, limit: int | None = None, progress: bool = False,
                  hash_inputs: bool = True, log=None, engine: Engine | None = None) -> MixtureResult | None:
    """The mixture's components into `out`; None when the shard map was handed to Slurm."""
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    engine = engine or Engine(workers=workers)
    engine.check()
    t0 = time.perf_counter()
    out = Path(out)
    all_inputs = list(inputs) + list(metadata)
    check_out(out, all_inputs)
    if work_dir is not None and is_url(str(work_dir)):
        raise InputError(f"spec {spec.name} builds its components in the work dir: give a local --work-dir")
    work_dir = Path(work_dir) if work_dir else default_work_dir(out)
    comps, unit = _components(spec)
    tok = require_tokenizer()
    full_text = [s for _, s, _ in comps if s.source == "fulltext"]
    if full_text:
        keys = {(repr(s.options.get("limits") or {}), bool(s.options.get("keep_appendix", False))) for s in full_text}
        if len(keys) > 1:
            raise InputError(f"spec {spec.name}: full-text components must share options.limits and keep_appendix "
                             "(they share one shard map)")
        src = prepare(list(inputs), list(metadata), all(s.options.get("require_metadata", True) for s in full_text),
                      engine)
    else:
        src = classify(list(inputs), list(metadata), months=engine.months, access=engine.access)
        check_metadata(src.metadata)
    if any(s.source == "metadata" for _, s, _ in comps) and not src.metadata:
        raise InputError("no metadata among the inputs: the abstract components need the Kaggle snapshot or "
                         "OAI-PMH pages (--input or --metadata)")
    with work_area(work_dir, all_inputs):
        results = map_sources(src, full_text[0], work_dir, engine, log) if full_text else []
        if results is None:
            return None
        return _build_components(spec, comps, unit, tok, src, results, work_dir, out, all_inputs, limit=limit,
                                 progress=progress, hash_inputs=hash_inputs, log=log, t0=t0)


def _build_components(spec: Spec, comps, unit: str, tok, src, results, work_dir: Path, out: Path,
                      all_inputs: list[str], *, limit, progress, hash_inputs, log, t0) -> MixtureResult:
    built = {}
    for name, s, w in comps:
        tally = Tally(tok)
        cdir = work_dir / "components" / name
        if s.source == "fulltext":
            res = build_context(s, src, results, work_dir, cdir, inputs=all_inputs, limit=limit,
                                progress=progress, hash_inputs=hash_inputs, tally=tally)
        else:
            def render(sp, p, b, _tally=tally):
                ex = render_metadata(sp, p, b)
                _tally(sp, p, b, ex)
                return ex

            # exact token counts come from the tally
            res = pipeline.build(s, src.metadata, cdir, examples=pipeline.Examples(render, lambda: None), limit=limit,
                                 progress=progress, hash_inputs=hash_inputs)
        built[name] = (s, w, res.manifest, tally.finish(), cdir)
        c = res.manifest["counts"]
        log(f"component {name}: read {c['read']}, kept {c['kept']} papers, "
            f"{sum(c['examples'].values())} examples")
    manifest = _write(spec, unit, built, out, all_inputs)
    return MixtureResult(out=out, manifest=manifest, seconds=time.perf_counter() - t0)


def _units(tally_split, unit: str) -> np.ndarray:
    hashes, tokens, _ = tally_split
    return tokens if unit == "tokens" else np.ones(len(hashes), dtype=np.int64)


def _write(spec: Spec, unit: str, built: dict, out: Path, inputs: list[str]) -> dict:
    # fractions from the train split
    totals = {name: int(_units(t["train"], unit).sum()) for name, (_, _, _, t, _) in built.items()}
    weights = {name: w for name, (_, w, _, _, _) in built.items()}
    live = [n for n in built if totals[n] > 0]
    scale = min((totals[n] / weights[n] for n in live), default=0.0)
    fraction = {n: (min(1.0, weights[n] * scale / totals[n]) if totals[n] else 0.0) for n in built}

    stage = staging(out, inputs)
    tmp = stage.path
    try:
        comp_info = []
        checksums = {}
        for name, (s, w, man, tally, cdir) in built.items():
            d = tmp / name
            d.mkdir()
            kept_ex, kept_tok, kept_papers, exact = {}, {}, {}, {}
            man = json.loads(json.dumps(man))
            for split in SPLITS:
                hashes, tokens, papers = tally[split]
                keep = _select(hashes, _units(tally[split], unit), fraction[name])
                sha = hashlib.sha256()
                with open(cdir / f"{split}.jsonl", "rb") as src, open(d / f"{split}.jsonl", "wb") as dst:
                    for i, line in enumerate(src):
                        if keep[i]:
                            dst.write(line)
                            sha.update(line)
                exact[split] = tokens[keep]
                checksums[f"{name}/{split}.jsonl"] = sha.hexdigest()
                man["checksums"][f"{split}.jsonl"] = sha.hexdigest()
                kept_ex[split] = int(keep.sum())
                kept_tok[split] = int(tokens[keep].sum())
                kept_papers[split] = int(len(np.unique(papers[keep])))
            c = man["counts"]
            before = {"examples": dict(c["examples"]), "papers": dict(c["papers"])}
            c["examples"], c["papers"] = dict(kept_ex), dict(kept_papers)
            man["tokens"] = exact_token_stats(exact)
            man["mixture"] = {"mixture": spec.name, "weight": w, "fraction_kept": round(fraction[name], 6),
                              "before_subsampling": before, "tokens": kept_tok}
            (d / "manifest.json").write_text(manifest_json(man), encoding="utf-8")
            card = data_card(man)
            if "fulltext" in man:
                card = card.rstrip("\n") + "\n\n" + card_notes(man)
            card += (f"\n## Part of the mixture `{spec.name}`\n\nWeight {w}; kept {fraction[name]:.4f} of the "
                     f"examples (smallest hashes of id and chunk/template), in every split.\n")
            (d / "README.md").write_text(card, encoding="utf-8")
            comp_info.append({"name": name, "spec": s.name, "format": s.format, "source": s.source,
                              "path": f"{name}/", "weight": w, "fraction_kept": round(fraction[name], 6),
                              "examples": kept_ex, "tokens": kept_tok, "papers": kept_papers,
                              "examples_before_subsampling": before["examples"]})
        wsum = sum(weights.values())
        for split in SPLITS:
            tt = sum(ci["tokens"][split] for ci in comp_info)
            te = sum(ci["examples"][split] for ci in comp_info)
            for ci in comp_info:
                ci.setdefault("share", {})[split] = {
                    "tokens": round(ci["tokens"][split] / tt, 4) if tt else 0.0,
                    "examples": round(ci["examples"][split] / te, 4) if te else 0.0}
        for ci in comp_info:
            ci["target_share"] = round(ci["weight"] / wsum, 4)
        spec_bytes = spec.source_bytes()
        manifest = {
            "builder": {"name": BUILDER_NAME, "version": pipeline.BUILDER_VERSION},
            "spec": {"name": spec.name, "source": spec.source, "description": spec.description,
                     "path": str(spec.path) if spec.path else None,
                     "sha256": hashlib.sha256(spec_bytes).hexdigest(), "resolved": spec.raw},
            "inputs": [{"path": p} for p in inputs],
            "unit": unit,
            "split": {"key": "blake2b-64(base arXiv id) mod 10000", "validation_bp": VALIDATION_BP,
                      "test_bp": TEST_BP},
            "components": comp_info,
            "checksums": checksums,
        }
        (tmp / "manifest.json").write_text(manifest_json(manifest), encoding="utf-8")
        (tmp / "README.md").write_text(_card(manifest), encoding="utf-8")
        stage.commit()
    except BaseException:
        stage.abort()
        raise
    return manifest


def _card(m: dict) -> str:
    spec = m["spec"]
    lines = [f"# Dataset: {spec['name']}", "", spec.get("description") or "", "",
             f"Built by `python -m dataset_builders build --spec {spec['name']}`. One folder per component, "
             "each with its own `manifest.json` and data card; list each as its own dataset in the Axolotl "
             "recipe (chat components: type `chat_template`, completion ones: type `completion`).", "",
             f"Ratios are in {m['unit']} of the train split; the scarcest component is kept whole, the others "
             "are subsampled by a hash of id and chunk/template, identically in every split.", "",
             "| component | format | weight | target | achieved (tokens) | achieved (examples) | train examples "
             "| train tokens | kept |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c in m["components"]:
        sh = c["share"]["train"]
        lines.append(f"| `{c['path']}` | {c['format']} | {c['weight']} | {c['target_share']} | {sh['tokens']} | "
                     f"{sh['examples']} | {c['examples']['train']} | {c['tokens']['train']} | "
                     f"{c['fraction_kept']:.4f} |")
    lines += ["", f"Splits are by a hash of the base arXiv id ({VALIDATION_BP / 100:g}% validation, "
              f"{TEST_BP / 100:g}% test), identical across every QwenPhysics training context.", ""]
    return "\n".join(lines)


def summarize_mixture(manifest: dict, seconds: float, out: Path) -> None:
    print(f"built mixture {manifest['spec']['name']} in {seconds:.1f} s (ratios in {manifest['unit']}, train split):",
          file=sys.stderr)
    for c in manifest["components"]:
        sh = c["share"]["train"]
        print(f"  {c['name']:24s} target {c['target_share']:.3f}  achieved {sh['tokens']:.3f} (tokens) "
              f"{sh['examples']:.3f} (examples); {c['examples']['train']:,} train examples", file=sys.stderr)
    print(f"wrote {out}/<component>/{{train,validation,test}}.jsonl, manifest.json, README.md", file=sys.stderr)
