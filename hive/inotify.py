"""One inotify instance read on the event loop: the primitive under the catalog watch
(hive/observers/catalog_watch.py) and the directory source's tree watch
(hive/sources/tree_watch.py), the Linux way; `hive/portable_watch.py` is the other.

Top-level, as errors.py is, because observers and sources both use it and neither should
import the other. The kernel's queue is read the moment it is readable (`loop.add_reader`):
no thread, no polling, nothing awake while nothing changes. `inotify_simple` makes the
syscalls; what the events mean is each watcher's business.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from inotify_simple import Event, INotify
from inotify_simple import flags as F

#: A watched directory itself is gone (deleted, moved away, its filesystem unmounted) or its
#: watch was dropped: what either watcher takes as "look at the root again".
SELF_GONE = F.DELETE_SELF | F.MOVE_SELF | F.UNMOUNT | F.IGNORED


class InotifyReader:
    """`open()` makes the instance and starts reading it (on the running loop), then
    `add_watch()` each path; `events()` waits for the next batch, `read()` takes what is
    queued now without waiting; `close()` ends it (again: nothing)."""

    def __init__(self) -> None:
        self._inotify: INotify | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = asyncio.Event()

    @property
    def is_open(self) -> bool:
        return self._inotify is not None

    def open(self) -> None:
        """A new instance, read on the running loop (a previous one is closed). Raises
        OSError when the kernel refuses one (its limit of instances)."""
        self.close()
        inotify = INotify(nonblocking=True)
        loop = asyncio.get_running_loop()
        try:
            loop.add_reader(inotify.fileno(), self._ready.set)
        except BaseException:
            inotify.close()
            raise
        self._inotify, self._loop = inotify, loop
        self._ready.clear()

    def add_watch(self, path: Path, mask: int) -> int:
        """Watch `path` (OSError: it is gone, unreadable, or the watch limit is reached);
        adding a watch that exists returns its descriptor."""
        assert self._inotify is not None, "open() first"
        wd: int = self._inotify.add_watch(path, mask)
        return wd

    def rm_watch(self, wd: int) -> None:
        assert self._inotify is not None, "open() first"
        self._inotify.rm_watch(wd)

    async def events(self) -> list[Event]:
        """The next events: waits until the kernel has queued some."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            found = self.read()
            if found:
                return found

    def read(self) -> list[Event]:
        """What the kernel has queued now (maybe nothing); never waits."""
        assert self._inotify is not None, "open() first"
        return list(self._inotify.read(timeout=0))

    def close(self) -> None:
        """Stop reading and close the instance (its watches go with it)."""
        if self._inotify is not None:
            assert self._loop is not None
            if not self._loop.is_closed():
                self._loop.remove_reader(self._inotify.fileno())
            self._inotify.close()
            self._inotify = self._loop = None
