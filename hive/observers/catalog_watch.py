"""Which model directories came or went under `<home>/models`, as inotify tells it.

One watch, on the models directory alone, for directories created, deleted or renamed in
it; nothing inside a model's directory is watched, so a download's writes wake nothing.
The manager looks at each model named at once: a model removed by hand (`rm -rf`) stops
its workers within milliseconds, not at the next resync.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from inotify_simple import flags as F

from hive.inotify import SELF_GONE, InotifyReader
from hive.model.ids import name_problem

WATCH_MASK = (
    F.CREATE | F.DELETE | F.MOVED_FROM | F.MOVED_TO | F.DELETE_SELF | F.MOVE_SELF | F.ONLYDIR
)


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
        self._reader = InotifyReader()

    def arm(self) -> None:
        """Watch the models directory (made if missing: it is hive's own, and a download
        makes it too). Raises OSError when inotify cannot be had (its limits)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._reader.open()
        try:
            self._reader.add_watch(self.root, WATCH_MASK)
        except BaseException:
            self._reader.close()
            raise

    def close(self) -> None:
        self._reader.close()

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
            names: set[str] = set()
            rescan = root_gone = False
            for event in await self._reader.events():
                if event.mask & F.Q_OVERFLOW:
                    rescan = True
                elif event.mask & SELF_GONE:
                    root_gone = True
                elif event.mask & F.ISDIR and _model_name(event.name):
                    names.add(event.name)
            if names or rescan or root_gone:
                return CatalogChanges(names=frozenset(names), rescan=rescan, root_gone=root_gone)


def _model_name(name: str) -> bool:
    """A model's directory: not hidden (`.deleting-…` is a deletion's trash), a valid name."""
    return bool(name) and not name.startswith(".") and name_problem(name) is None
