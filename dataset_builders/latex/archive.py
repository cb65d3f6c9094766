"""Safe, in-memory reading of arXiv source archives. Nothing is ever extracted to disk.

* :func:`read_eprint` - one e-print file as served by arXiv (``<id>.gz``): a
  gzipped tar of a LaTeX project, a single gzipped ``.tex``, or the same
  uncompressed; a PDF-only submission raises ``LatexError("pdf_only")``.
* :func:`iter_source_tar` - a bulk shard ``arXiv_src_YYMM_NNN.tar`` whose
  members are ``YYMM/<id>.gz`` (or ``.pdf``); yields ``(arxiv_id, files)`` or
  ``(arxiv_id, LatexError)`` and never raises for a bad member.
* :func:`read_project_dir` - a directory holding an unpacked project.

Hostile input is skipped and counted (pass a ``collections.Counter`` as
``counts``): absolute or ``..`` paths (``unsafe_path``), symlinks and hard links
(``link``), devices/fifos (``special_file``), members over the size cap
(``member_too_large``), binary members (``binary_member``), figures and
other non-source files (``skipped_ext``). Whole-paper failures are
``LatexError`` reasons: ``pdf_only``, ``postscript_only``, ``binary``,
``too_large`` (decompressed data over a cap: gzip bombs stop at the cap while
decompressing in bounded chunks), ``too_many_files``, ``truncated``,
``corrupt``, ``no_tex_source``.

Hand-written on the standard library (``gzip``, ``tarfile`` in streaming
mode): no LaTeX library is involved at this layer.
"""

from __future__ import annotations

import gzip
import io
import os
import posixpath
import re
import stat
import tarfile
import zlib
from collections import Counter
from collections.abc import Iterator

from .model import LatexError, Limits
from .project import BINARY_EXTS, ext_of, looks_binary, normalize_path

DEFAULT_LIMITS = Limits()
_HEAD = 1024

_NEW_ID = re.compile(r"^(\d{4}\.\d{4,5})(v\d+)?$")
_OLD_ID = re.compile(r"^([a-z]+(?:-[a-z]+)?(?:\.[A-Za-z]{2})?)(\d{7})(v\d+)?$")


class _CapExceeded(Exception):
    pass


class _Capped(io.RawIOBase):
    """Raw reader over a file object that fails once more than ``cap`` bytes were read."""

    def __init__(self, f, cap: int, head: bytes = b""):
        self._f = f
        self._cap = cap
        self._head = head
        self.count = len(head)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        want = min(len(b), 1 << 16)
        data = self._f.read(want)
        n = len(data)
        self.count += n
        if self.count > self._cap:
            raise _CapExceeded
        b[:n] = data
        return n


def _read_exact(f, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        c = f.read(min(n - got, 1 << 16))
        if not c:
            break
        chunks.append(c)
        got += len(c)
    return b"".join(chunks)


def parse_arxiv_id(stem: str) -> str | None:
    """``2212.01234`` -> same; ``astro-ph0001001`` -> ``astro-ph/0001001``; else None."""
    m = _NEW_ID.match(stem)
    if m:
        return m.group(1)
    m = _OLD_ID.match(stem)
    if m:
        return m.group(1) + "/" + m.group(2)
    return None


def read_eprint(
    name: str, data: bytes, limits: Limits = DEFAULT_LIMITS, counts: Counter | None = None
) -> dict[str, bytes]:
    """Files of one e-print (relative path -> bytes); raises :class:`LatexError`."""
    counts = counts if counts is not None else Counter()
    try:
        if data[:2] == b"\x1f\x8b":
            src = gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb")
            head = _read_exact(src, _HEAD)
            return _read_payload(name, head, src, limits, counts)
        head = data[:_HEAD]
        return _read_payload(name, head, io.BytesIO(data[_HEAD:]), limits, counts)
    except LatexError:
        raise
    except _CapExceeded:
        raise LatexError("too_large", f"{name}: decompressed size over max_scan_bytes") from None
    except (EOFError, tarfile.ReadError) as e:
        reason = "truncated" if _is_truncation(e) else "corrupt"
        raise LatexError(reason, f"{name}: {e}") from None
    except (gzip.BadGzipFile, zlib.error, tarfile.TarError, OSError, ValueError) as e:
        raise LatexError("corrupt", f"{name}: {e}") from None


def _is_truncation(e: Exception) -> bool:
    msg = str(e).lower()
    return (
        isinstance(e, EOFError)
        or "unexpected end" in msg
        or "end-of-stream" in msg
        or "truncated" in msg
    )


def _is_tar_header(head: bytes) -> bool:
    if len(head) < 512:
        return False
    if head[257:262] == b"ustar":
        return True
    try:
        tarfile.TarInfo.frombuf(head[:512], "utf-8", "surrogateescape")
        return True
    except Exception:
        return False


def _read_payload(name, head: bytes, rest, limits: Limits, counts: Counter) -> dict[str, bytes]:
    if head.startswith(b"%PDF"):
        raise LatexError("pdf_only", name)
    if head.startswith(b"%!PS"):
        raise LatexError("postscript_only", name)
    if _is_tar_header(head):
        stream = io.BufferedReader(_Capped(rest, limits.max_scan_bytes, head), 1 << 16)
        return _read_tar_stream(name, stream, limits, counts)
    # a single source file
    body = _read_exact(rest, limits.max_member_bytes + 1 - len(head))
    data = head + body
    if len(data) > limits.max_member_bytes:
        raise LatexError("too_large", f"{name}: single file over max_member_bytes")
    if looks_binary(data):
        raise LatexError("binary", name)
    if not data.strip():
        raise LatexError("no_tex_source", f"{name}: empty")
    return {"main.tex": data}


def _read_tar_stream(name, stream, limits: Limits, counts: Counter) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    members = 0
    kept = 0
    saw_pdf = False
    with tarfile.open(fileobj=stream, mode="r|") as tf:
        for m in tf:
            members += 1
            if members > limits.max_files:
                raise LatexError("too_many_files", f"{name}: more than {limits.max_files} members")
            if m.isdir():
                continue
            if m.issym() or m.islnk():
                counts["link"] += 1
                continue
            if not m.isreg():
                counts["special_file"] += 1
                continue
            path = normalize_path(m.name)
            if path is None:
                counts["unsafe_path"] += 1
                continue
            ext = ext_of(path)
            if ext in BINARY_EXTS:
                saw_pdf = saw_pdf or ext == ".pdf"
                counts["skipped_ext"] += 1
                continue
            if m.size > limits.max_member_bytes:
                counts["member_too_large"] += 1
                continue
            if kept + m.size > limits.max_paper_bytes:
                raise LatexError("too_large", f"{name}: kept files over max_paper_bytes")
            f = tf.extractfile(m)
            data = f.read(m.size) if f is not None else b""
            if len(data) < m.size:
                raise LatexError("truncated", f"{name}: member {path} cut short")
            if looks_binary(data):
                counts["binary_member"] += 1
                continue
            kept += len(data)
            files[path] = data
    if not files:
        raise LatexError("pdf_only" if saw_pdf else "no_tex_source", name)
    return files


def iter_source_tar(
    path: str | os.PathLike, limits: Limits = DEFAULT_LIMITS, counts: Counter | None = None
) -> Iterator[tuple[str, dict[str, bytes] | LatexError]]:
    """Walk a bulk source shard; yields ``(arxiv_id, files)`` or ``(arxiv_id, LatexError)``.

    Members whose name is not an arXiv id are reported under their stem with
    reason ``bad_member_name``. If the shard itself is cut short or corrupt,
    a last pair ``(shard file name, LatexError("shard_truncated"))`` is yielded
    and iteration ends.
    """
    counts = counts if counts is not None else Counter()
    shard = os.path.basename(os.fspath(path))
    with open(path, "rb") as fh:
        try:
            tf = tarfile.open(fileobj=fh, mode="r|")
        except (tarfile.TarError, EOFError, OSError) as e:
            yield shard, LatexError("shard_truncated", str(e))
            return
        it = iter(tf)
        while True:
            try:
                m = next(it)
            except StopIteration:
                break
            except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
                yield shard, LatexError("shard_truncated", str(e))
                return
            if m.isdir():
                continue
            base = posixpath.basename(m.name)
            stem = base
            for suffix in (".gz", ".pdf", ".tar", ".tex"):
                if stem.endswith(suffix):
                    stem = stem[: -len(suffix)]
                    break
            arxiv_id = parse_arxiv_id(stem)
            if arxiv_id is None:
                yield stem or m.name, LatexError("bad_member_name", m.name)
                continue
            if not m.isreg():
                yield arxiv_id, LatexError("unsafe_member", m.name)
                continue
            if base.endswith(".pdf"):
                yield arxiv_id, LatexError("pdf_only", m.name)
                continue
            if m.size > limits.max_eprint_bytes:
                yield arxiv_id, LatexError("too_large", f"{m.name}: {m.size} bytes compressed")
                continue
            try:
                f = tf.extractfile(m)
                data = f.read(m.size) if f is not None else b""
                if len(data) < m.size:
                    raise EOFError("member cut short")
            except (tarfile.TarError, EOFError, OSError) as e:
                yield arxiv_id, LatexError("truncated", str(e))
                yield shard, LatexError("shard_truncated", str(e))
                return
            try:
                yield arxiv_id, read_eprint(base, data, limits, counts)
            except LatexError as e:
                yield arxiv_id, e
            except Exception as e:  # never let one member stop the shard
                yield arxiv_id, LatexError("corrupt", f"{type(e).__name__}: {e}")
        tf.close()


def read_project_dir(
    path: str | os.PathLike, limits: Limits = DEFAULT_LIMITS, counts: Counter | None = None
) -> dict[str, bytes]:
    """Source files of an unpacked project directory (symlinks and specials skipped)."""
    counts = counts if counts is not None else Counter()
    root = os.fspath(path)
    files: dict[str, bytes] = {}
    seen = 0
    kept = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for fn in sorted(filenames):
            seen += 1
            if seen > limits.max_files:
                raise LatexError("too_many_files", root)
            full = os.path.join(dirpath, fn)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                counts["link"] += 1
                continue
            if not stat.S_ISREG(st.st_mode):
                counts["special_file"] += 1
                continue
            if ext_of(rel) in BINARY_EXTS:
                counts["skipped_ext"] += 1
                continue
            if st.st_size > limits.max_member_bytes:
                counts["member_too_large"] += 1
                continue
            if kept + st.st_size > limits.max_paper_bytes:
                raise LatexError("too_large", root)
            flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
            fd = os.open(full, flags)
            with os.fdopen(fd, "rb") as fh:
                data = fh.read(limits.max_member_bytes + 1)
            if looks_binary(data):
                counts["binary_member"] += 1
                continue
            kept += len(data)
            files[rel] = data
    if not files:
        raise LatexError("no_tex_source", root)
    return files
