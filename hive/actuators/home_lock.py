"""The home's lock: one `hive serve` per home at a time (two would spawn, adopt and stop
the same workers), and `hive stop-workers` holds it too while it stops them (a hive that
started meanwhile would adopt the very workers being stopped).

An flock on `<home>/state/hive.lock`, held by the process for its life (or the command's):
the kernel lets it go when the process ends, SIGKILL included, so a crash never leaves it
stale. The file says who holds it: `<pid> <command>`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from hive.errors import Conflict

#: What the lock is held for: `hive serve` or `hive stop-workers`.
SERVE = "serve"
STOP_WORKERS = "stop-workers"


class HomeInUse(Conflict):
    reason = "HomeInUse"

    def __init__(self, message: str, *, pid: int, command: str) -> None:
        super().__init__(message)
        #: The holder's pid (0 if it could not be read) and command (SERVE, STOP_WORKERS).
        self.pid = pid
        self.command = command


def lock_path(home: Path) -> Path:
    return home / "state" / "hive.lock"


def hold(home: Path, *, command: str = SERVE) -> int:
    """Take the lock (keep the returned descriptor open while it is needed), with this pid
    and `command` written in it; HomeInUse naming the process that holds it."""
    path = lock_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid, other = _holder_in(fd)
        os.close(fd)
        who = f"pid {pid}" if pid else "pid ?"
        if other == STOP_WORKERS:
            message = (
                f"hive stop-workers ({who}) is stopping the workers of home {home}; try "
                "again once it has finished"
            )
        else:
            message = (
                f"another hive ({who}) is serving home {home}; stop it first, or pass "
                "another --home"
            )
        raise HomeInUse(message, pid=pid, command=other) from None
    # The holder line only helps the message of the one refused: a full disk must not stop
    # hive from starting (the lock itself is the flock, which needs no space).
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
    return fd


def _holder_in(fd: int) -> tuple[int, str]:
    """The pid (0 if unreadable) and command written in the lock file."""
    with contextlib.suppress(OSError, ValueError):
        pid, _, command = os.pread(fd, 64, 0).decode().strip().partition(" ")
        return int(pid or 0), command or SERVE
    return 0, SERVE
