"""The process watcher: a worker's end wakes its key in the queue (a pidfd on Linux, else
the health loop's look), and `check_exit` reaps it and records how it ended. The worker
reconciler reads the end at its next reconcile; nothing else is told."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from hive.core.clock import Clock
from hive.model.workers import ExitInfo
from hive.observers.processes import is_same
from hive.runtime.queue import WorkQueue
from hive.runtime.worker_table import Instance


def watch_exit(pid: int, on_exit: Callable[[], None]) -> Callable[[], None] | None:
    """Call `on_exit` on the running loop once process `pid` has ended; returns what stops
    the watch, or None where the end cannot be watched (no pidfd: not Linux, an old kernel,
    the process already gone), and then the caller looks for it itself. The one place that
    knows how a process's end is watched."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None
    loop = asyncio.get_running_loop()
    loop.add_reader(fd, on_exit)

    def unwatch() -> None:
        loop.remove_reader(fd)
        os.close(fd)

    return unwatch


class ProcessWatcher:
    def __init__(self, *, clock: Clock, queue: WorkQueue) -> None:
        self._clock = clock
        self._queue = queue

    def watch(self, instance: Instance) -> None:
        """Wake the worker's key when its process ends."""
        instance.proc.unwatch = watch_exit(instance.state.pid, lambda: self._ended(instance))

    def unwatch(self, instance: Instance) -> None:
        unwatch, instance.proc.unwatch = instance.proc.unwatch, None
        if unwatch is not None:
            unwatch()

    def _ended(self, instance: Instance) -> None:
        self.unwatch(instance)
        self.check_exit(instance)
        self._queue.add(instance.key)

    def check_exit(self, instance: Instance) -> bool:
        """True once the process is gone; reaps it (hive's child) and records how it ended
        (an exit code, a signal, or unknown for an adopted process)."""
        proc = instance.proc
        if proc.exit is not None:
            return True
        code: int | None = None
        if proc.popen is not None:
            returncode = proc.popen.poll()
            if returncode is None:
                return False
            code = returncode
        elif is_same(proc.handle):
            return False
        at = self._clock.now()
        if code is None:
            proc.exit = ExitInfo(at=at)
        elif code < 0:
            proc.exit = ExitInfo(at=at, signal=-code)
        else:
            proc.exit = ExitInfo(at=at, code=code)
        return True
