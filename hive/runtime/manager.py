"""The manager wires store, sources, the reconcilers of each kind, the controller that runs
them, narration and queue, and starts and stops them in order (stop is the reverse of
start)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterable

from hive.actuators.provision import purge_trash, secure_records
from hive.core.clock import Clock, SystemClock
from hive.core.plan import plan
from hive.core.store import ReplaceResult, Store
from hive.model.events import Level
from hive.model.ids import Kind, ObjectKey
from hive.model.machine import SystemSample
from hive.model.manifests import ModelManifest, Record, WorkerManifest
from hive.model.status import ModelPhase, ObjectStatus
from hive.model.text import show_text
from hive.narration.bus import Bus
from hive.narration.console import ConsolePrinter
from hive.observers.catalog import ModelCatalog
from hive.observers.gpus import probe_from_setting
from hive.observers.history import ResourceHistory
from hive.observers.runtimes import RuntimeCatalog
from hive.observers.system import SystemSampler
from hive.queen.link import QueenLink
from hive.runtime.controller import Controller
from hive.runtime.departures import Departures
from hive.runtime.metrics import HiveMetrics
from hive.runtime.model_actions import Downloads
from hive.runtime.model_presence import ModelPresence
from hive.runtime.model_reconciler import ModelReconciler
from hive.runtime.queue import WorkQueue
from hive.runtime.sample_feed import SampleFeed
from hive.runtime.source_health import SourceHealth
from hive.runtime.status_store import StatusStore
from hive.runtime.worker_reconciler import WorkerReconciler
from hive.runtime.worker_table import WorkerTable
from hive.settings import Settings
from hive.sources.base import Source
from hive.sources.directory import DirectorySource
from hive.sources.git import GitSource
from hive.sources.http import HttpSource, HttpSources

log = logging.getLogger(__name__)


class Manager:
    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.started_at = self.clock.now()
        #: What /metrics exports; other parts of hive declare their families here.
        self.metrics = HiveMetrics()
        self.bus = Bus(clock=self.clock, capacity=settings.event_buffer)
        if settings.console:
            self.bus.add_listener(ConsolePrinter())
        self.store = Store(clock=self.clock, labels=settings.hive_labels)
        self.statuses = StatusStore(store=self.store, clock=self.clock)
        self.statuses.watch(self._phase_moved)
        #: Each source's Ready / Reconciling / Stalled, from its objects' statuses.
        self.source_health = SourceHealth(
            store=self.store, statuses=self.statuses, bus=self.bus, clock=self.clock
        )
        self.catalog = ModelCatalog(settings.home)
        self.queue = WorkQueue(
            clock=self.clock, base=settings.backoff_base, cap=settings.backoff_cap
        )
        self.runtimes = RuntimeCatalog(settings.home)
        self.departures = Departures(store=self.store)
        self.gpus = probe_from_setting(settings.gpu_probe)
        #: The live workers and their histories (the API reads them).
        self.workers = WorkerTable(clock=self.clock, bus=self.bus, queue=self.queue)
        self.worker_reconciler = WorkerReconciler(
            settings=settings,
            store=self.store,
            statuses=self.statuses,
            table=self.workers,
            models=self.catalog,
            runtimes=self.runtimes,
            gpus=self.gpus,
            departures=self.departures,
            bus=self.bus,
            clock=self.clock,
            queue=self.queue,
            queen_url=lambda: self.queen.url,  # --queen-url, or the one discovered since
        )
        self.presence = ModelPresence(
            catalog=self.catalog,
            departures=self.departures,
            workers=self.workers,
            users=self.workers_of,
            queue=self.queue,
            bus=self.bus,
            resync_interval=settings.resync_interval,
            portable=settings.portable,
        )
        self.model_reconciler = ModelReconciler(
            store=self.store,
            statuses=self.statuses,
            catalog=self.catalog,
            bus=self.bus,
            clock=self.clock,
            action_timeout=settings.action_timeout,
            partial_ttl=settings.partial_ttl,
            file_roots=settings.file_roots,
            downloads=Downloads(
                limit=settings.max_downloads,
                rate=settings.download_rate,
                written=self.metrics.download_bytes,
            ),
            on_deleted=self._model_deleted,
        )
        self.controller = Controller(
            queue=self.queue,
            store=self.store,
            statuses=self.statuses,
            clock=self.clock,
            reconcilers=[self.model_reconciler, self.worker_reconciler],
            workers=settings.max_concurrent_actions,
            metrics=self.metrics.reconcile,
        )
        #: The last 15 minutes of samples, for the machine and each worker (the dashboard).
        self.history = ResourceHistory(interval=settings.system_sample_interval)
        #: Each sample as a live frame for `/v1/events?samples=true` (the dashboard).
        self.samples = SampleFeed()
        #: The machine, sampled on an interval in a thread (the API and heartbeats read it).
        self.system = SystemSampler(
            home=settings.home,
            bind_host=settings.host,
            gpus=self.gpus,
            interval=settings.system_sample_interval,
            clock=self.clock,
            processes=lambda: {i.state.pid: i.proc.handle for i in self.workers.instances.values()},
            on_sample=self._record_history,
        )
        #: The Queen: heartbeats of both rbee generations, once one is discovered.
        self.queen = QueenLink(
            settings=settings,
            clock=self.clock,
            bus=self.bus,
            catalog=self.catalog,
            workers=self.workers,
            sample=lambda: self.system.latest,
            started_at=self.started_at,
        )
        self._runtime_errors: list[str] = []
        self.sources: list[Source] = [
            DirectorySource(
                path,
                store=self.store,
                bus=self.bus,
                on_change=self.on_change,
                allow_empty=settings.allow_empty,
                portable=settings.portable,
            )
            for path in settings.desired
        ]
        self.sources += [
            GitSource(
                spec,
                home=settings.home,
                store=self.store,
                bus=self.bus,
                clock=self.clock,
                on_change=self.on_change,
                timeout=settings.git_timeout,
            )
            for spec in settings.git
        ]
        #: `api`, `queen` and the other sets written over HTTP (`/v1/desired`, jobs).
        self.http_sources = HttpSources(
            home=settings.home, store=self.store, bus=self.bus, on_change=self.on_change
        )
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def api_source(self) -> HttpSource:
        """The set jobs and `hive apply` write."""
        return self.http_sources.api

    # -- wiring --------------------------------------------------------------------------
    def on_change(self, result: ReplaceResult) -> None:
        """A source replaced its set: enqueue what changed, narrate conflicts."""
        # The workers of a changed Model are looked at too: `state: absent` stops them.
        dependents = {
            ObjectKey.of(Kind.WORKER, worker)
            for key in result.changed
            if key.kind is Kind.MODEL
            for worker in self.workers_of(key.name)
        }
        for key in sorted(result.changed):
            record = self.store.desired(key)
            if record is None:
                self.bus.emit(
                    "manifest_removed", f"{key}: no source declares it any more", object=key
                )
            else:
                self.bus.emit(
                    "manifest_applied",
                    f"{key}: generation {self.store.generation(key)} from {record.origin.where()}",
                    object=key,
                    data={"source": record.origin.source, "generation": self.store.generation(key)},
                )
            self.model_reconciler.cancel_if_stale(key)
            self.queue.add(key)
        for key in sorted(dependents):
            self.queue.add(key)
        for key in result.touched:
            self.queue.add(key)
        self.source_health.records_changed(
            result.changed | result.touched | {note.key for note in result.new_conflicts}
        )
        for note in result.new_conflicts:
            self.bus.emit(
                "conflict",
                note.message,
                object=note.key,
                level=Level.WARNING,
                data={"owner": note.owner.source, "other": note.other.source},
            )
            self.queue.add(note.key)

    def _phase_moved(
        self, key: ObjectKey, before: ObjectStatus | None, after: ObjectStatus | None
    ) -> None:
        """A Model that became Available: the Workers waiting for it are looked at now."""
        if key.kind is Kind.MODEL and after is not None and after.phase == ModelPhase.AVAILABLE:
            self.presence.seen(key.name, self.catalog.observe(key.name))
            for name in self.workers_of(key.name):
                self.queue.add(ObjectKey.of(Kind.WORKER, name))

    def workers_of(self, model: str, *, running: bool = False) -> list[str]:
        """The Workers that use `model`: every record that names it (from any source) and
        every process that serves it. With `running`, only those running or meant to run
        (not `state: stopped`, not being stopped)."""
        names = {
            name
            for name in self.store.workers_naming(model)
            if not (running and _stopped(self.store.desired(ObjectKey.of(Kind.WORKER, name))))
        }
        names.update(self.workers.serving(model, running=running))
        return sorted(names)

    def delete_model(self, name: str, *, users: list[str]) -> asyncio.Future[None]:
        """An API deletion of `name`'s files: recorded, queued, and done by the Model's
        reconcile; the future ends with it. Its workers are told the model was deleted by
        API request."""
        key = ObjectKey.of(Kind.MODEL, name)
        self.departures.deleting_by_api(name)
        request = self.model_reconciler.request_delete(name, users=users)
        self.controller.expedite(key)  # asked for now: not after a failing key's back-off
        self.queue.add(key)
        return request.done

    def models_changed(self, names: Iterable[str]) -> None:
        """Models whose files may have come or gone: see `ModelPresence.changed`."""
        self.presence.changed(names)

    def _model_deleted(self, name: str) -> None:
        """`state: absent` has deleted the model's files: its workers are stopped now."""
        self.presence.changed([name])

    def _check_runtimes(self) -> None:
        """Narrate bad worker catalog entries, once per change."""
        self.runtimes.refresh()
        errors = [f"{e.path}: {e.message}" for e in self.runtimes.errors]
        for text in errors:
            if text not in self._runtime_errors:
                self.bus.emit(
                    "runtime_entry_invalid",
                    f"skipping worker catalog entry {text}",
                    level=Level.WARNING,
                )
        self._runtime_errors = errors

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()  # nothing half-started is left behind
            raise

    async def _start(self) -> None:
        self.settings.home.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(purge_trash, self.catalog)
        await asyncio.to_thread(secure_records, self.catalog)  # records of an older hive
        hive_id = self.settings.hive_id
        what = "this machine's hostname" if hive_id == socket.gethostname() else "HIVE_HIVE_ID"
        self.bus.emit(
            "hive_start",
            f"hive starting: hive id {hive_id} ({what}), home {self.settings.home}, "
            f"{len(self.sources)} source(s)",
            data={"home": str(self.settings.home), "hive_id": hive_id},
        )
        self._check_runtimes()
        if self.gpus.error:
            self.bus.emit("gpu_probe", f"no GPU found: {self.gpus.error}")
        # Before any reconcile: the machine's first sample, then the Queen (if one is known).
        await self.system.start()
        await self.queen.start()
        await self.worker_reconciler.start()  # adopts the workers an earlier hive left running
        self.controller.start()
        await self.http_sources.load()  # read from files: before the watches begin
        for source in self.sources:
            await source.start()
        self.presence.start()  # armed before the catalog is first read
        self._tasks.append(asyncio.create_task(self._resync_loop(), name="resync"))
        self.resync_now()

    async def stop(self) -> None:
        self.bus.emit("hive_stop", "hive stopping")
        for source in reversed(self.sources):
            await source.stop()
        await self.queue.shutdown()
        self.model_reconciler.cancel_all()
        await self.controller.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.presence.stop()
        await self.worker_reconciler.stop(stop_workers=self.settings.stop_workers_on_exit)
        await self.queen.stop()
        await self.system.stop()

    def _record_history(self, sample: SystemSample) -> None:
        instances = self.workers.instances
        declared = {k.name for k in self.store.declared_keys() if k.kind is Kind.WORKER}
        self.history.record(
            sample,
            workers={n: (i.state.pid, i.health.metrics) for n, i in instances.items()},
            keep=declared | set(instances),
        )
        self.samples.publish(
            sample,
            workers={n: i.health.metrics for n, i in instances.items()},
            pids={n: i.state.pid for n, i in instances.items()},
        )

    def model_records(self) -> dict[str, Record]:
        return {r.name: r for r in self.store.records() if isinstance(r.manifest, ModelManifest)}

    def resync_now(self) -> None:
        """One full observe + plan pass; every key with work to do is enqueued."""
        observed = self.catalog.observe_all()
        actions = plan(
            self.model_records(),
            observed,
            prune_allowed=self.store.all_synced,
            now=self.clock.now(),
            partial_ttl=self.settings.partial_ttl,
        )
        for action in actions:
            self.queue.add(action.key)
        self.presence.resync(
            observed,
            used={
                r.manifest.spec.model
                for r in self.store.records()
                if isinstance(r.manifest, WorkerManifest)
            }
            | {i.state.model for i in self.workers.instances.values()},
        )
        for key in self.store.declared_keys():
            if key.kind is Kind.WORKER or key not in self.statuses:
                self.queue.add(key)
        for name in self.workers.names():  # adopted workers no record declares
            self.queue.add(ObjectKey.of(Kind.WORKER, name))

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_interval)
            try:
                for source in self.sources:
                    await source.resync()
                self._check_runtimes()
                self.resync_now()
            except Exception as exc:
                log.exception("resync failed")
                self.bus.emit(
                    "resync_error",
                    f"{type(exc).__name__}: {show_text(str(exc))}",
                    level=Level.ERROR,
                )


def _stopped(record: Record | None) -> bool:
    """Whether a Worker's record says `state: stopped`."""
    manifest = record.manifest if record is not None else None
    return isinstance(manifest, WorkerManifest) and manifest.spec.state == "stopped"
