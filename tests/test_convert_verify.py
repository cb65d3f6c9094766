"""Convert, verified after a real tiny training run: merge -> GGUF F16 -> Q4_K_M / Q8_0 and a
GGUF LoRA, checked numerically against the HF model with llama.cpp's own runtime."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import OFFLINE_ENV, ROOT, run

pytestmark = pytest.mark.slow

TEXTS = [
    "The Schrödinger equation $i\\hbar \\partial_t \\psi = \\hat{H}\\psi$ governs non-relativistic quanta.",
    "Einstein's field equations: "
    "$R_{\\mu\\nu} - \\tfrac{1}{2} R g_{\\mu\\nu} + \\Lambda g_{\\mu\\nu} = 8\\pi G T_{\\mu\\nu}$.",
    "La función zeta de Riemann, ζ(s) = Σ 1/n^s, converge para Re(s) > 1; ¿qué ocurre en s = 1?",
    "Gödel, Poincaré, Ångström and Dvořák met at 300 K with ΔE ≈ 1.6×10⁻¹⁹ J.",
    "  indented   text\twith tabs\nand new lines\r\n1234567 digits, 3.14159, -2.5e-3 …",
    "量子もつれ (quantum entanglement) — Квантовая механика — ψ⊗φ",
]
# Agreement bounds. The conversion itself is checked without 16-bit rounding anywhere: an F32
# GGUF of the merged model, run with an F32 KV cache, must give the HF logits to float32
# accuracy (measured 3e-5; a wrong conversion shifts logits by O(1)). The F16 file rounds
# weights, activations and (by default) the KV cache to ~3 significant digits; on the tiny
# model one position in 128 then moves by up to ~0.2 (measured 6e-4 to 0.18 over runs, since
# CPU training is not bit-reproducible), so it is bounded by what a user would notice: the
# next-token distribution (mean KL, measured ~1e-5 nats) and the argmax.
F32_ATOL = 2e-3
F16_KL_MAX = 1e-3  # nats per token, mean over the text
TOP1_MIN = 0.98
GGML_F32 = 0  # ggml_type of an F32 KV cache


def llama(path: Path, **kw):
    from llama_cpp import Llama

    return Llama(model_path=str(path), n_ctx=512, n_threads=2, verbose=False, seed=0, **kw)


def gguf_logits(path: Path, tokens: list[int], **kw) -> np.ndarray:
    m = llama(path, logits_all=True, **kw)
    m.reset()
    m.eval(tokens)
    out = np.array(m.scores[: len(tokens)], dtype=np.float32)
    m.close()
    return out


def hf_logits(train_python, model_dir: Path, tokens: list[int], tmp: Path) -> np.ndarray:
    (tmp / "ids.json").write_text(json.dumps(tokens))
    run([train_python, "-m", "tests.hf_logits", "hf-logits", "--model", model_dir, "--tokens", tmp / "ids.json",
         "--out", tmp / "hf.npy"])
    return np.load(tmp / "hf.npy")


def gguf_fields(path: Path) -> dict:
    """All metadata of a GGUF file, read with llama.cpp's own gguf-py."""
    from qwenphysics.toolchain import find_toolchain

    sys.path.insert(0, str(find_toolchain().gguf_py))
    from gguf import GGUFReader

    return {k: f.contents() for k, f in GGUFReader(str(path)).fields.items()}


def hf_tokenizer():
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(ROOT / "artifacts" / "qwen2.5-tokenizer" / "tokenizer.json"))


def test_outputs_checksums_card_and_provenance(converted):
    out, proc = converted
    files = {p.name for p in out.glob("*.gguf")}
    assert files == {"recipe-F16.gguf", "recipe-Q4_K_M.gguf", "recipe-Q8_0.gguf", "recipe-lora-F16.gguf",
                     "base-F16.gguf"}
    import hashlib

    sums = dict(reversed(line.split("  ")) for line in (out / "SHA256SUMS").read_text().splitlines())
    for name in files:
        assert sums[name] == hashlib.sha256((out / name).read_bytes()).hexdigest()
    card = (out / "README.md").read_text()
    assert card.startswith("---\nbase_model: ") and "library_name: gguf" in card and "abstracts-chat" in card
    assert "FROM ./recipe-Q4_K_M.gguf" in (out / "Modelfile").read_text()
    for name in ("recipe-F16.gguf", "recipe-Q4_K_M.gguf"):
        meta = gguf_fields(out / name)
        tags = meta["general.tags"]
        assert "recipe:recipe" in tags and any(t.startswith("recipe-sha256:") for t in tags)
        assert any(t.startswith("dataset-manifest-sha256:") for t in tags)
        assert abs(meta["general.sampling.temp"] - 0.1) < 1e-6
        assert "<|im_start|>" in meta["tokenizer.chat_template"]
        assert meta["tokenizer.ggml.eos_token_id"] == 151645


def test_rerun_is_idempotent(converted, trained_run, tiny_model_dir):
    out, _ = converted
    recipe, work = trained_run
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.gguf")}
    p = run([sys.executable, ROOT / "scripts" / "convert.py", recipe, "--out", work / "models", "--quants",
             "Q4_K_M", "Q8_0", "--base-dir", tiny_model_dir, "--base-gguf"])
    assert "is current" in p.stderr
    assert before == {p.name: p.stat().st_mtime_ns for p in out.glob("*.gguf")}


def test_token_ids_match_hf_tokenizer(converted):
    out, _ = converted
    tok = hf_tokenizer()
    m = llama(out / "recipe-F16.gguf", vocab_only=True)
    for text in TEXTS:
        hf = tok.encode(text, add_special_tokens=False).ids
        gg = m.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        assert gg == hf, text
    chat = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert m.tokenize(chat.encode(), add_bos=False, special=True) == tok.encode(chat).ids
    assert tok.encode("Hello world").ids == [9707, 1879]


def kl_per_token(p_logits: np.ndarray, q_logits: np.ndarray) -> np.ndarray:
    """KL(p || q) of the next-token distributions, per position (nats)."""
    lp = p_logits - np.logaddexp.reduce(p_logits, axis=-1, keepdims=True)
    lq = q_logits - np.logaddexp.reduce(q_logits, axis=-1, keepdims=True)
    return (np.exp(lp) * (lp - lq)).sum(-1)


def test_gguf_logits_match_merged_hf(converted, trained_run, train_python, tmp_path):
    from qwenphysics.convert import hf_to_gguf

    out, _ = converted
    _, work = trained_run
    merged = work / "out" / "merged"
    tokens = hf_tokenizer().encode(" ".join(TEXTS[:3])).ids
    hf = hf_logits(train_python, merged, tokens, tmp_path)
    f32_file = hf_to_gguf(merged, tmp_path / "merged-F32.gguf", outtype="f32", python=train_python)
    f32 = gguf_logits(f32_file, tokens, type_k=GGML_F32, type_v=GGML_F32)
    exact = np.abs(hf - f32).max()
    print(f"F32 GGUF vs merged HF: max |dlogit| = {exact:.2e} over {len(tokens)} tokens")
    assert exact < F32_ATOL, "the GGUF conversion changed the model"

    f16 = gguf_logits(out / "recipe-F16.gguf", tokens)
    kl = kl_per_token(hf, f16)
    top1 = (hf.argmax(-1) == f16.argmax(-1)).mean()
    print(f"F16 GGUF vs merged HF: max |dlogit| = {np.abs(hf - f16).max():.2e}, mean KL {kl.mean():.2e} nats "
          f"(max {kl.max():.2e}), top-1 agreement {top1:.3f}")
    assert kl.mean() < F16_KL_MAX and top1 >= TOP1_MIN

    base = hf_logits(train_python, ROOT / "artifacts" / "tiny-qwen2.5", tokens, tmp_path)
    moved = kl_per_token(hf, base).mean()
    print(f"the adapter moved the logits by up to {np.abs(base - hf).max():.2f} (mean KL {moved:.2e} nats)")
    # the comparisons above are not vacuous: the trained model is far from the base by both measures
    assert np.abs(base - hf).max() > 100 * F32_ATOL and moved > 10 * F16_KL_MAX


def test_base_plus_gguf_lora_matches_merged(converted):
    out, _ = converted
    tokens = hf_tokenizer().encode(TEXTS[0] + TEXTS[3]).ids
    merged = gguf_logits(out / "recipe-F16.gguf", tokens)
    with_lora = gguf_logits(out / "base-F16.gguf", tokens, lora_path=str(out / "recipe-lora-F16.gguf"))
    base = gguf_logits(out / "base-F16.gguf", tokens)
    kl, moved = kl_per_token(merged, with_lora), kl_per_token(merged, base)
    top1 = (merged.argmax(-1) == with_lora.argmax(-1)).mean()
    print(f"base+LoRA vs merged GGUF: max |dlogit| = {np.abs(merged - with_lora).max():.2e}, mean KL {kl.mean():.2e}"
          f" nats, top-1 agreement {top1:.3f}; base vs merged: mean KL {moved.mean():.2e}")
    assert kl.mean() < F16_KL_MAX and top1 >= TOP1_MIN
    assert moved.mean() > 10 * F16_KL_MAX


def test_chat_template_embedded_and_generation_stops_at_im_end(converted):
    out, _ = converted
    m = llama(out / "recipe-Q4_K_M.gguf")
    msgs = [{"role": "user", "content": "What is the Riemann zeta function?"}]
    stop = m.create_chat_completion(msgs, max_tokens=16, temperature=0.0, logit_bias={151645: 100.0})
    assert stop["choices"][0]["finish_reason"] == "stop" and stop["choices"][0]["message"]["content"] == ""
    # control: without the push towards <|im_end|> the random model runs to max_tokens
    free = m.create_chat_completion(msgs, max_tokens=8, temperature=0.0, logit_bias={151645: -100.0})
    assert free["choices"][0]["finish_reason"] == "length"
    assert "<|im_end|>" not in free["choices"][0]["message"]["content"]


@pytest.mark.parametrize("quant", ["Q4_K_M", "Q8_0"])
def test_quantized_files_load_and_generate(converted, quant):
    out, _ = converted
    m = llama(out / f"recipe-{quant}.gguf")
    r = m.create_completion("The speed of light is", max_tokens=6, temperature=0.0, logit_bias={151645: -100.0,
                                                                                               151643: -100.0})
    assert r["usage"]["completion_tokens"] == 6 and r["choices"][0]["text"]
    from qwenphysics.serving import read_gguf_metadata

    ftype = read_gguf_metadata(out / f"recipe-{quant}.gguf")["general.file_type"]
    assert ftype == {"Q4_K_M": 15, "Q8_0": 7}[quant]


def test_one_line_errors(tmp_path, trained_run):
    recipe, work = trained_run
    empty = tmp_path / "empty-run"
    empty.mkdir()
    p = subprocess.run([sys.executable, ROOT / "scripts" / "convert.py", empty], capture_output=True, text=True)
    assert p.returncode == 2 and "no LoRA adapter" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    import yaml

    cfg = yaml.safe_load(recipe.read_text())
    cfg["base_model"] = "Qwen/Qwen2.5-7B-Instruct"
    other = tmp_path / "other.yml"
    other.write_text(yaml.safe_dump(cfg))
    p = subprocess.run([sys.executable, ROOT / "scripts" / "convert.py", other], capture_output=True, text=True,
                       env={**__import__("os").environ, **OFFLINE_ENV})
    assert p.returncode == 2 and "base mismatch" in p.stderr and len(p.stderr.strip().splitlines()) == 1
