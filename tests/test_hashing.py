"""SHA-256 of files: mapped windows, and the stat-keyed digest cache for large inputs."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from qwenphysics import hashing


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("QWENPHYSICS_CACHE", str(d))
    return d


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 3 * 8192 + 17])
def test_digest_over_several_windows(tmp_path, monkeypatch, size):
    monkeypatch.setattr(hashing, "WINDOW", 8192)  # a multiple of the mmap granularity
    data = os.urandom(size)
    p = tmp_path / "f.bin"
    p.write_bytes(data)
    assert hashing.sha256_file(p) == hashlib.sha256(data).hexdigest()


def test_large_settled_file_is_cached_and_a_change_misses(tmp_path, monkeypatch, cache_dir):
    monkeypatch.setattr(hashing, "CACHE_MIN_BYTES", 1)
    monkeypatch.setattr(hashing, "SETTLED_S", -1.0)  # treat the file as long unchanged
    p = tmp_path / "snap.jsonl"
    p.write_bytes(b"a" * 1000)
    first = hashing.sha256_file(p, cache=True)
    assert first == hashlib.sha256(b"a" * 1000).hexdigest()
    entries = json.loads((cache_dir / hashing.CACHE_NAME).read_text())
    assert list(entries.values()) == [first]
    # a hit answers from the cache without reading the file: prove it with a planted digest
    key = next(iter(entries))
    (cache_dir / hashing.CACHE_NAME).write_text(json.dumps({key: "f" * 64}))
    assert hashing.sha256_file(p, cache=True) == "f" * 64
    assert hashing.sha256_file(p) == first  # cache=False never looks
    # same size, new content and modification time: a different key, hashed again
    p.write_bytes(b"b" * 1000)
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert hashing.sha256_file(p, cache=True) == hashlib.sha256(b"b" * 1000).hexdigest()
    assert len(json.loads((cache_dir / hashing.CACHE_NAME).read_text())) == 2


def test_recent_or_small_files_are_not_cached(tmp_path, monkeypatch, cache_dir):
    p = tmp_path / "snap.jsonl"
    p.write_bytes(b"c" * 5000)
    monkeypatch.setattr(hashing, "CACHE_MIN_BYTES", 1)
    assert hashing.sha256_file(p, cache=True) == hashlib.sha256(b"c" * 5000).hexdigest()  # just written
    monkeypatch.setattr(hashing, "SETTLED_S", -1.0)
    monkeypatch.setattr(hashing, "CACHE_MIN_BYTES", 10_000)
    hashing.sha256_file(p, cache=True)  # too small to be worth caching
    assert not (cache_dir / hashing.CACHE_NAME).exists()


def test_a_damaged_or_unwritable_cache_only_costs_a_rehash(tmp_path, monkeypatch, cache_dir):
    monkeypatch.setattr(hashing, "CACHE_MIN_BYTES", 1)
    monkeypatch.setattr(hashing, "SETTLED_S", -1.0)
    p = tmp_path / "snap.jsonl"
    p.write_bytes(b"d" * 100)
    want = hashlib.sha256(b"d" * 100).hexdigest()
    cache_dir.mkdir()
    (cache_dir / hashing.CACHE_NAME).write_text("{not json")
    assert hashing.sha256_file(p, cache=True) == want
    assert json.loads((cache_dir / hashing.CACHE_NAME).read_text()) == {hashing._key(p.stat()): want}
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("")
    monkeypatch.setenv("QWENPHYSICS_CACHE", str(blocker / "sub"))
    assert hashing.sha256_file(p, cache=True) == want


def test_cache_keeps_a_bounded_number_of_entries(tmp_path, monkeypatch, cache_dir):
    monkeypatch.setattr(hashing, "CACHE_MIN_BYTES", 1)
    monkeypatch.setattr(hashing, "SETTLED_S", -1.0)
    monkeypatch.setattr(hashing, "CACHE_MAX_ENTRIES", 3)
    for i in range(5):
        p = tmp_path / f"f{i}"
        p.write_bytes(bytes([i]) * 10)
        hashing.sha256_file(p, cache=True)
    entries = json.loads((cache_dir / hashing.CACHE_NAME).read_text())
    assert list(entries.values()) == [hashlib.sha256(bytes([i]) * 10).hexdigest() for i in (2, 3, 4)]
