"""The train / validation / test split, shared by every training context.

A paper's split is a pure function of its base arXiv id (the id without a version suffix),
so all versions of a paper land together and a paper lands in the same split in every
context: abstracts, full text and mixtures never leak test papers into training.
"""

from __future__ import annotations

import hashlib
import re

SPLITS = ("train", "validation", "test")
# Fractions of papers, in 1/10000ths. Fixed project-wide on purpose: changing them per
# context would move papers between splits and leak held-out papers into training.
VALIDATION_BP = 200  # 2 %
TEST_BP = 200  # 2 %

_OLD_STYLE = re.compile(r"([A-Za-z]+(?:-[A-Za-z]+)?)(?:\.([A-Za-z]{2}))?/(\d{7})")
_NEW_STYLE = re.compile(r"\d{4}\.\d{4,5}")


def canonical_id(raw: str) -> str | None:
    """arXiv's canonical form of an identifier, without version, or None when `raw` is not one.

    `2101.00009V2` -> `2101.00009`; `arXiv:HEP-TH/9901001v1` -> `hep-th/9901001`;
    `math.ag/0101001` -> `math.AG/0101001`; an empty id, `../../etc/passwd` -> None."""
    s = raw.strip()
    if len(s) in (9, 10) and s[4] == "." and s.isascii() and s[:4].isdigit() and s[5:].isdigit():
        return s  # the common case: a new-style id without version
    if s[:6].lower() == "arxiv:":
        s = s[6:]
    i = max(s.rfind("v"), s.rfind("V"))
    if i > 0 and s[i + 1:].isdecimal() and s[i + 1:].isascii():
        s = s[:i]
    if _NEW_STYLE.fullmatch(s):
        return s
    m = _OLD_STYLE.fullmatch(s)
    if m and m.group(1).isascii():
        archive, subject, number = m.groups()
        return archive.lower() + (f".{subject.upper()}" if subject else "") + "/" + number
    return None


def base_id(arxiv_id: str) -> str:
    """`0704.0001v2` -> `0704.0001`; `hep-th/9901001v1` -> `hep-th/9901001`; strips `arXiv:`.
    The canonical form when the id is a valid arXiv id (see `canonical_id`)."""
    c = canonical_id(arxiv_id)
    if c is not None:
        return c
    s = arxiv_id.strip()
    if s[:6].lower() == "arxiv:":
        s = s[6:]
    i = s.rfind("v")
    if i >= 0 and s[i + 1:].isdecimal():  # a trailing version suffix `v<digits>`
        return s[:i]
    return s


def bucket(base: str) -> int:
    """Stable bucket in [0, 10000) from the base id (independent of Python's hash seed)."""
    digest = hashlib.blake2b(base.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 10000


def split_of_bucket(b: int) -> str:
    if b < TEST_BP:
        return "test"
    if b < TEST_BP + VALIDATION_BP:
        return "validation"
    return "train"


def split_of(arxiv_id: str) -> str:
    return split_of_bucket(bucket(base_id(arxiv_id)))
