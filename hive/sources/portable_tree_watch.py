"""A directory tree followed with watchfiles: the portable twin of `tree_watch.TreeWatch`
(`hive.platform.native_watch` chooses), telling the directory source the same
`TreeChanges`.

One watch per directory of the tree that is not hidden (`hive.portable_watch`). watchfiles
names paths added, modified or deleted; what it does not tell is made up here:
- A file still being written: watchfiles says "modified", not "closed". A file named by
  a change is read once its last write is `SETTLE` seconds old (its mtime, looked at
  again when due). A writer that pauses longer than that mid-file is read half-way (the
  file is read again when it is finished); Linux's inotify knows better.
- A directory that came, went or moved: the watches are made again from the tree (the
  old ones would name a moved directory's files by its old path), new ones before the old
  go, and the tree is read again.
- The root itself deleted, moved or replaced: its (device, inode) is checked at each batch.
- The kernel's queue overflowing: watchfiles drops that news; the periodic resync repairs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from types import TracebackType

from watchfiles import Change

from hive.core.parse import is_manifest_file
from hive.portable_watch import STEP_MS, Batch, ChangeReader
from hive.sources.tree_watch import (
    ALLOW_EMPTY_MARKER,
    REMOVAL_SETTLE,
    TreeChanges,
    _hidden,
    _is_link,
)

#: Seconds a file named by a change must have gone unwritten before it is read.
SETTLE = 2 * STEP_MS / 1000
#: What says a file held still: mtime, size, inode, ctime (as the directory source's).
Stamp = tuple[int, int, int, int]


def _stamp(path: Path) -> Stamp | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)


class PortableTreeWatch:
    """watchfiles watching `root` and every directory under it that is not hidden. Use as
    a context manager on the event loop; `changes()` waits for the next batch."""

    def __init__(self, root: Path, *, step_ms: int = STEP_MS) -> None:
        self.root = root
        self._step_ms = step_ms
        self._reader: ChangeReader | None = None
        self._dirs: frozenset[Path] = frozenset()
        self._root_id: tuple[int, int] | None = None
        #: Files named by a change, not read yet: the stamp last seen, and when (monotonic)
        #: the file is still enough to be read if that stamp holds.
        self._settling: dict[Path, tuple[Stamp, float]] = {}

    def __enter__(self) -> PortableTreeWatch:
        st = self.root.stat()  # OSError: gone or unreadable, as inotify's watch would raise
        with os.scandir(self.root):
            pass
        self._root_id = (st.st_dev, st.st_ino)
        self._arm()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._reader is not None:
            self._reader.close(wait=True)  # ended with the watch: no thread left behind
            self._reader = None

    @property
    def directories(self) -> list[Path]:
        """The directories watched now."""
        return sorted(self._dirs)

    def _tree(self) -> list[Path]:
        """The root and every directory under it, hidden ones and symlinks skipped (as the
        directory source's reader skips them)."""
        found = [self.root]
        for dirpath, dirnames, _ in os.walk(self.root):
            dirnames[:] = [
                d for d in dirnames if not _hidden(d) and not os.path.islink(Path(dirpath, d))
            ]
            found.extend(Path(dirpath, d) for d in dirnames)
        return found

    def _arm(self) -> None:
        """Watch the tree as it is now: the new watches start before the old ones stop, so
        nothing falls between. A directory gone between the walk and its watch: again."""
        for attempt in range(3):
            dirs = self._tree()
            reader = ChangeReader(dirs, step_ms=self._step_ms)
            try:
                reader.open()
            except FileNotFoundError:
                if attempt == 2 or not self.root.is_dir():
                    raise
                continue
            old, self._reader, self._dirs = self._reader, reader, frozenset(dirs)
            if old is not None:
                old.close()
            return

    def _root_replaced(self) -> bool:
        try:
            st = self.root.stat()
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self._root_id

    async def changes(self) -> TreeChanges:
        """The next batch: files that held still, or the tree to read again."""
        while True:
            assert self._reader is not None, "enter first"
            raw: Batch = set()
            if self._settling:  # look again when the first one is due, even if nothing comes
                due = min(d for _, d in self._settling.values()) - time.monotonic()
                with contextlib.suppress(TimeoutError):
                    raw = await asyncio.wait_for(self._reader.changes(), max(due, 0.001))
            else:
                raw = await self._reader.changes()
            batch = self._batch(raw)
            if batch.removed and not batch.root_gone:
                # What usually follows at once (see REMOVAL_SETTLE), seen a step or two later.
                await asyncio.sleep(REMOVAL_SETTLE + 2 * self._step_ms / 1000)
                batch |= self._batch(self._reader.take())
            if raw and not batch.root_gone and self._root_replaced():
                batch |= TreeChanges(root_gone=True)
            batch |= TreeChanges(paths=self._settled())
            if batch.rescan and not batch.root_gone:
                self._arm()
            if batch.paths or batch.rescan or batch.root_gone:
                return batch

    def _batch(self, raw: Batch) -> TreeChanges:
        kinds: dict[Path, set[Change]] = {}
        for change, path in raw:
            kinds.setdefault(path, set()).add(change)
        paths: set[Path] = set()
        rescan = root_gone = removed = False
        for path, seen in kinds.items():
            gone = seen == {Change.deleted}  # deleted and made again: there
            if path == self.root:
                root_gone = root_gone or gone
            elif path in self._dirs:
                rescan = True  # a watched directory went, or was moved
            elif path.parent not in self._dirs:
                continue  # under a directory no longer watched
            elif not gone and path.is_dir() and not path.is_symlink():
                rescan = rescan or not _hidden(path.name)
            elif path.name == ALLOW_EMPTY_MARKER and path.parent == self.root:
                rescan = True
            elif _hidden(path.name):
                # A hidden symlink swapped in (`..data`, as Kubernetes updates a mounted
                # ConfigMap) changes what the visible links point to.
                rescan = rescan or (Change.added in seen and _is_link(path))
            elif not is_manifest_file(path):
                continue
            elif gone:
                self._settling.pop(path, None)
                paths.add(path)
                removed = True
            elif path not in self._settling:
                self._settling[path] = ((-1, -1, -1, -1), 0.0)  # looked at below
        return TreeChanges(
            paths=frozenset(paths), rescan=rescan, root_gone=root_gone, removed=removed
        )

    def _settled(self) -> frozenset[Path]:
        """The files named by changes that have held still: unwritten for SETTLE seconds
        by their mtime, or, for an mtime ahead of this clock, the same stamp for SETTLE
        seconds since it was first seen; a file gone is told at once."""
        ready: set[Path] = set()
        now, wall = time.monotonic(), time.time_ns()
        for path, (last, due) in list(self._settling.items()):
            stamp = _stamp(path)
            if stamp is None:
                ready.add(path)
            elif stamp != last:  # new, or written since the last look
                age = (wall - stamp[0]) / 1e9
                due = now + (SETTLE if age < 0 else max(SETTLE - age, 0.0))
                self._settling[path] = (stamp, due)
            if path not in ready and now >= due:
                ready.add(path)
        for path in ready:
            del self._settling[path]
        return frozenset(ready)
