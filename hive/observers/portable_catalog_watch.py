"""Which models came or went under `<home>/models`, as watchfiles tells it: the portable
twin of `catalog_watch.CatalogWatch` (`hive.platform.native_watch` chooses), telling the
same `CatalogChanges`.

The models directory is watched, and each model's directory on its own (not what is under
it); a model directory that comes or goes has the watches made again, the new ones before
the old go. A GGUF file deleted or moved out of a model's directory names its model; a
download's writes, its `.partial` and its publishing rename are seen and dropped here
(inotify's masks keep them from waking hive at all). The models directory itself deleted,
moved or replaced is told by its (device, inode), checked at each batch. watchfiles does not
tell a queue overflow: the periodic resync repairs what one would lose.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from watchfiles import Change

from hive.observers.catalog_watch import CatalogChanges, _gguf_file, _model_name
from hive.portable_watch import STEP_MS, ChangeReader


class PortableCatalogWatch:
    """watchfiles watching the models directory. `arm()` starts it (at once, so that
    nothing falls between it and a first read of the catalog), `changes()` waits for the
    next batch, `close()` ends it (its thread with it); or use it as a context manager."""

    def __init__(self, root: Path, *, step_ms: int = STEP_MS) -> None:
        self.root = root
        self._step_ms = step_ms
        self._reader: ChangeReader | None = None
        self._root_id: tuple[int, int] | None = None
        #: The models whose directories are watched.
        self._models: frozenset[str] = frozenset()

    def arm(self) -> None:
        """Watch the models directory (made if missing: it is hive's own, and a download
        makes it too). Raises OSError when it cannot be watched (inotify's limits)."""
        self.close()
        self.root.mkdir(parents=True, exist_ok=True)
        st = self.root.stat()
        self._root_id = (st.st_dev, st.st_ino)
        self._watch()

    def _watch(self) -> None:
        """Watch the models directory and each model's directory as they are now; the new
        watches start before the old ones stop. A directory gone between the listing and
        its watch: again."""
        for attempt in range(3):
            models = frozenset(
                e.name for e in self.root.iterdir() if _model_name(e.name) and _is_dir(e)
            )
            reader = ChangeReader(
                [self.root, *(self.root / m for m in sorted(models))], step_ms=self._step_ms
            )
            try:
                reader.open()
            except FileNotFoundError:
                if attempt == 2 or not self.root.is_dir():
                    raise
                continue
            old, self._reader, self._models = self._reader, reader, models
            if old is not None:
                old.close()
            return

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close(wait=True)
            self._reader = None

    def __enter__(self) -> PortableCatalogWatch:
        self.arm()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def changes(self) -> CatalogChanges:
        """The next batch that names a model (or says the models directory went)."""
        while True:
            assert self._reader is not None, "arm() first"
            kinds: dict[Path, set[Change]] = {}
            for change, path in await self._reader.changes():
                kinds.setdefault(path, set()).add(change)
            names: set[str] = set()
            files_gone: set[str] = set()
            root_gone = again = False
            for path, seen in kinds.items():
                gone = seen == {Change.deleted}  # deleted and made again: there
                if path == self.root:
                    root_gone = root_gone or gone
                elif path.parent == self.root and _model_name(path.name):
                    if path.name in self._models or path.is_dir():
                        names.add(path.name)
                        again = again or (path.name in self._models) != path.is_dir()
                elif (
                    gone
                    and path.parent.parent == self.root
                    and path.parent.name in self._models
                    and _gguf_file(path.name)
                ):
                    files_gone.add(path.parent.name)
            root_gone = root_gone or self._root_replaced()
            if again and not root_gone:
                self._watch()
            if names or files_gone or root_gone:
                return CatalogChanges(
                    names=frozenset(names),
                    files_gone=frozenset(files_gone - names),
                    root_gone=root_gone,
                )

    def _root_replaced(self) -> bool:
        try:
            st = self.root.stat()
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self._root_id


def _is_dir(entry: Path) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False
