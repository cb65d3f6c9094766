"""Open plain, gzip and zstd files as one binary stream; a compressed stream that ends early
raises `EOFError` when its end is reached (gzip does so itself; zstd frames are checked here),
so a truncated input is reported rather than taken as complete."""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import cast

import zstandard

from ..records import InputError

# Errors that mean "the compressed stream ends early or is corrupt" while reading.
STREAM_ERRORS: tuple[type[BaseException], ...] = (EOFError, gzip.BadGzipFile, zstandard.ZstdError, OSError)

_BUF = 1 << 20


class _ZstdReader(io.RawIOBase):
    """Decompresses every frame of a zstd file in turn and raises EOFError when the file ends
    inside a frame (python-zstandard's stream reader returns the partial data silently)."""

    def __init__(self, raw):
        self._raw = raw
        self._dctx = zstandard.ZstdDecompressor()
        self._d = self._dctx.decompressobj()
        self._in_frame = False  # bytes of the current frame were fed
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._pending:
            chunk = self._raw.read(_BUF)
            if not chunk:
                if self._in_frame:
                    raise EOFError("zstd stream ends inside a frame (truncated file)")
                return 0
            self._feed(chunk)
        n = min(len(b), len(self._pending))
        b[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _feed(self, data: bytes) -> None:
        out = []
        while data:
            self._in_frame = True
            out.append(self._d.decompress(data))
            if not self._d.eof:
                break
            data = self._d.unused_data
            self._d = self._dctx.decompressobj()
            self._in_frame = False
        self._pending += b"".join(out)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


def open_binary(path: Path) -> io.BufferedIOBase:
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith(".gz"):
            # GzipFile buffers internally in small blocks, so a truncated file still yields
            # every complete line before the break.
            return gzip.GzipFile(path, "rb")
        if name.endswith(".zst") or name.endswith(".zstd"):
            return io.BufferedReader(_ZstdReader(open(path, "rb")), _BUF)
        # binary mode with a buffer: a BufferedReader (typeshed only knows that for a literal size)
        return cast(io.BufferedReader, open(path, "rb", buffering=_BUF))
    except PermissionError as e:
        raise InputError(f"{path}: cannot read ({e.strerror}); check its permissions") from None


_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"),
         (b"\xfe\xff", "UTF-16"))


def sniff_encoding(path: Path) -> str | None:
    """`UTF-16` / `UTF-32` when a JSON lines file is in one of those encodings, else None."""
    try:
        with open_binary(path) as f:
            head = f.read(4)
    except STREAM_ERRORS + (InputError,):
        return None  # reported by the reader, with its own message
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name
    if len(head) >= 4 and head[1] == 0 and head[3] == 0 and head[0] and head[2]:
        return "UTF-16"  # little-endian without a byte order mark
    if len(head) >= 4 and head[0] == 0 and head[2] == 0 and head[1] and head[3]:
        return "UTF-16"
    return None
