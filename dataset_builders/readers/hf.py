"""A Hugging Face dataset (snapshot schema) streamed through `datasets`.

`hf:<dataset id or local dataset folder>[@split]`, e.g. `hf:someone/arxiv-metadata@train`.
Streaming keeps memory flat; offline, `datasets` resolves ids from its local cache.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..records import Drop, InputError, Paper
from .kaggle import paper_from_dict


def iter_papers(ref: str, limit: int | None = None) -> Iterator[Paper | Drop]:
    name, _, split = ref.partition("@")
    split = split or "train"
    try:
        import datasets  # noqa: PLC0415 - slow to import; only for hf: inputs
    except ImportError:
        raise InputError("hf: inputs need the 'datasets' package (it is in requirements/core.txt)") from None
    try:
        ds = datasets.load_dataset(name, split=split, streaming=True)
    except Exception as e:  # datasets raises many types; all mean "cannot open this id"
        msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise InputError(f"cannot open Hugging Face dataset '{name}' split '{split}': {msg}") from None
    for i, row in enumerate(ds):
        if limit is not None and i >= limit:
            return
        yield paper_from_dict(row, f"hf:{name}")
