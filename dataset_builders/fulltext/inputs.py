"""Sort the `--input` / `--metadata` paths of a full-text build into work units and metadata.

Sources (each becomes one or more units of the shard map):

* `arXiv_src_YYMM_NNN.tar` (any `*.tar`): a bulk source shard, one unit each;
* unarXive-style JSONL (`*.jsonl[.gz|.zst]` whose first line has `body_text`), one unit each;
* single e-prints named by their arXiv id (`2401.00001.gz`, `hep-th9901001.gz`, no suffix),
  grouped per folder, `EPRINTS_PER_UNIT` to a unit;
* unpacked LaTeX projects: a folder named by its arXiv id holding `.tex` files, grouped per
  parent folder the same way.

Metadata: Kaggle snapshot JSON/JSONL (first line without `body_text`) and OAI-PMH pages
(`.xml[.gz]`), given with `--metadata` or mixed into `--input` (the recipes' commands pass the
snapshot and the source folder together). Folders are walked recursively, in sorted order.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..latex.archive import parse_arxiv_id
from ..readers import inside
from ..readers.compression import STREAM_ERRORS, open_binary
from ..records import InputError
from .remote import Access, in_months, is_url, list_remote

EPRINTS_PER_UNIT = 500
_JSON_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz", ".json.zst", ".jsonl.zst")


@dataclass(frozen=True)
class Unit:
    """One task of the shard map: a shard file, an unarXive file, or a group of e-prints or
    project folders. `name` is unique per build and names the files in the work dir."""

    name: str
    kind: str  # tar | unarxive | eprints | projects
    paths: tuple[str, ...]
    label: str  # what progress lines and the manifest call it (a file or folder name)
    remote: str = ""  # a URL's identity for resume (MD5 or ETag, and size); "" for local files


@dataclass
class Inputs:
    units: list[Unit] = field(default_factory=list)
    metadata: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    links_outside: list[str] = field(default_factory=list)  # links in a folder leading out of it: not followed


def _h8(s: str) -> str:
    return hashlib.blake2b(s.encode("utf-8", "surrogateescape"), digest_size=4).hexdigest()


def _first_line(path: Path) -> bytes:
    try:
        with open_binary(path) as f:
            return f.readline(1 << 20)
    except STREAM_ERRORS + (ValueError, InputError):
        return b""


def _is_unarxive(path: Path) -> bool:
    line = _first_line(path)
    return b'"body_text"' in line or b'"paper_id"' in line


def _eprint_id(path: Path) -> str | None:
    name = path.name
    for suffix in (".tar.gz", ".tgz", ".gz", ".tar", ".tex", ".zip"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return parse_arxiv_id(name)


def _has_tex(d: Path) -> bool:
    try:
        return any(e.is_file() and e.name.lower().endswith(".tex") for e in os.scandir(d))
    except OSError:
        return False


class _Collector:
    def __init__(self, months: tuple[int, int] | None = None):
        self.out = Inputs()
        self.months = months
        self._names: set[str] = set()

    def unit(self, kind: str, paths: list[str], stem: str, label: str, remote: str = "") -> None:
        key = chr(0).join(p if remote else os.path.abspath(p) for p in paths)
        name = f"{stem}-{_h8(kind + chr(0) + key)}"
        if name in self._names:
            return  # the same input given twice
        self._names.add(name)
        self.out.units.append(Unit(name, kind, tuple(paths), label, remote))

    def grouped(self, kind: str, paths: list[str], folder: Path) -> None:
        for k in range(0, len(paths), EPRINTS_PER_UNIT):
            part = paths[k:k + EPRINTS_PER_UNIT]
            self.unit(kind, part, f"{kind}-{folder.name or 'root'}-{k // EPRINTS_PER_UNIT:04d}",
                      f"{folder}/ ({kind} {k + 1}-{k + len(part)})")

    def file(self, path: Path, explicit: bool) -> None:
        name = path.name.lower()
        if name.endswith(".tar") and _eprint_id(path) is None:
            if in_months(path.name, self.months):
                self.unit("tar", [str(path)], path.name[:-4], path.name)
        elif ".xml" in name:
            self.out.metadata.append(str(path))
        elif name.endswith(_JSON_SUFFIXES):
            if _is_unarxive(path):
                self.unit("unarxive", [str(path)], name.split(".")[0], path.name)
            else:
                self.out.metadata.append(str(path))
        elif (eprint := _eprint_id(path)) is not None:
            self.unit("eprints", [str(path)], f"eprint-{eprint.replace('/', '')}", path.name)
        elif explicit:
            raise InputError(f"unknown input: {path} (expected arXiv source shards *.tar, e-prints named "
                             "<arXiv id>.gz, LaTeX project folders, unarXive .jsonl, or metadata "
                             ".json/.jsonl/.xml)")
        else:
            self.out.ignored.append(str(path))

    def folder(self, root: Path) -> None:
        if _has_tex(root):  # the folder is one unpacked project
            if _eprint_id(root) is None:
                raise InputError(f"{root} holds .tex files but its name is not an arXiv id: name a "
                                 "project folder after its paper (e.g. 2401.00001)")
            self.unit("projects", [str(root)], f"project-{root.name.replace('/', '')}", root.name)
            return
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            for name in [d for d in dirnames if not inside(root, here / d)]:
                dirnames.remove(name)
                self.out.links_outside.append(str(here / name))
            for name in [f for f in filenames if not inside(root, here / f)]:
                filenames.remove(name)
                self.out.links_outside.append(str(here / name))
            dirnames.sort()
            projects = [d for d in dirnames if _eprint_id(Path(d)) is not None and _has_tex(here / d)]
            if projects:
                self.grouped("projects", [str(here / d) for d in projects], here)
                dirnames[:] = [d for d in dirnames if d not in projects]
            eprints = []
            for fn in sorted(filenames):
                p = here / fn
                low = fn.lower()
                if (low.endswith(".tar") and _eprint_id(p) is None) or ".xml" in low or low.endswith(_JSON_SUFFIXES):
                    self.file(p, explicit=False)
                elif _eprint_id(p) is not None:
                    eprints.append(str(p))
                else:
                    self.out.ignored.append(str(p))
            if eprints:
                self.grouped("eprints", eprints, here)


def classify(inputs: list[str], metadata: list[str] | None = None, *, months: tuple[int, int] | None = None,
             access: Access | None = None) -> Inputs:
    """Walk the inputs (in order; folders sorted) into units and metadata files. URLs are
    source shards read through fsspec (see `remote.py`); `months` selects shards by name."""
    c = _Collector(months)
    seen: dict[tuple[int, int], str] = {}
    for spec in list(inputs) + list(metadata or []):
        if spec.startswith("hf:") or is_url(spec) or not Path(spec).exists():
            continue
        st = Path(spec).stat()
        if (st.st_dev, st.st_ino) in seen:
            raise InputError(f"{spec} is the same input as {seen[(st.st_dev, st.st_ino)]}: give each input once")
        seen[(st.st_dev, st.st_ino)] = spec
    for spec in inputs:
        if spec.startswith("hf:"):
            raise InputError(f"{spec}: Hugging Face datasets are metadata only; full-text builds read "
                             "LaTeX sources (pass hf: ids to the metadata specs)")
        if is_url(spec):
            for shard in list_remote(spec, access or Access(), months):
                c.unit("tar", [shard.url], shard.name[:-4], shard.name, remote=shard.identity)
            continue
        p = Path(spec)
        if not p.exists():
            raise InputError(f"input not found: {spec}")
        if p.is_dir():
            c.folder(p)
        else:
            c.file(p, explicit=True)
    for m in metadata or []:
        if is_url(m):
            raise InputError(f"--metadata {m}: metadata is read from local files: download the snapshot first")
        if not m.startswith("hf:") and not Path(m).exists():
            raise InputError(f"metadata not found: {m}")
        c.out.metadata.append(m)
    return c.out
