"""A lock on a run directory, held by the one process that writes it.

``RUN/.lock`` is locked with ``fcntl.flock`` (exclusive, non-blocking) and holds the pid of
its holder. The operating system releases the lock when the holder's file descriptor is
closed, so a crash or a SIGKILL never leaves a stale lock; the file itself stays.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LOCK_NAME", "RunLockedError", "run_lock"]

LOCK_NAME = ".lock"


class RunLockedError(RuntimeError):
    """Another process holds the run directory's lock."""


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike, *, enabled: bool = True) -> Iterator[Path | None]:
    """Hold ``run_dir/.lock`` for the body (creating ``run_dir``); no-op if not ``enabled``.

    Raises
    ------
    RunLockedError
        At once, naming the holder's pid, if another process holds the lock.
    """
    if not enabled:
        yield None
        return
    import fcntl

    path = Path(run_dir) / LOCK_NAME
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(f"{run_dir}: the run directory is in use by process "
                                 f"{_holder(fd)} (lock {path}); wait for it to finish or "
                                 "choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        return str(int(os.pread(fd, 32, 0).decode().strip()))
    return "(unknown pid)"
