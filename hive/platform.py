"""What hive asks of the operating system that Linux answers best, in one place: a
process's end (a pidfd), this boot's id (`/proc`), and whether directories are watched
with inotify read on the event loop or with watchfiles. Each has a portable answer
(psutil, watchfiles) that `portable=True` forces, and the tests run both ways. In `hive
serve`, `Settings.portable` (HIVE_PORTABLE=1) forces it for the watches and the process
ends; the boot id falls back by itself where `/proc` has none.

Top-level, as errors.py is: observers, actuators, sources and runtime all ask it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import select
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

#: The Linux calls are there (pidfd_open needs Linux 5.3; without it, psutil answers).
LINUX = sys.platform.startswith("linux")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
#: Seconds between looks at a process without a pidfd: an end is noticed within this.
PORTABLE_POLL = 0.5
#: The same while blocking for a group (a stop waits on it: shorter, as psutil's own wait).
PORTABLE_WAIT_STEP = 0.05


def native_watch(*, portable: bool = False) -> bool:
    """Whether directories are watched with inotify on the event loop (Linux, unless the
    portable way is asked for); otherwise watchfiles."""
    return LINUX and not portable


@functools.cache
def boot_id(*, portable: bool = False) -> str | None:
    """This boot of the machine: bytes written but not fsynced survive a restart of hive,
    not one of the machine. Linux's random boot id; elsewhere (or portable) the boot time
    as psutil reads it; None if neither can be read (then every unsynced model is hashed
    again)."""
    if not portable:
        with contextlib.suppress(OSError):
            return BOOT_ID.read_text().strip() or None
    try:
        return f"boot-time-{int(psutil.boot_time())}"
    except Exception:  # psutil cannot tell on this platform
        return None


class ExitWatch:
    """The end of one process, seen without reaping it (a child's exit status stays its
    parent's to read). On Linux a pidfd, readable once the process ends; otherwise, or
    portable, psutil looked at now and then (its start time tells a reused pid apart).
    `close()` releases it (again: nothing)."""

    def __init__(self, pid: int, *, portable: bool = False) -> None:
        self.pid = pid
        self.fd: int | None = None
        self._proc: psutil.Process | None = None
        self._gone = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.Handle | None = None
        try:
            if LINUX and not portable and hasattr(os, "pidfd_open"):
                with contextlib.suppress(OSError):  # an old kernel, a seccomp filter
                    self.fd = os.pidfd_open(pid)
            if self.fd is None:
                self._proc = psutil.Process(pid)
        except (ProcessLookupError, psutil.NoSuchProcess):
            self._gone = True  # ended, and reaped, already

    def ended(self) -> bool:
        """Whether the process has ended (a zombie has); never waits. Once closed, what
        was last seen."""
        if not self._gone:
            if self.fd is not None:
                self._gone = _readable(self.fd)
            elif self._proc is not None:
                try:
                    running = self._proc.is_running()
                    self._gone = not running or self._proc.status() == psutil.STATUS_ZOMBIE
                except psutil.Error:
                    self._gone = True
        return self._gone

    def on_end(self, callback: Callable[[], object], *, poll: float = PORTABLE_POLL) -> None:
        """Call `callback` once, on the running loop, when the process ends (at once if it
        has), then close; `poll`: seconds between looks without a pidfd."""
        loop = self._loop = asyncio.get_running_loop()

        def fire() -> None:
            self.close()
            callback()

        def look() -> None:
            self._timer = None
            if self.ended():
                fire()
            else:
                self._timer = loop.call_later(poll, look)

        if self.fd is not None and not self._gone:
            loop.add_reader(self.fd, fire)
        else:
            self._timer = loop.call_soon(look)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.fd is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = None
        self._proc = None
        self._loop = None


def watch_exit(
    pid: int,
    on_exit: Callable[[], object],
    *,
    portable: bool = False,
    poll: float = PORTABLE_POLL,
) -> ExitWatch:
    """`on_exit()` on the running loop once process `pid` ends (soon, if it has already);
    close the handle to stop watching."""
    watch = ExitWatch(pid, portable=portable)
    watch.on_end(on_exit, poll=poll)
    return watch


def wait_any(watches: Sequence[ExitWatch], timeout: float) -> None:
    """Block up to `timeout` seconds, returning as soon as one of `watches` has ended
    (pidfds: one poll(2); a watch without one is looked at every PORTABLE_WAIT_STEP)."""
    deadline = time.monotonic() + timeout
    fds = [w.fd for w in watches if w.fd is not None]
    poller = select.poll() if fds else None  # pidfds exist on Linux only, and poll(2) too
    for fd in fds:
        assert poller is not None
        poller.register(fd, select.POLLIN)
    every_fd = len(fds) == len(watches)
    while not any(w.ended() for w in watches):
        left = deadline - time.monotonic()
        if left <= 0:
            return
        step = left if every_fd else min(left, PORTABLE_WAIT_STEP)
        if poller is None:
            time.sleep(step)
        else:
            poller.poll(step * 1000)


def _readable(fd: int) -> bool:
    """A pidfd is readable once its process has ended (poll(2): any descriptor number,
    where select(2) stops at 1024)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))
