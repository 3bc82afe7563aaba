"""Directories watched with watchfiles, the portable way (`hive.platform.native_watch`):
the primitive under the portable catalog watch (hive/observers/catalog_watch.py) and tree
watch (hive/sources/tree_watch.py), as `hive/inotify.py` is under the Linux ones.

watchfiles' Rust watcher (the notify crate: inotify, FSEvents, ReadDirectoryChangesW)
gathers changes; its `watch()` loop runs in a thread of its own, wakes every `STEP_MS` to
look at them, and hands a batch over once a step passes with no new one. So a change is
seen 1 to 2 steps after it happens, and the thread costs a little CPU while nothing does
(docs/architecture.md, "Watching directories"). What a batch holds is `(Change, path)`:
added, modified or deleted, nothing about a file being closed or the kernel's queue
overflowing; each watcher makes of that what it needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence
from pathlib import Path

from watchfiles import Change
from watchfiles._rust_notify import RustNotify, WatchfilesRustInternalError

#: Milliseconds between the watcher thread's looks: a change waits 1 to 2 steps (B1), and
#: each look costs the thread a wake-up while nothing happens (B7).
STEP_MS = 20
#: At most this many milliseconds of changes that keep coming are gathered in one batch.
DEBOUNCE_MS = 100

#: The name of each watcher's thread (one per ChangeReader open).
WATCHER_THREAD = "hive watchfiles"

Batch = set[tuple[Change, Path]]


class ChangeReader:
    """`open()` watches `directories` (each alone, not what is under it) and starts the
    thread; `changes()` waits for the next batch, `take()` returns what has arrived without
    waiting; `close()` stops the thread within a step (again: nothing)."""

    def __init__(self, directories: Sequence[Path], *, step_ms: int = STEP_MS) -> None:
        self.directories = tuple(directories)
        self._step_ms = step_ms
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._batch: Batch = set()
        self._error: BaseException | None = None
        self._ready = asyncio.Event()

    def open(self) -> None:
        """Watch, on the running loop's behalf. Raises OSError: a directory is gone or
        unreadable, or the kernel refuses the watcher (its limits)."""
        # A directory that cannot be read is left unwatched, as the inotify watches leave
        # it (the tree's reader reports it); the callers check their root themselves.
        paths = [str(d) for d in self.directories]
        try:
            notify = RustNotify(paths, False, False, 300, False, True)
        except WatchfilesRustInternalError as exc:  # the inotify instance limit, above all
            raise OSError(f"cannot watch {len(self.directories)} directories: {exc}") from exc
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._run, args=(notify,), name=WATCHER_THREAD, daemon=True
        )
        self._thread.start()

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def _run(self, notify: RustNotify) -> None:
        try:
            while True:
                raw = notify.watch(DEBOUNCE_MS, self._step_ms, 0, self._stop)
                if raw == "stop":
                    return
                if not isinstance(raw, str):  # no timeout is asked for; no signal here
                    self._hand({(Change(c), Path(p)) for c, p in raw}, None)
        except WatchfilesRustInternalError as exc:  # the watcher failed: watching did
            self._hand(set(), OSError(f"watching failed: {exc}"))
        except Exception as exc:  # a bug: told to the loop as it is
            self._hand(set(), exc)
        finally:
            notify.close()

    def _hand(self, batch: Batch, error: BaseException | None) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: no one waits any more
            self._loop.call_soon_threadsafe(self._receive, batch, error)

    def _receive(self, batch: Batch, error: BaseException | None) -> None:
        if self._stop.is_set():
            return
        self._batch |= batch
        self._error = self._error or error
        self._ready.set()

    async def changes(self) -> Batch:
        """The next batch (raises what stopped the watcher thread, if something did)."""
        while not (found := self.take()):
            self._ready.clear()
            await self._ready.wait()
        return found

    def take(self) -> Batch:
        """What has arrived since the last look; never waits."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        found, self._batch = self._batch, set()
        return found

    def close(self, *, wait: bool = False) -> None:
        """The thread stops at its next step and closes the watcher; nothing more arrives.
        `wait`: until the thread has ended (a step at most, blocking)."""
        self._stop.set()
        self._batch = set()
        if wait and self._thread is not None:
            self._thread.join(timeout=10 * self._step_ms / 1000)
