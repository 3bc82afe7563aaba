"""The home's lock: one `hive serve` per home at a time (two would spawn, adopt and stop
the same workers), and `hive stop-workers` leaves a home alone while a hive serves it.

An flock on `<home>/state/hive.lock`, held by the serving process for its life: the kernel
lets it go when the process ends, SIGKILL included, so a crash never leaves it stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from hive.errors import Conflict


class HomeInUse(Conflict):
    reason = "HomeInUse"


def lock_path(home: Path) -> Path:
    return home / "state" / "hive.lock"


def hold(home: Path) -> int:
    """Take the lock for this process's life (keep the returned descriptor open), with
    this pid written in it; HomeInUse naming the hive that holds it."""
    path = lock_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = _pid_in(fd)
        os.close(fd)
        who = f"pid {other}" if other else "another process"
        raise HomeInUse(
            f"another hive ({who}) is serving home {home}; stop it first, or pass another --home"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def holder(home: Path) -> int | None:
    """The pid of the hive serving `home` now (0 if it cannot be read), or None."""
    try:
        fd = os.open(lock_path(home), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _pid_in(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _pid_in(fd: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode().strip() or 0)
    return 0
