"""Which models are on disk, followed as they come and go: a watch on `<home>/models`
(`CatalogWatch`, inotify; `PortableCatalogWatch`, watchfiles, off Linux or when `portable`),
the deletions hive carries out, and every resync. The workers of a model that went are
queued at once, and their reconciles stop them and say why (`Departures` keeps why); a
model that came or went is looked at (a declared one is fetched again), and so are the
workers that wait for it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Set

from hive.model.events import Level
from hive.model.ids import Kind, ObjectKey
from hive.model.observed import ObservedModel
from hive.model.text import clip, show_text, show_url
from hive.narration.bus import Bus
from hive.observers.catalog import ModelCatalog
from hive.observers.catalog_watch import CatalogWatch
from hive.observers.portable_catalog_watch import PortableCatalogWatch
from hive.platform import native_watch
from hive.runtime.departures import REMOVED, Departures
from hive.runtime.queue import WorkQueue
from hive.runtime.worker_table import WorkerTable

log = logging.getLogger(__name__)


#: How long a model whose file went (its directory still there) waits before it is fetched
#: again. Its workers are stopped at once; the fetch waits, so that an `rm -rf` of the
#: directory under way is not raced by the fetch writing into it ("Directory not empty").
FILE_SETTLE = 1.0


class ModelPresence:
    def __init__(
        self,
        *,
        catalog: ModelCatalog,
        departures: Departures,
        workers: WorkerTable,
        users: Callable[[str], list[str]],
        queue: WorkQueue,
        bus: Bus,
        resync_interval: float,
        portable: bool = False,
    ) -> None:
        self._catalog = catalog
        self._departures = departures
        self._workers = workers
        #: The Workers that use a model (records and processes).
        self._users = users
        self._queue = queue
        self._bus = bus
        self._resync_interval = resync_interval
        #: Watch with watchfiles even where inotify is there (`hive.platform`).
        self._portable = portable
        self._watch: CatalogWatch | PortableCatalogWatch | None = None
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Watch `<home>/models` (armed at once: before the catalog is first read), or say
        why not: a model removed by hand is then noticed at the resync."""
        root = self._catalog.root
        native = native_watch(portable=self._portable)
        watch = CatalogWatch(root) if native else PortableCatalogWatch(root)
        try:
            watch.arm()
        except OSError as exc:  # the inotify instance or watch limit
            self._watch_lost(exc, "")
            return
        self._watch = watch
        self._task = asyncio.create_task(self._follow(watch), name="catalog watch")

    async def stop(self) -> None:
        """The watch ends, and its descriptor is closed even if its task never ran."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    # -- what changed --------------------------------------------------------------------
    def changed(self, names: Iterable[str], *, settle: float = 0.0) -> None:
        """Models whose files may have come or gone (a directory created, removed or
        renamed under `<home>/models`, a deletion carried out): each is looked at now. The
        workers of one that went are stopped at once, told why; a declared one is fetched
        again (after `settle` seconds: see FILE_SETTLE); the workers waiting for one that
        came back start."""
        for name in sorted(set(names)):
            try:
                observed = self._catalog.observe(name)
            except OSError:
                observed = None  # unreadable: the Model's reconcile, queued below, says so
            else:
                self.seen(name, observed)
            for worker in self._users(name):
                self._queue.add(ObjectKey.of(Kind.WORKER, worker))
            self._queue.add_after(ObjectKey.of(Kind.MODEL, name), settle)

    def resync(self, observed: Mapping[str, ObservedModel], *, used: set[str]) -> None:
        """At every resync: a model that went unseen (no inotify, only its file removed)
        is told here; why models went is forgotten once no worker uses them (`used`)."""
        for name in sorted(self._departures.known() | set(observed)):
            self.seen(name, observed.get(name))
        self._departures.retain(used)

    def seen(self, name: str, observed: ObservedModel | None) -> None:
        """Record what the catalog shows of `name`; if it has just gone, say so, and queue
        the workers that serve it: their reconciles stop them (they cannot restart on a
        file that is not there)."""
        why = self._departures.observed(name, observed)
        if why is None:
            return
        key = ObjectKey.of(Kind.MODEL, name)
        # Their reconciles stop them (ModelGone), through the queue like every action.
        stopping = sorted(self._workers.serving(name, running=True))
        self._bus.emit(
            "model_gone",
            f"Model {name} is gone: {why}"
            + (
                f"; stopping the workers that serve it: {clip(', '.join(stopping))}"
                if stopping
                else ""
            ),
            object=key,
            level=Level.WARNING if why == REMOVED else Level.INFO,
            data={"reason": why, "workers": stopping},
        )
        for worker in self._users(name):
            self._queue.add(ObjectKey.of(Kind.WORKER, worker))

    # -- the watch -----------------------------------------------------------------------
    async def _follow(self, watch: CatalogWatch | PortableCatalogWatch) -> None:
        """Model directories that come or go under `<home>/models` are looked at at once;
        without a watch, the resync notices them."""
        try:
            while True:
                batch = await watch.changes()
                names: set[str] = set(batch.names)
                if batch.root_gone:  # the models directory itself went: watch it again
                    try:
                        watch.arm()
                    except OSError:
                        self._look_at(names | self._departures.known())
                        raise
                if batch.rescan or batch.root_gone:
                    names |= self._departures.known() | set(self._catalog.names())
                self._look_at(names)
                if batch.files_gone - names:
                    self._look_at(batch.files_gone - names, settle=FILE_SETTLE)
        except OSError as exc:
            self._watch_lost(exc, " any more")
        finally:
            watch.close()

    def _look_at(self, names: Set[str], *, settle: float = 0.0) -> None:
        try:
            self.changed(names, settle=settle)
        except Exception as exc:  # the watch never dies: narrate, the resync catches up
            log.exception("looking at changed models failed")
            self._bus.emit(
                "resync_error", f"{type(exc).__name__}: {show_text(str(exc))}", level=Level.ERROR
            )

    def _watch_lost(self, exc: OSError, when: str) -> None:
        self._bus.emit(
            "catalog_watch_error",
            f"cannot watch {show_url(self._catalog.root)}{when} "
            f"({exc.strerror or type(exc).__name__}): a model removed "
            f"by hand is noticed at the resync (every {self._resync_interval:g} s)",
            level=Level.WARNING,
        )
