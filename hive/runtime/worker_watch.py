"""The process watcher: a worker's end wakes its key in the queue (`hive.platform`'s
`watch_exit`: a pidfd on Linux, psutil polled elsewhere or when `portable`), and
`check_exit` reaps it and records how it ended. The worker reconciler reads the end at
its next reconcile; nothing else is told."""

from __future__ import annotations

from hive.core.clock import Clock
from hive.model.workers import ExitInfo
from hive.observers.processes import is_same
from hive.platform import watch_exit
from hive.runtime.queue import WorkQueue
from hive.runtime.worker_table import Instance


class ProcessWatcher:
    def __init__(self, *, clock: Clock, queue: WorkQueue, portable: bool = False) -> None:
        self._clock = clock
        self._queue = queue
        self._portable = portable

    def watch(self, instance: Instance) -> None:
        """Wake the worker's key when its process ends."""
        watch = watch_exit(
            instance.state.pid, lambda: self._ended(instance), portable=self._portable
        )
        instance.proc.unwatch = watch.close

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
