"""A Ray for one command: the cluster at an address, or a local one started for the run.
Used by the engines that spread a build's work (`fulltext/engine.py`, `qa/distributed.py`)."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from .records import InputError

T = TypeVar("T")


def ray_address(given: str | None) -> str | None:
    return given or os.environ.get("RAY_ADDRESS") or None


def reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse, in one line, a Ray address nothing answers at (`ray.init` would wait minutes)."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--ray-address {address}: give HOST:PORT of the cluster's head (ray start --head prints it)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise InputError(f"cannot reach the Ray cluster at {address} ({e.strerror or e}): is `ray start --head` "
                         "running there, and the port open?") from None


@contextmanager
def ray_session(address: str | None, workers: int) -> Iterator[Any]:
    """`ray`, connected to `address` (or a fresh local Ray of `workers` CPUs), shut down after."""
    import ray  # noqa: PLC0415 - about a second to import; only the Ray routes need it

    if ray.is_initialized():
        yield ray
        return
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
        else:
            ray.init(address="local", num_cpus=workers, include_dashboard=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise InputError(f"cannot start or reach {where}: {str(e).splitlines()[0] if str(e) else e!r}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def task_error(ray: Any, e: BaseException, what: str) -> InputError:
    """One line for a task that failed: its own error (an InputError), or what Ray reports
    once its retries are spent (a worker or node that kept dying)."""
    if isinstance(e, ray.exceptions.RayTaskError) and isinstance(e.cause, InputError):
        return e.cause
    reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
    return InputError(f"{what}: failed on the cluster ({type(e).__name__}{': ' + reason if reason else ''}); "
                      "run the same command again: finished work is kept")


def as_completed(ray: Any, pending: dict[Any, T], label: Callable[[T], str]) -> Iterator[tuple[T, Any]]:
    """(item, result) for each task of `pending` (object ref -> item), as tasks finish; a failed
    task stops the run with one line naming `label(item)`."""
    pending = dict(pending)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            item = pending.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as e:
                raise task_error(ray, e, label(item)) from None
            yield item, result
