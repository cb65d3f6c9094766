"""Exact-duplicate detection with memory that stays small at snapshot scale.

Keys are 64-bit ints. Recent keys sit in a Python set; every `flush_at` keys they are merged
into a sorted numpy array (8 bytes a key), where membership is a binary search. A plain
Python set would cost ~70 bytes a key: ~200 MB for the full snapshot's two keys per paper.
"""

from __future__ import annotations

import numpy as np


class KeySet:
    def __init__(self, flush_at: int = 1 << 17):
        self._recent: set[int] = set()
        self._sorted = np.empty(0, dtype=np.int64)
        self._flush_at = flush_at

    def __len__(self) -> int:
        return len(self._recent) + len(self._sorted)

    def add_new(self, key: int) -> bool:
        """Add `key`; True if it was not present before."""
        if key in self._recent:
            return False
        s = self._sorted
        n = len(s)
        if n:
            i = s.searchsorted(key)
            if i < n and s.item(i) == key:
                return False
        self._recent.add(key)
        if len(self._recent) >= self._flush_at:
            self._merge()
        return True

    def _merge(self) -> None:
        new = np.fromiter(self._recent, dtype=np.int64, count=len(self._recent))
        new.sort()
        self._sorted = np.concatenate([self._sorted, new])
        self._sorted.sort(kind="stable")  # two sorted runs: timsort-like merge in numpy
        self._recent.clear()
