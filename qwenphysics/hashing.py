"""SHA-256 of files, streamed: the one checksum used for manifests, provenance and results."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path | str) -> str:
    with open(path, "rb") as f:
        # reads into one reused buffer and hashes it without holding the GIL
        return hashlib.file_digest(f, "sha256").hexdigest()
