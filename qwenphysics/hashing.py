"""SHA-256 of files, streamed: the one checksum used for manifests, provenance and results.

Large inputs (a 4 GB arXiv snapshot) are hashed through memory maps of the page cache, and
their digests can be remembered in a small cache keyed by the file's identity and stat
(device, inode, size, modification and change times), the way version-control tools skip
unchanged files: building a second training context from the same snapshot then costs no
second pass over it. Only files that are large and were last changed well before hashing
are cached, so a file rewritten within the file system's timestamp granularity is never
mistaken for its earlier content.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import stat
import time
from pathlib import Path

from .toolchain import cache_dir

WINDOW = 64 << 20  # bytes mapped at a time
CACHE_MIN_BYTES = 16 << 20  # smaller files hash in milliseconds: never cached
SETTLED_S = 2.0  # a file changed less than this long ago is hashed but not cached
CACHE_MAX_ENTRIES = 512
CACHE_NAME = "sha256-cache.json"


def _digest(f) -> str:
    st = os.fstat(f.fileno())
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        return hashlib.file_digest(f, "sha256").hexdigest()
    h = hashlib.sha256()
    off, size = 0, st.st_size
    populate = getattr(mmap, "MAP_POPULATE", 0)
    while off < size:
        n = min(WINDOW, size - off)
        # mapped, not read: the page-cache pages are hashed in place instead of copied first
        with mmap.mmap(f.fileno(), n, offset=off, prot=mmap.PROT_READ, flags=mmap.MAP_SHARED | populate) as m:
            h.update(m)  # releases the GIL for large buffers
        off += n
    return h.hexdigest()


def _key(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def cache_path() -> Path:
    return cache_dir() / CACHE_NAME


def _load_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _store(path: Path, key: str, digest: str) -> None:
    """Best effort: a cache that cannot be written only means hashing again next time."""
    try:
        entries = _load_cache(path)
        entries.pop(key, None)
        entries[key] = digest
        while len(entries) > CACHE_MAX_ENTRIES:  # oldest first (insertion order)
            entries.pop(next(iter(entries)))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(entries))
        os.replace(tmp, path)
    except OSError:
        pass


def sha256_file(path: Path | str, cache: bool = False) -> str:
    """Hex SHA-256 of a file. `cache=True` looks the digest up (and stores it) in the stat-keyed
    cache under `$QWENPHYSICS_CACHE` (default `~/.cache/qwenphysics`)."""
    with open(path, "rb") as f:
        if not cache:
            return _digest(f)
        before = os.fstat(f.fileno())
        usable = (stat.S_ISREG(before.st_mode) and before.st_size >= CACHE_MIN_BYTES
                  and time.time() - max(before.st_mtime, before.st_ctime) > SETTLED_S)
        if not usable:
            return _digest(f)
        key, where = _key(before), cache_path()
        hit = _load_cache(where).get(key)
        if isinstance(hit, str) and len(hit) == 64:
            return hit
        digest = _digest(f)
        if _key(os.fstat(f.fileno())) == key:  # unchanged while it was read
            _store(where, key, digest)
        return digest
