"""Child processes that never outlive the process that started them."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

_prctl: Callable[..., int] | None  # prctl(2) from libc; None where there is none
try:  # looked up before any fork: children only call it
    import ctypes

    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (ImportError, OSError, AttributeError):  # pragma: no cover - not Linux
    _prctl = None

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int | None = None, sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies (Linux).

    Called first thing in a worker process. `parent_pid` closes the race where the parent
    died before the request was made: the worker then exits at once."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, int(sig))
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


def new_session_dying_with_parent() -> None:
    """`preexec_fn` for servers started with Popen: own process group (so the whole group
    can be stopped), SIGTERM when the starting process dies."""
    os.setsid()
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))


def new_session_killed_with_parent() -> None:
    """`preexec_fn` for servers with nothing to save (a teacher model's server): own process
    group, SIGKILL when the starting process dies, so it never keeps generating for nobody
    (a server stopping politely finishes its running requests first)."""
    os.setsid()
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))


def sigterm_as_interrupt() -> None:
    """Make SIGTERM behave like Ctrl-C (KeyboardInterrupt), and restore SIGINT's default
    handler, which a process started from a script's background job inherits ignored."""

    def _raise(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _raise)
    signal.signal(signal.SIGINT, signal.default_int_handler)
