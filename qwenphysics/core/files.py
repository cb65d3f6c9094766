"""Writing a file so that a reader never sees half of it."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write(path: Path, data: bytes, *, fsync: bool = False, tmp: Path | None = None) -> None:
    """Write `data` to a temporary file beside `path` and rename it into place. The temporary
    name is `<name>.tmp-<pid>` (what a work dir's lock removes when its run died) unless `tmp`
    names another. `fsync` makes the data durable before the rename, for files a resumed run
    trusts."""
    tmp = tmp or path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
