"""A directory tree followed with inotify, read on the event loop: the Linux way
(`hive.platform.native_watch`; `portable_tree_watch` is the watchfiles twin).

The kernel's queue is read the moment it is readable (`hive.inotify.InotifyReader`): no
thread, no polling step, nothing awake while nothing changes. This module keeps one watch
per directory of the tree and turns the kernel's events into what the directory source
needs to know: which files to read again, or that the whole tree must be read again.

Files count when they are complete: on close after writing, on rename into place, on
deletion, on a metadata change (chmod). A file still being written is not read half-way;
a new link (hard or symbolic) is read when it appears, since no write will follow.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from inotify_simple import Event
from inotify_simple import flags as F

from hive.core.parse import is_manifest_file
from hive.inotify import SELF_GONE, InotifyReader

#: What a watch on each directory asks the kernel for.
WATCH_MASK = (
    F.CLOSE_WRITE
    | F.MOVED_TO
    | F.MOVED_FROM
    | F.CREATE
    | F.DELETE
    | F.ATTRIB
    | F.DELETE_SELF
    | F.MOVE_SELF
    | F.ONLYDIR
)
#: A file in the root that allows the directory to go from some records to none (a hidden
#: file: never a manifest). Its coming or going has the tree read again.
ALLOW_EMPTY_MARKER = ".hive-allow-empty"
_FILE_CHANGED = F.CLOSE_WRITE | F.MOVED_TO | F.MOVED_FROM | F.DELETE | F.ATTRIB


@dataclass(frozen=True)
class TreeChanges:
    #: Manifest files that may have changed (written, replaced, deleted): read each again.
    paths: frozenset[Path] = frozenset()
    #: A directory came, went or moved, a hidden link was swapped (a Kubernetes ConfigMap
    #: update), or the kernel's queue overflowed: read the whole tree again.
    rescan: bool = False
    #: The watched root itself was deleted, moved away or unmounted.
    root_gone: bool = False
    #: A manifest file was deleted or renamed away (see `REMOVAL_SETTLE`).
    removed: bool = False

    def __or__(self, later: TreeChanges) -> TreeChanges:
        return TreeChanges(
            paths=self.paths | later.paths,
            rescan=self.rescan or later.rescan,
            root_gone=self.root_gone or later.root_gone,
            removed=self.removed or later.removed,
        )


#: Seconds a batch that removes a file waits for what usually follows at once: the file
#: written again (`git checkout` unlinks, then creates; an editor renames the old file to
#: its backup, then writes), or its whole directory going (`rm -rf` deletes the files
#: first). Read at once, the file's records would go, and their workers be stopped, for
#: the few ms in between. An added or rewritten file is read without waiting.
REMOVAL_SETTLE = 0.05


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _is_link(path: Path) -> bool:
    """A symbolic link, or a file with more than one name: it appeared whole."""
    try:
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISLNK(st.st_mode) or st.st_nlink > 1


class TreeWatch:
    """One inotify instance watching `root` and every directory under it that is not
    hidden. Use as a context manager on the event loop; `changes()` waits for the next
    batch."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._reader = InotifyReader()
        self._dirs: dict[int, Path] = {}
        self._root_wd = -1

    def __enter__(self) -> TreeWatch:
        self._reader.open()
        try:
            self._root_wd = self._reader.add_watch(self.root, WATCH_MASK)
            self._dirs = {self._root_wd: self.root}
            self._watch_tree()
        except BaseException:
            self._reader.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._reader.close()

    @property
    def directories(self) -> list[Path]:
        """The directories watched now."""
        return sorted(self._dirs.values())

    def _watch_tree(self) -> None:
        """Watch every directory of the tree (hidden ones and symlinks to directories
        skipped, as the reader skips them), and forget the watches of those that left it.
        Adding a watch that exists returns its descriptor: a moved directory keeps its
        watch under its new path."""
        seen = {self._root_wd}
        for dirpath, dirnames, _ in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not _hidden(d)]
            for d in dirnames:
                path = Path(dirpath, d)
                try:
                    wd = self._reader.add_watch(path, WATCH_MASK)
                except (FileNotFoundError, NotADirectoryError, PermissionError):
                    # Gone again already (the parent's event says so), or unreadable (the
                    # tree's reader reports that).
                    continue
                self._dirs[wd] = path
                seen.add(wd)
        for wd in set(self._dirs) - seen:
            del self._dirs[wd]
            with contextlib.suppress(OSError):  # the kernel dropped it with the directory
                self._reader.rm_watch(wd)

    async def changes(self) -> TreeChanges:
        """The next batch: everything the kernel has queued once it has anything."""
        while True:
            batch = self._batch(await self._reader.events())
            if batch.removed and not batch.root_gone:
                await asyncio.sleep(REMOVAL_SETTLE)
                batch |= self._batch(self._reader.read())
            if batch.paths or batch.rescan or batch.root_gone:
                return batch

    def _batch(self, events: list[Event]) -> TreeChanges:
        paths: set[Path] = set()
        rescan = root_gone = removed = False
        for event in events:
            mask = event.mask
            if mask & F.Q_OVERFLOW:
                rescan = True
                continue
            directory = self._dirs.get(event.wd)
            if directory is None:
                continue  # a watch already forgotten
            if mask & SELF_GONE:
                if event.wd == self._root_wd:
                    root_gone = True
                elif mask & F.IGNORED:
                    self._dirs.pop(event.wd, None)
                continue  # a subdirectory's own end is also an event in its parent
            if not event.name:
                continue
            path = directory / event.name
            if mask & F.ISDIR:
                rescan = rescan or not _hidden(event.name)
            elif event.name == ALLOW_EMPTY_MARKER and event.wd == self._root_wd:
                rescan = rescan or bool(mask & (_FILE_CHANGED | F.CREATE))
            elif _hidden(event.name):
                # A hidden symlink swapped in (`..data`, as Kubernetes updates a mounted
                # ConfigMap) changes what the visible links point to.
                rescan = rescan or (bool(mask & (F.MOVED_TO | F.CREATE)) and _is_link(path))
            elif not is_manifest_file(path):
                continue
            elif mask & _FILE_CHANGED or (mask & F.CREATE and _is_link(path)):
                paths.add(path)
                removed = removed or bool(mask & (F.DELETE | F.MOVED_FROM))
        if rescan and not root_gone:
            self._watch_tree()
        return TreeChanges(
            paths=frozenset(paths), rescan=rescan, root_gone=root_gone, removed=removed
        )
