"""A tiny, random-weight Qwen2.5 with the real tokenizer: the model every CPU path runs on.

Same architecture class (`Qwen2ForCausalLM`), vocabulary (151,936 rows), tied embeddings,
special tokens and chat template as Qwen2.5-Instruct; only the sizes shrink. hidden 256 /
intermediate 512 is the smallest shape whose tensors all take llama.cpp's K-quants (blocks of
256), so quantisation runs the same code paths as on the real model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from . import REPO_ROOT
from .qwen_tokenizer import VOCAB_SIZE, build_tokenizer_dir, default_dir

TINY_DIR = REPO_ROOT / "artifacts" / "tiny-qwen2.5"
TINY_CONFIG = dict(
    architectures=["Qwen2ForCausalLM"], model_type="qwen2", vocab_size=VOCAB_SIZE,
    hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
    tie_word_embeddings=True, hidden_act="silu", bos_token_id=151643, eos_token_id=151645,
    use_sliding_window=False, sliding_window=None, max_window_layers=2, attention_dropout=0.0,
    initializer_range=0.02, use_cache=True,
)


def build_tiny_model(out: Path = TINY_DIR, seed: int = 0, force: bool = False) -> Path:
    """Write the model (safetensors), config, generation config and tokenizer to `out`."""
    out = Path(out)
    if (out / "model.safetensors").exists() and (out / "tokenizer.json").exists() and not force:
        return out
    import torch  # noqa: PLC0415 - training environment only
    from transformers import AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM  # noqa: PLC0415 - training environment only

    tok_dir = default_dir()
    if not (tok_dir / "tokenizer.json").exists():
        build_tokenizer_dir(tok_dir)
    torch.manual_seed(seed)
    config = Qwen2Config(**TINY_CONFIG)
    model = Qwen2ForCausalLM(config).to(torch.float32)
    tmp = out.parent / f".{out.name}.partial"
    model.save_pretrained(tmp, safe_serialization=True)
    GenerationConfig(bos_token_id=151643, eos_token_id=[151645, 151643], pad_token_id=151643,
                     do_sample=True, temperature=0.7, top_p=0.8, top_k=20,
                     repetition_penalty=1.05).save_pretrained(tmp)
    AutoTokenizer.from_pretrained(str(tok_dir)).save_pretrained(tmp)
    if out.exists():

        shutil.rmtree(out)
    tmp.rename(out)
    return out
