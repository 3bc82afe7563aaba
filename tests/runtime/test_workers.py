"""The worker reconciler in-process, on a fake clock, with real processes: CrashLoopBackOff
doubles and is capped, a long healthy run resets it, restart policies, and adopted
workers wait for every source to sync."""

from __future__ import annotations

import asyncio
import shutil
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from hive.core.clock import FakeClock
from hive.core.parse import parse_text
from hive.core.store import Store
from hive.model.events import Event
from hive.model.ids import Kind, ObjectKey, SourceName
from hive.model.status import ConditionType, ObjectStatus
from hive.narration.bus import Bus
from hive.observers.catalog import ModelCatalog
from hive.observers.gpus import NoGpuProbe
from hive.observers.runtimes import RuntimeCatalog
from hive.runtime.controller import Controller
from hive.runtime.departures import Departures
from hive.runtime.model_actions import Downloads
from hive.runtime.model_presence import ModelPresence
from hive.runtime.model_reconciler import ModelReconciler
from hive.runtime.queue import WorkQueue
from hive.runtime.status_store import StatusStore
from hive.runtime.worker_reconciler import WorkerReconciler
from hive.runtime.worker_table import WorkerTable
from hive.settings import Settings
from tests.conftest import apoll, install_scripted_runtime, model_yaml, worker_yaml

SOURCE = SourceName("test")
KEY = ObjectKey.of(Kind.WORKER, "w")


class Rig:
    """A store, a model catalog with the tiny model Available, and a worker reconciler
    whose queue no controller reads (the test drives reconcile by hand)."""

    def __init__(
        self,
        tmp_path: Path,
        tiny_model: Path,
        clock: FakeClock,
        *,
        ports: range,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.ports = ports
        self.settings = settings or {}
        self.home = tmp_path / "home"
        install_scripted_runtime(self.home, grace=1.0)
        self.tiny_model = tiny_model
        self.clock = clock
        self.store = Store(clock=clock)
        self.store.register(SOURCE, kind="test", location="test.yaml")
        self.bus = Bus(clock=clock)
        self.catalog = ModelCatalog(self.home)
        self.statuses = StatusStore(store=self.store, clock=clock)
        self.reconciler = ModelReconciler(
            store=self.store,
            statuses=self.statuses,
            catalog=self.catalog,
            bus=self.bus,
            clock=clock,
            action_timeout=60,
            downloads=Downloads(limit=1, rate=None),
        )
        self.queue = WorkQueue(clock=clock)
        self.departures = Departures(store=self.store)
        self.table, self.workers = self.make_workers()

    def make_workers(self) -> tuple[WorkerTable, WorkerReconciler]:
        table = WorkerTable(clock=self.clock, bus=self.bus, queue=self.queue)
        return table, WorkerReconciler(
            settings=Settings(
                home=self.home,
                console=False,
                worker_ports=f"{self.ports.start}-{self.ports.stop - 1}",
                **self.settings,
            ),
            store=self.store,
            statuses=self.statuses,
            table=table,
            models=self.catalog,
            runtimes=RuntimeCatalog(self.home),
            gpus=NoGpuProbe(),
            departures=self.departures,
            bus=self.bus,
            clock=self.clock,
            queue=self.queue,
        )

    async def woken(self) -> list[ObjectKey]:
        """The keys queued now (taken out: the test drives reconcile by hand)."""
        keys = []
        while len(self.queue):
            key = await self.queue.get()
            assert key is not None
            self.queue.done(key)
            keys.append(ObjectKey(key))
        return keys

    def declare(self, *workers: str) -> None:
        text = model_yaml("tiny", f"file://{self.tiny_model}") + "---\n" + "---\n".join(workers)
        parsed = parse_text(text, file="test.yaml", source=SOURCE)
        assert not parsed.problems, parsed.problems
        self.store.replace(SOURCE, parsed.records)
        self.store.mark_synced(SOURCE)

    async def look(self, key: ObjectKey = KEY) -> float | None:
        """One reconcile; when to look again."""
        return (await self.workers.reconcile(key)).requeue_after

    async def reconcile(self, key: ObjectKey = KEY) -> float | None:
        """One reconcile, and the spawn it started (a task of its own) to its end."""
        delay = await self.look(key)
        await self.workers.spawns_done()
        return delay

    def status(self) -> ObjectStatus:
        return self.statuses[KEY]

    def reason(self) -> str:
        ready = self.status().condition(ConditionType.READY)
        assert ready is not None
        return ready.reason

    async def exited(self) -> None:
        instance = self.table.instances["w"]
        await apoll(lambda: instance.proc.exit is not None, within=10, what="the worker to exit")

    async def healthy(self) -> None:
        instance = self.table.instances["w"]
        await apoll(
            lambda: instance.health.ready_at is not None, within=10, what="a healthy answer"
        )

    def actions(self) -> list[str]:
        events, _ = self.bus.read(0, limit=10_000)
        return [e.action for e in events if e.object == KEY]


RigFactory = Callable[[], AbstractAsyncContextManager[Rig]]


@pytest.fixture
def rig(tmp_path: Path, tiny_model: Path, worker_ports: range) -> RigFactory:
    @asynccontextmanager
    async def make() -> AsyncIterator[Rig]:
        r = Rig(tmp_path, tiny_model, FakeClock(), ports=worker_ports)
        r.declare(worker_yaml("w", "tiny", args={"mode": "crash"}))
        await r.reconciler.reconcile(ObjectKey.of(Kind.MODEL, "tiny"))
        await r.workers.start()
        try:
            yield r
        finally:
            await r.workers.stop(stop_workers=True)

    return make


async def test_crash_loop_back_off_doubles_to_the_cap(
    rig: RigFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "stamps"
    monkeypatch.setenv("SCRIPTED_WORKER_STAMPS", str(log))
    async with rig() as r:
        delays = []
        for spawned in range(1, 8):
            assert await r.reconcile() is None  # spawned
            assert r.status().phase == "Starting"
            await r.exited()
            delay = await r.reconcile()
            assert delay is not None
            delays.append(delay)
            assert r.status().phase == "Dead"
            assert r.reason() == "CrashLoopBackOff"
            r.clock.advance(delay - 1)
            assert await r.reconcile() == pytest.approx(1)  # still waiting
            assert "w" not in r.table.instances
            # No process started during the back-off: one start per spawn, seen by the
            # processes themselves.
            starts = log.read_text().split().count("start")
            assert starts == spawned, f"{starts} processes started for {spawned} spawns"
            r.clock.advance(1)
        assert delays == [10, 20, 40, 80, 160, 300, 300]
        assert r.table.histories["w"].restarts == 6
        last = r.table.histories["w"].last_exit
        assert last is not None
        assert last.code == 3


async def test_ten_healthy_minutes_reset_the_back_off(rig: RigFactory) -> None:
    async with rig() as r:
        r.declare(worker_yaml("w", "tiny"))  # serves until killed
        for expected in (10, 20):
            await r.reconcile()
            instance = r.table.instances["w"]
            await r.healthy()
            instance.proc.handle.send_signal(signal.SIGKILL)
            await r.exited()
            assert await r.reconcile() == expected
            r.clock.advance(expected)
        # This time it runs healthy for 10 minutes before dying: the streak starts over.
        await r.reconcile()
        instance = r.table.instances["w"]
        await r.healthy()
        r.clock.advance(600)
        instance.proc.handle.send_signal(signal.SIGKILL)
        await r.exited()
        assert await r.reconcile() == 10


async def test_never_leaves_it_dead_until_the_record_changes(rig: RigFactory) -> None:
    async with rig() as r:
        r.declare(worker_yaml("w", "tiny", args={"mode": "crash"}, restart_policy="Never"))
        await r.reconcile()
        await r.exited()
        assert await r.reconcile() is None
        assert r.status().phase == "Dead"
        assert r.reason() == "Failed"
        r.clock.advance(3600)
        assert await r.reconcile() is None
        assert "w" not in r.table.instances  # still not restarted
        r.declare(worker_yaml("w", "tiny", restart_policy="Never"))  # a new generation
        await r.reconcile()
        assert "w" in r.table.instances


async def test_on_failure_does_not_restart_a_clean_exit(rig: RigFactory) -> None:
    async with rig() as r:
        r.declare(worker_yaml("w", "tiny", restart_policy="OnFailure"))
        await r.reconcile()
        instance = r.table.instances["w"]
        await r.healthy()
        instance.proc.handle.send_signal(signal.SIGTERM)  # the scripted worker exits 0
        await r.exited()
        assert await r.reconcile() is None
        assert r.status().phase == "Dead"
        assert r.reason() == "Completed"
        last = r.table.histories["w"].last_exit
        assert last is not None
        assert last.code == 0


async def test_an_exit_wakes_the_workers_waiting_for_what_it_held(rig: RigFactory) -> None:
    async with rig() as r:
        other = ObjectKey.of(Kind.WORKER, "w2")
        port = r.ports.start + 5
        r.declare(worker_yaml("w", "tiny", port=port), worker_yaml("w2", "tiny", port=port))
        await r.reconcile()
        assert "w" in r.table.instances
        assert await r.reconcile(other) is not None  # its port is w's
        ready = r.statuses[other].condition(ConditionType.READY)
        assert ready is not None
        assert "used by worker w" in ready.message
        await r.woken()
        await r.reconcile()  # w is healthy or starting: nothing to wake
        assert other not in await r.woken()
        r.table.instances["w"].proc.handle.send_signal(signal.SIGKILL)
        await r.exited()
        await r.woken()
        await r.reconcile()  # w's end frees the port
        assert other in await r.woken()


async def test_an_adopted_worker_without_a_record_waits_for_every_source(
    rig: RigFactory,
) -> None:
    async with rig() as r:
        r.declare(worker_yaml("w", "tiny"))
        await r.reconcile()
        pid = r.table.instances["w"].state.pid
        await r.workers.stop(stop_workers=False)  # hive goes; the worker stays
        # A new hive: its only source has not synced yet, and nothing declares w.
        store = Store(clock=r.clock)
        store.register(SourceName("later"), kind="directory", location="/nowhere")
        r.store = store
        r.table, r.workers = r.make_workers()
        await r.workers.start()
        assert r.table.instances["w"].state.pid == pid
        assert "worker_adopted" in r.actions()
        assert await r.reconcile() is None
        assert "w" in r.table.instances  # kept: the sources have not all synced
        assert r.reason() == "WaitingForSources"
        store.replace(SourceName("later"), [])  # w is not declared ...
        store.mark_synced(SourceName("later"))  # ... and now every source has synced
        grace = await r.reconcile()
        assert grace == 1.0
        assert r.status().phase == "Stopping"
        await r.exited()
        assert await r.reconcile() is None
        assert "w" not in r.table.instances


async def test_a_spawn_ends_outside_its_reconcile_and_wakes_the_key(rig: RigFactory) -> None:
    """The reconcile starts the spawn and returns (a burst of spawns holds no reconcile
    worker); a record removed while the spawn is in flight is seen when it wakes the key."""
    async with rig() as r:
        r.declare(worker_yaml("w", "tiny"))
        await r.woken()
        assert await r.look(KEY) is None
        assert "w" not in r.table.instances  # the spawn has not run yet
        assert await r.look(KEY) is None  # and is not started twice
        r.declare()  # the record goes meanwhile
        await r.workers.spawns_done()
        assert await r.woken() == [KEY]
        assert r.actions().count("worker_spawn_start") == 1
        assert await r.look(KEY) == 1.0  # stopping it: its grace
        await r.exited()


@pytest.mark.parametrize("started", [False, True], ids=["before-its-first-step", "in-popen"])
async def test_hive_stopping_during_a_spawn_knows_the_process(
    rig: RigFactory, started: bool
) -> None:
    """A spawn in flight when hive stops ends first: not run at all, or run to the end,
    its process known, so that --stop-workers-on-exit stops it (and nothing is left)."""
    async with rig() as r:
        r.declare(worker_yaml("w", "tiny"))
        assert await r.look(KEY) is None
        if started:
            await apoll(lambda: "worker_spawn_start" in r.actions(), within=5, what="the spawn")
        async with asyncio.timeout(10):  # no task of its own: stop() runs before the spawn
            await r.workers.stop(stop_workers=True)
        spawned = r.actions().count("worker_spawn_health_check")
        assert spawned == (1 if started else 0)
        if started:
            assert "worker_proc_del_ok" in r.actions()


async def test_an_unexpected_spawn_error_is_raised_to_the_controller(rig: RigFactory) -> None:
    """A spawn that fails for a reason hive did not foresee (not a refusal: here the log
    directory is a file) is raised by the worker's next reconcile: the controller says so
    (reconcile_error, attempt 1) and tries again after its own back-off."""
    async with rig() as r:
        r.declare(worker_yaml("w", "tiny"))
        logs = r.home / "logs"
        shutil.rmtree(logs, ignore_errors=True)
        logs.write_text("not a directory")
        controller = Controller(
            queue=r.queue,
            store=r.store,
            statuses=r.statuses,
            clock=r.clock,
            reconcilers=[r.workers],
            workers=1,
        )
        await controller.process(KEY)  # starts the spawn, which fails in its own task
        await r.workers.spawns_done()
        assert await r.woken() == [KEY]
        await controller.process(KEY)  # raises what the spawn met
        events, _ = r.bus.read(0, limit=10_000)
        (error,) = [e for e in events if e.action == "reconcile_error"]
        assert error.object == str(KEY)
        assert error.message.startswith("NotADirectoryError: ")
        assert error.data["attempt"] == 1
        assert r.queue.failures(KEY) == 1
        r.clock.advance(1)
        await controller.process(KEY)  # the spawn again: no outcome yet, the streak goes on
        await r.workers.spawns_done()
        await controller.process(KEY)  # it failed again: attempt 2, a longer back-off
        errors = [e for e in r.bus.read(0, limit=10_000)[0] if e.action == "reconcile_error"]
        assert [e.data["attempt"] for e in errors] == [1, 2]
        assert errors[-1].data["retry_in_seconds"] == 2.0
        logs.unlink()
        await controller.process(KEY)  # still in the controller's back-off
        assert r.actions().count("worker_spawn_start") == 2
        r.clock.advance(2)
        await controller.process(KEY)
        await r.workers.spawns_done()
        assert "w" in r.table.instances
        assert r.actions().count("worker_spawn_start") == 3


async def test_a_model_gone_stops_its_workers_through_their_reconcile(rig: RigFactory) -> None:
    """The presence says which workers serve a model that went and queues them; it sends
    no signal itself: each worker's reconcile stops it (ModelGone)."""
    async with rig() as r:
        r.declare(worker_yaml("w", "tiny"))
        await r.reconcile()
        instance = r.table.instances["w"]
        presence = ModelPresence(
            catalog=r.catalog,
            departures=r.departures,
            workers=r.table,
            users=lambda model: ["w"],
            queue=r.queue,
            bus=r.bus,
            resync_interval=600,
        )
        presence.seen("tiny", r.catalog.observe("tiny"))  # there
        await r.woken()
        shutil.rmtree(r.catalog.directory("tiny"))
        presence.seen("tiny", r.catalog.observe("tiny"))
        events, _ = r.bus.read(0, limit=10_000)
        (gone,) = [e for e in events if e.action == "model_gone"]
        assert gone.data["workers"] == ["w"]
        assert gone.message.endswith("stopping the workers that serve it: w")
        assert await r.woken() == [KEY]
        assert instance.stop is None  # not signalled yet ...
        assert instance.proc.exit is None
        assert await r.look() == 1.0  # ... its reconcile stops it
        assert r.status().phase == "Stopping"
        assert r.reason() == "ModelGone"
        assert "worker_model_gone" in r.actions()


async def test_removed_records_get_every_sigterm_before_any_is_told(rig: RigFactory) -> None:
    """Worker keys ready together go to the reconciler as one batch (B6: 100 records
    removed): every SIGTERM is sent before the first stop is narrated, not one per turn
    of the loop while the first workers to exit take the CPU."""
    async with rig() as r:
        names = ["w", "w2", "w3"]
        r.declare(*(worker_yaml(n, "tiny") for n in names))
        for name in names:
            await r.reconcile(ObjectKey.of(Kind.WORKER, name))
        await r.woken()
        seen: dict[str, set[str]] = {}

        def listen(event: Event) -> None:
            if event.action == "worker_proc_del_start" and not seen:
                seen["stopping"] = {n for n, i in r.table.instances.items() if i.stop}

        r.bus.add_listener(listen)
        r.declare()  # every record removed
        for name in names:
            r.queue.add(str(ObjectKey.of(Kind.WORKER, name)))
        controller = Controller(
            queue=r.queue,
            store=r.store,
            statuses=r.statuses,
            clock=r.clock,
            reconcilers=[r.workers],
            workers=1,
        )
        controller.start()
        try:
            await apoll(lambda: not r.table.instances, within=10, what="every worker to stop")
        finally:
            await r.queue.shutdown()
            await controller.stop()
        assert seen == {"stopping": set(names)}


@pytest.mark.parametrize("portable", [False, True], ids=["pidfd", "psutil"])
async def test_an_exit_reaches_the_queue_through_the_exit_watch(
    tmp_path: Path, tiny_model: Path, worker_ports: range, portable: bool
) -> None:
    """A worker's end queues its key through `hive.platform.watch_exit`: a pidfd, or
    psutil polled when `portable` forces the fallback. The health loop looks once an hour
    here, so only the exit watch can tell."""
    r = Rig(
        tmp_path,
        tiny_model,
        FakeClock(),
        ports=worker_ports,
        settings={"portable": portable, "health_interval": 3600.0},
    )
    r.declare(worker_yaml("w", "tiny"))
    await r.reconciler.reconcile(ObjectKey.of(Kind.MODEL, "tiny"))
    await r.workers.start()
    try:
        await r.reconcile()
        await r.healthy()
        await r.woken()
        instance = r.table.instances["w"]
        instance.proc.handle.send_signal(signal.SIGKILL)
        await apoll(lambda: len(r.queue) > 0, within=10, what="the exit to queue the key")
        assert await r.woken() == [KEY]
        assert instance.proc.exit is not None and instance.proc.exit.signal == signal.SIGKILL
    finally:
        await r.workers.stop(stop_workers=True)
