"""Output folders replaced as a whole, atomically, and never at the expense of a user's files.

The contract every command that writes an output folder follows (datasets, models, merges):

* The new output is written into a hidden sibling, `.<name>.partial-<pid>`, and renamed into
  place only when complete: an interrupted run never leaves files that look finished.
* An existing folder is replaced only when it is empty or holds a previous output of the
  same kind. `owned(folder)` recognises one (e.g. by its `manifest.json`) and lists the
  files it wrote; a folder holding anything else is refused with one line, before any work.
* Of a previous output, only the files it wrote are removed.
* A run holds an exclusive lock on `.lock` inside its partial folder while it works. The
  next run into the same place removes partial folders whose lock it can take (their run
  died, even by `kill -9`), and the leftovers of a replacement that was cut short.
"""

from __future__ import annotations

import fcntl
import glob
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import UserError

LOCK = ".lock"
Owned = Callable[[Path], "set[str] | None"]


def _listing(names: list[str], n: int = 3) -> str:
    shown = ", ".join(names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")


def files_under(folder: Path) -> list[str]:
    """Relative paths of everything under `folder` that is not a directory (links included,
    never followed), '/'-separated and sorted; symbolic links to folders count as entries."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        rel = os.path.relpath(dirpath, folder)
        for d in list(dirnames):
            if os.path.islink(os.path.join(dirpath, d)):
                filenames.append(d)
                dirnames.remove(d)
        for f in filenames:
            out.append(f if rel == "." else f"{rel}/{f}".replace(os.sep, "/"))
    return sorted(out)


def _safe_relative(rel: str) -> bool:
    parts = rel.split("/")
    return bool(rel) and not rel.startswith("/") and ".." not in parts and "" not in parts


def foreign_files(folder: Path, owned: Owned) -> tuple[list[str], bool]:
    """(files in `folder` that a previous output did not write, whether one was recognised)."""
    present = files_under(folder)
    if not present:
        return [], False
    known = owned(folder)
    if known is None:
        return present, False
    known = {k for k in known if _safe_relative(k)}
    return [f for f in present if f not in known], True


def _nearest_existing(p: Path) -> Path:
    while not p.exists() and p.parent != p:
        p = p.parent
    return p


def check_target(out: Path | str, owned: Owned, *, flag: str = "--out",
                 inputs: Iterable[str] = ()) -> None:
    """Refuse, with one line, an output folder a run must not replace or cannot create."""
    out = Path(out)
    resolved = out.resolve()
    cwd = Path.cwd().resolve()
    if resolved.parent == resolved:
        raise UserError(f"{flag} {out} is the file system root: give a folder of its own for the output")
    if resolved == cwd or resolved in cwd.parents:
        raise UserError(f"{flag} {out} is the current folder or one above it: give a new folder for the output")
    if resolved == Path.home().resolve():
        raise UserError(f"{flag} {out} is your home folder: give a new folder for the output")
    for inp in inputs:
        if not inp or "://" in inp or inp.startswith("hf:"):
            continue
        ri = Path(inp).resolve()
        if ri == resolved or resolved in ri.parents:
            raise UserError(f"{flag} {out} holds the input {inp}: give a separate folder for the output")
        if ri.is_dir() and ri in resolved.parents:
            raise UserError(f"{flag} {out} is inside the input folder {inp}: a later run would read the "
                            "output as input; put it elsewhere")
    if out.is_symlink():
        raise UserError(f"{flag} {out} is a symbolic link: give a real folder")
    if out.exists():
        if not out.is_dir():
            raise UserError(f"{flag} {out} is a file, not a folder: give a folder for the output")
        foreign, recognised = foreign_files(out, owned)
        if foreign and not recognised:
            raise UserError(f"{flag} {out} is not empty and holds no earlier output of this command "
                            f"({_listing(foreign)}): give an empty or new folder; nothing was changed")
        if foreign:
            raise UserError(f"{flag} {out} holds files an earlier run did not write ({_listing(foreign)}): "
                            "move them out or give another folder; nothing was changed")
    where = _nearest_existing(resolved.parent)
    if not where.is_dir():
        raise UserError(f"{flag} {out}: {where} is a file, so the folder cannot be created there")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=f".{out.name}.probe-", dir=where))
    except OSError as e:
        raise UserError(f"{flag} {out}: cannot create files in {where} ({e.strerror}); "
                        "choose another folder") from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_of(p: Path) -> int | None:
    tail = p.name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def lock_is_free(lock: Path) -> bool:
    """True when nobody holds `lock` (the run that made it has ended)."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)  # closing releases a lock we took
    return True


def _abandoned(p: Path) -> bool:
    if (p / LOCK).exists():
        return lock_is_free(p / LOCK)
    pid = _pid_of(p)
    return pid is not None and not _pid_alive(pid)


def remove_owned(folder: Path, owned: Owned) -> None:
    """Delete what an earlier output wrote in `folder` (and then the folder, if empty)."""
    root = folder.resolve()
    for rel in sorted(owned(folder) or ()):
        if not _safe_relative(rel):
            continue
        p = folder / rel
        if root not in p.resolve().parents or (p.is_dir() and not p.is_symlink()):
            continue
        p.unlink(missing_ok=True)
    for dirpath, _, _ in sorted(os.walk(folder), key=lambda t: -len(t[0])):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass  # not empty: something not ours stays


def sweep(out: Path, owned: Owned) -> list[Path]:
    """Remove what dead runs left next to `out`; returns the removed paths."""
    removed = []
    pattern = glob.escape(f".{out.name}")
    for p in sorted(out.parent.glob(pattern + ".partial-*")):
        if p.is_dir() and not p.is_symlink() and _abandoned(p):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    for p in sorted(out.parent.glob(pattern + ".old-*")):
        pid = _pid_of(p)
        if p.is_dir() and not p.is_symlink() and pid is not None and not _pid_alive(pid):
            remove_owned(p, owned)
            removed.append(p)
    return removed


class Staging:
    """A folder being written for `out`; `commit()` puts it in place, `abort()` drops it."""

    def __init__(self, out: Path | str, owned: Owned, *, flag: str = "--out", inputs: Iterable[str] = (),
                 checked: bool = False):
        self.out = Path(out)
        self.owned, self.flag = owned, flag
        if not checked:
            check_target(self.out, owned, flag=flag, inputs=inputs)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        sweep(self.out, owned)
        self.path = self.out.parent / f".{self.out.name}.partial-{os.getpid()}"
        if self.path.exists():  # this very process staged the same output before and died in it
            shutil.rmtree(self.path)
        self._fd: int | None = None
        try:
            self.path.mkdir()
            self._fd = os.open(self.path / LOCK, os.O_CREAT | os.O_RDWR, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:  # Ctrl-C or SIGTERM right here: leave nothing behind
            self.abort()
            raise

    def commit(self) -> None:
        out = self.out
        if out.is_symlink() or (out.exists() and not out.is_dir()):
            raise UserError(f"{self.flag} {out} was replaced by a file or link while the run worked; "
                            "nothing was written")
        if out.exists():
            foreign, _ = foreign_files(out, self.owned)
            if foreign:
                raise UserError(f"{self.flag} {out} got files this run did not write while it worked "
                                f"({_listing(foreign)}); nothing was replaced")
        os.unlink(self.path / LOCK)
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
        self.path.rename(out)
        self._release()
        if old is not None:
            remove_owned(old, self.owned)

    def abort(self) -> None:
        self._release()
        shutil.rmtree(self.path, ignore_errors=True)

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class WorkDir:
    """A folder of intermediate results that reruns reuse (a build's shard map, a teacher's
    answers): refused when it holds something else, locked while a run uses it, with the
    temporary files of dead runs removed when the next run takes the lock."""

    MARKER = ".qwenphysics-work"

    def __init__(self, path: Path | str, *, flag: str = "--work-dir", inputs: Iterable[str] = (),
                 recognise: Callable[[list[str]], bool] | None = None):
        self.path = Path(path)
        self.flag = flag
        check_target(self.path, self._owned(recognise), flag=flag, inputs=inputs)
        self._fd: int | None = None

    def _owned(self, recognise):
        def owned(folder: Path) -> set[str] | None:
            present = files_under(folder)
            if (folder / self.MARKER).is_file() or (recognise is not None and recognise(present)):
                return set(present)
            return None

        return owned

    def __enter__(self) -> WorkDir:
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / self.MARKER).touch()
        self._fd = os.open(self.path / LOCK, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            self._fd = None
            raise UserError(f"{self.flag} {self.path} is in use by another running build: wait for it, "
                            "or give another folder") from None
        for p in self.path.rglob("*.tmp-*"):  # nobody else holds the lock: these are dead runs' files
            if p.is_file() and not p.is_symlink():
                p.unlink(missing_ok=True)
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
