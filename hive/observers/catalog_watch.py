"""Which model directories came or went under `<home>/models`, as inotify tells it.

One watch, on the models directory alone, for directories created, deleted or renamed in
it; nothing inside a model's directory is watched, so a download's writes wake nothing.
The manager looks at each model named at once: a model removed by hand (`rm -rf`) stops
its workers within milliseconds, not at the next resync.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from inotify_simple import INotify
from inotify_simple import flags as F

from hive.model.ids import name_problem

WATCH_MASK = (
    F.CREATE | F.DELETE | F.MOVED_FROM | F.MOVED_TO | F.DELETE_SELF | F.MOVE_SELF | F.ONLYDIR
)
_SELF_GONE = F.DELETE_SELF | F.MOVE_SELF | F.UNMOUNT | F.IGNORED


@dataclass(frozen=True)
class CatalogChanges:
    #: Models whose directory appeared, disappeared or was renamed.
    names: frozenset[str] = frozenset()
    #: The kernel's queue overflowed: look at every model.
    rescan: bool = False
    #: The models directory itself was deleted or moved: look at every model, and watch
    #: again (see `CatalogWatch.__enter__`).
    root_gone: bool = False


class CatalogWatch:
    """An inotify watch on the models directory, on the event loop (`loop.add_reader`:
    nothing awake while nothing changes). `arm()` starts it (at once, so that nothing falls
    between it and a first read of the catalog), `changes()` waits for the next batch,
    `close()` ends it; or use it as a context manager."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._inotify: INotify | None = None
        self._ready = asyncio.Event()

    def arm(self) -> None:
        """Watch the models directory (made if missing: it is hive's own, and a download
        makes it too). Raises OSError when inotify cannot be had (its limits)."""
        self.close()
        self.root.mkdir(parents=True, exist_ok=True)
        inotify = INotify(nonblocking=True)
        try:
            inotify.add_watch(self.root, WATCH_MASK)
            asyncio.get_running_loop().add_reader(inotify.fileno(), self._ready.set)
        except BaseException:
            inotify.close()
            raise
        self._inotify = inotify

    def close(self) -> None:
        if self._inotify is not None:
            asyncio.get_running_loop().remove_reader(self._inotify.fileno())
            self._inotify.close()
            self._inotify = None

    def __enter__(self) -> CatalogWatch:
        self.arm()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def changes(self) -> CatalogChanges:
        """The next batch that names a model (or asks for a look at all of them)."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            batch = self._read()
            if batch.names or batch.rescan or batch.root_gone:
                return batch

    def _read(self) -> CatalogChanges:
        assert self._inotify is not None
        names: set[str] = set()
        rescan = root_gone = False
        for event in self._inotify.read(timeout=0):
            if event.mask & F.Q_OVERFLOW:
                rescan = True
            elif event.mask & _SELF_GONE:
                root_gone = True
            elif event.mask & F.ISDIR and _model_name(event.name):
                names.add(event.name)
        return CatalogChanges(names=frozenset(names), rescan=rescan, root_gone=root_gone)


def _model_name(name: str) -> bool:
    """A model's directory: not hidden (`.deleting-…` is a deletion's trash), a valid name."""
    return bool(name) and not name.startswith(".") and name_problem(name) is None
