"""Which models came or went under `<home>/models`, as inotify tells it: the Linux way
(`hive.platform.native_watch`; `portable_catalog_watch` is the watchfiles twin).

A watch on the models directory, for directories created, deleted or renamed in it; and
one on each model's directory for a GGUF file deleted or moved out of it (`rm
…/model.gguf`). Nothing else inside is watched: a download's writes and its `.partial`
files wake nothing. The manager looks at each model named at once: a model removed by
hand stops its workers within milliseconds, not at the next resync.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from inotify_simple import flags as F

from hive.inotify import SELF_GONE, InotifyReader
from hive.model.ids import name_problem

WATCH_MASK = (
    F.CREATE | F.DELETE | F.MOVED_FROM | F.MOVED_TO | F.DELETE_SELF | F.MOVE_SELF | F.ONLYDIR
)
#: In a model's directory: a file that leaves it (the directory's own going is told by the
#: models directory's watch).
MODEL_MASK = F.DELETE | F.MOVED_FROM | F.ONLYDIR


@dataclass(frozen=True)
class CatalogChanges:
    #: Models whose directory appeared, disappeared or was renamed.
    names: frozenset[str] = frozenset()
    #: Models a GGUF file left (deleted, or moved out) while their directory stayed, as far
    #: as this batch tells: maybe the first step of an `rm -rf` still under way.
    files_gone: frozenset[str] = frozenset()
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
        self._root_wd = -1
        #: The watch descriptor of each model directory watched, and its model's name.
        self._models: dict[int, str] = {}

    def arm(self) -> None:
        """Watch the models directory (made if missing: it is hive's own, and a download
        makes it too). Raises OSError when inotify cannot be had (its limits)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._reader.open()
        self._models.clear()
        try:
            self._root_wd = self._reader.add_watch(self.root, WATCH_MASK)
            for entry in self.root.iterdir():
                if _model_name(entry.name):
                    self._watch_model(entry.name)
        except BaseException:
            self._reader.close()
            raise

    def _watch_model(self, name: str) -> None:
        """Watch one model's directory; one that is gone already (or not a directory, or
        past the watch limit) is left to the models directory's watch and the resync."""
        with contextlib.suppress(OSError):
            self._models[self._reader.add_watch(self.root / name, MODEL_MASK)] = name

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
            files_gone: set[str] = set()
            rescan = root_gone = False
            for event in await self._reader.events():
                if event.mask & F.Q_OVERFLOW:
                    rescan = True
                elif event.wd != self._root_wd:  # in a model's directory
                    model = self._models.get(event.wd)
                    if event.mask & F.IGNORED:  # its directory went: its watch with it
                        self._models.pop(event.wd, None)
                    elif model is not None and _gguf_file(event.name):
                        files_gone.add(model)
                elif event.mask & SELF_GONE:
                    root_gone = True
                elif event.mask & F.ISDIR and _model_name(event.name):
                    names.add(event.name)
                    if event.mask & (F.CREATE | F.MOVED_TO):
                        self._watch_model(event.name)
            if names or files_gone or rescan or root_gone:
                return CatalogChanges(
                    names=frozenset(names),
                    files_gone=frozenset(files_gone - names),
                    rescan=rescan,
                    root_gone=root_gone,
                )


def _model_name(name: str) -> bool:
    """A model's directory: not hidden (`.deleting-…` is a deletion's trash), a valid name."""
    return bool(name) and not name.startswith(".") and name_problem(name) is None


def _gguf_file(name: str) -> bool:
    """A model's file (`model.gguf`, a split model's parts), not a download's `.partial`."""
    return name.endswith(".gguf") and not name.startswith(".")
