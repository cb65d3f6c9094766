"""Source shards read through `fsspec`: `s3://` (arXiv's requester-pays bucket or a mirror) and any
other URL fsspec knows, listed one by one or selected from arXiv's manifest by month range.

    --input s3://arxiv/src/arXiv_src_manifest.xml --months 2301-2312 --requester-pays
    --input s3://arxiv/src/                       (the manifest in that folder)
    --input s3://my-mirror/src/arXiv_src_2301_001.tar

The manifest (`arXiv_src_manifest.xml`) lists every shard with its month (`yymm`), size and
MD5; a selection reads the manifest only, and each shard is fetched by the worker that cleans
it, into a local temporary file removed afterwards. A shard's identity for resume is the
manifest's MD5 and size (or the object's ETag and size when it is given directly), so a
finished shard is never fetched again.

Credentials come from where the AWS tools look for them (`AWS_ACCESS_KEY_ID` /
`AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE` and `~/.aws`, instance roles); they are never taken on
the command line and never written to a log or a manifest. `AWS_ENDPOINT_URL` points the
client at an S3-compatible server instead of AWS.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec

from ..records import InputError

MANIFEST = "arXiv_src_manifest.xml"
_SHARD = re.compile(r"arXiv_src_(\d{4})_\d+\.tar$")
_MONTHS = re.compile(r"^(\d{4})(?:-(\d{4}))?$")
_COPY_BLOCK = 8 << 20


def is_url(s: str) -> bool:
    return "://" in s and not s.startswith("file://")


@dataclass(frozen=True)
class Access:
    """How remote inputs are read; travels with every task (holds no secret)."""

    requester_pays: bool = False

    def options(self, url: str) -> dict[str, Any]:
        if not url.startswith(("s3://", "s3a://")):
            return {}
        # no cached listings: other processes write the work dir while this one reads it
        return {"use_listings_cache": False, **({"requester_pays": True} if self.requester_pays else {})}


def month_key(yymm: str) -> int:
    """Sortable month: arXiv's ids start in 1991 (`9107`), so `yy >= 91` is the 1900s."""
    yy, mm = int(yymm[:2]), int(yymm[2:])
    return (1900 + yy if yy >= 91 else 2000 + yy) * 100 + mm


def parse_months(text: str | None) -> tuple[int, int] | None:
    """`YYMM` or `YYMM-YYMM` (inclusive) -> (first, last) month keys."""
    if text is None:
        return None
    m = _MONTHS.match(text.strip())
    if not m or not all(1 <= int(x[2:]) <= 12 for x in m.groups() if x):
        raise InputError(f"--months {text}: give a month YYMM or a range YYMM-YYMM, e.g. 2301-2312")
    lo = month_key(m.group(1))
    hi = month_key(m.group(2)) if m.group(2) else lo
    if hi < lo:
        raise InputError(f"--months {text}: the range ends before it starts")
    return lo, hi


def shard_month(name: str) -> int | None:
    m = _SHARD.search(name)
    return month_key(m.group(1)) if m else None


def in_months(name: str, months: tuple[int, int] | None) -> bool:
    """Whether a shard file name falls in the range (names that carry no month always do)."""
    if months is None:
        return True
    k = shard_month(name)
    return k is None or months[0] <= k <= months[1]


def _fs(url: str, access: Access):
    try:
        fs, path = fsspec.core.url_to_fs(url, **access.options(url))
    except (ImportError, ValueError) as e:
        raise InputError(f"{url}: cannot read this kind of URL ({e})") from None
    return fs, path


def explain(url: str, e: BaseException, access: Access) -> InputError:
    """A one-line error for a failed remote read, naming what to fix and never a credential."""
    name = type(e).__name__
    text = str(e).lower()
    if name == "NoCredentialsError" or "unable to locate credentials" in text:
        return InputError(f"{url}: no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                          "or AWS_PROFILE, as for the aws command")
    if isinstance(e, PermissionError) or "accessdenied" in text or "forbidden" in text or "403" in text:
        hint = "" if access.requester_pays else " (arXiv's bucket is requester-pays: add --requester-pays)"
        return InputError(f"{url}: access denied{hint}")
    if isinstance(e, FileNotFoundError) or "nosuchkey" in text or "nosuchbucket" in text:
        return InputError(f"input not found: {url}")
    return InputError(f"{url}: cannot be read ({name})")


@dataclass(frozen=True)
class RemoteShard:
    url: str
    name: str  # arXiv_src_YYMM_NNN.tar
    identity: str  # MD5 or ETag, and size: what resume compares


def _text(el: ET.Element, tag: str) -> str:
    child = el.find(tag)
    return (child.text or "").strip() if child is not None else ""


def read_manifest(url: str, access: Access, months: tuple[int, int] | None) -> list[RemoteShard]:
    """The manifest's shards in the month range, each addressed next to the manifest."""
    fs, path = _fs(url, access)
    try:
        with fs.open(path, "rb") as f:
            root = ET.parse(f).getroot()
    except ET.ParseError as e:
        raise InputError(f"{url}: not a readable arXiv source manifest ({e})") from None
    except Exception as e:  # OSErrors, and botocore's errors, which are not
        raise explain(url, e, access) from None
    base = url.rsplit("/", 1)[0]
    shards = []
    for el in root.iter("file"):
        fname = os.path.basename(_text(el, "filename"))
        yymm = _text(el, "yymm")
        if not _SHARD.search(fname) or not re.fullmatch(r"\d{4}", yymm):
            continue
        if months is not None and not months[0] <= month_key(yymm) <= months[1]:
            continue
        size = int(_text(el, "size") or 0)
        shards.append(RemoteShard(f"{base}/{fname}", fname, f"md5 {_text(el, 'md5sum')} {size}"))
    if not shards and not list(root.iter("file")):
        raise InputError(f"{url}: no <file> entries: is this arXiv's {MANIFEST}?")
    return sorted(shards, key=lambda s: s.name)


def list_remote(url: str, access: Access, months: tuple[int, int] | None) -> list[RemoteShard]:
    """The shards a URL names: one `.tar`, a manifest, or a folder holding the manifest."""
    if url.endswith(".xml"):
        return read_manifest(url, access, months)
    if url.endswith("/"):
        return read_manifest(url + MANIFEST, access, months)
    if not url.endswith(".tar"):
        raise InputError(f"{url}: give a source shard (…/arXiv_src_YYMM_NNN.tar), arXiv's {MANIFEST}, "
                         "or the folder that holds it (ending in /)")
    fs, path = _fs(url, access)
    try:
        info = fs.info(path)
    except Exception as e:
        raise explain(url, e, access) from None
    size = int(info.get("size") or 0)
    tag = str(info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified") or "")
    name = os.path.basename(path)
    return [RemoteShard(url, name, f"etag {tag.strip(chr(34))} {size}")] if in_months(name, months) else []


def fetch(url: str, access: Access) -> str:
    """Copy one remote file to a local temporary file; the caller removes it."""
    fs, path = _fs(url, access)
    fd, local = tempfile.mkstemp(prefix="qwenphysics-shard-", suffix=".tar")
    try:
        with os.fdopen(fd, "wb") as out, fs.open(path, "rb", block_size=_COPY_BLOCK) as src:
            shutil.copyfileobj(src, out, _COPY_BLOCK)
    except BaseException as e:
        os.unlink(local)
        if isinstance(e, Exception):
            raise explain(url, e, access) from None
        raise
    return local


class RemotePath:
    """A work dir at a URL (`--work-dir s3://...`), with the few `Path` methods the map and the
    reduce use. Objects are written whole (no partial object is ever visible), so a unit's
    files need no temporary names: its `.done` marker is still written last."""

    def __init__(self, url: str, access: Access | None = None):
        self.url = url.rstrip("/")
        self.access = access or Access()
        self.fs, self.path = _fs(self.url, self.access)

    def __truediv__(self, name: str) -> RemotePath:
        return RemotePath(f"{self.url}/{name}", self.access)

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"RemotePath({self.url!r})"

    def resolve(self) -> RemotePath:
        return self

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Object stores have no folders to make."""

    def exists(self) -> bool:
        try:
            return bool(self.fs.exists(self.path))
        except Exception as e:
            raise explain(self.url, e, self.access) from None

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.rm_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise
        except Exception as e:
            raise explain(self.url, e, self.access) from None

    def open(self, mode: str = "rb", encoding: str | None = None):
        try:
            f = self.fs.open(self.path, mode if "b" in mode else mode + "b")
        except FileNotFoundError:
            raise
        except Exception as e:
            raise explain(self.url, e, self.access) from None
        if "b" in mode:
            return f
        return io.TextIOWrapper(f, encoding=encoding or "utf-8")

    def read_text(self, encoding: str = "utf-8") -> str:
        with self.open("rb") as f:
            return f.read().decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        try:
            self.fs.pipe_file(self.path, data)
        except Exception as e:
            raise explain(self.url, e, self.access) from None

    def upload(self, local: str | os.PathLike) -> None:
        try:
            self.fs.put_file(os.fspath(local), self.path)
        except Exception as e:
            raise explain(self.url, e, self.access) from None


def work_path(work_dir: str | os.PathLike, access: Access | None = None):
    """A local work dir as a `Path`, a URL as a `RemotePath`."""
    s = os.fspath(work_dir)
    return RemotePath(s, access) if is_url(s) else Path(s)


WorkPath = Path | RemotePath
