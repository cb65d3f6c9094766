"""Open plain, gzip and zstd files as one binary stream."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

from ..records import InputError

# Errors that mean "the compressed stream ends early or is corrupt" while reading.
try:
    import zstandard

    STREAM_ERRORS: tuple[type[BaseException], ...] = (EOFError, gzip.BadGzipFile, zstandard.ZstdError, OSError)
except ImportError:  # pragma: no cover - zstandard is in the core requirements
    zstandard = None
    STREAM_ERRORS = (EOFError, gzip.BadGzipFile, OSError)

_BUF = 1 << 20


def open_binary(path: Path) -> io.BufferedIOBase:
    name = path.name.lower()
    try:
        if name.endswith(".gz"):
            # GzipFile buffers internally in small blocks, so a truncated file still yields
            # every complete line before the break.
            return gzip.GzipFile(path, "rb")
        if name.endswith(".zst") or name.endswith(".zstd"):
            if zstandard is None:
                raise InputError(f"{path}: reading .zst needs the 'zstandard' package (pip install zstandard)")
            raw = open(path, "rb")
            return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True), _BUF)
        return open(path, "rb", buffering=_BUF)
    except PermissionError as e:
        raise InputError(f"{path}: cannot read ({e.strerror}); check its permissions") from None
