"""The Worker reconciler: for one Worker key, observe (its record, its process, its model,
the devices) → `core.worker_decide.plan_worker` → carry the decision out through the
spawner, the stopper and the status store. A worker's exit or a health change reaches it
through the queue only (the process watcher and the health monitor add the key)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import psutil

from hive.core.clock import Clock
from hive.core.store import Store
from hive.core.worker_decide import (
    Decision,
    Escalate,
    Facts,
    Forget,
    Nothing,
    Placement,
    Replace,
    Report,
    Start,
    Stop,
    Unschedulable,
    Wait,
    pending_report,
    plan_worker,
)
from hive.core.worker_history import Instant, Rules
from hive.core.worker_plan import ModelView, Why
from hive.errors import HiveError, InternalError
from hive.model.events import Level
from hive.model.ids import Kind, ObjectKey
from hive.model.manifests import WorkerManifest, WorkerSpec
from hive.model.text import show_text
from hive.narration.bus import Bus
from hive.observers.catalog import ModelCatalog, boot_id
from hive.observers.gpus import GpuProbe
from hive.observers.runtimes import RuntimeCatalog
from hive.runtime.controller import Result
from hive.runtime.departures import Departures
from hive.runtime.queue import WorkQueue
from hive.runtime.status_store import StatusStore
from hive.runtime.worker_adopt import adopt
from hive.runtime.worker_health import HealthMonitor
from hive.runtime.worker_spawn import Spawner
from hive.runtime.worker_stop import Stopper
from hive.runtime.worker_table import Instance, WorkerTable, write_status
from hive.runtime.worker_watch import ProcessWatcher
from hive.settings import Settings

#: What `_decide` found: the record, the live instance, the decision.
_Decided = tuple[WorkerSpec | None, Instance | None, Decision]


class WorkerReconciler:
    kind = Kind.WORKER

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        statuses: StatusStore,
        table: WorkerTable,
        models: ModelCatalog,
        runtimes: RuntimeCatalog,
        gpus: GpuProbe,
        departures: Departures,
        bus: Bus,
        clock: Clock,
        queue: WorkQueue,
        queen_url: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._statuses = statuses
        self._table = table
        self._models = models
        self._runtimes = runtimes
        self._gpus = gpus
        self._departures = departures
        self._bus = bus
        self._clock = clock
        self._queue = queue
        self._rules = Rules(
            crashloop_base=settings.crashloop_base,
            crashloop_cap=settings.crashloop_cap,
            crashloop_reset=settings.crashloop_reset,
            placement_retry=settings.placement_retry,
        )
        self._watcher = ProcessWatcher(clock=clock, queue=queue, portable=settings.portable)
        self._monitor = HealthMonitor(
            settings=settings, clock=clock, bus=bus, queue=queue, watcher=self._watcher
        )
        self._spawner = Spawner(
            settings=settings,
            clock=clock,
            bus=bus,
            table=table,
            statuses=statuses,
            models=models,
            watcher=self._watcher,
            monitor=self._monitor,
            queue=queue,
            rules=self._rules,
            queen_url=queen_url,
        )
        self._stopper = Stopper(
            home=settings.home,
            portable=settings.portable,
            clock=clock,
            bus=bus,
            table=table,
            statuses=statuses,
            watcher=self._watcher,
            rules=self._rules,
        )
        #: Workers that did not fit (memory, VRAM, a port) when last looked at: an exit
        #: wakes these, not every status (100 exits x 100 statuses was a fifth of hive's
        #: CPU while stopping 100 workers, B6).
        self._waiting: set[ObjectKey] = set()
        self._ram: tuple[float, int] | None = None

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Open what the workers need, and adopt those an earlier hive left running."""
        self._spawner.open()
        await self._monitor.open()
        adopted = adopt(
            home=self._settings.home,
            instance=self._spawner.instance_id,
            table=self._table,
            runtimes=self._runtimes,
            start_timeout=self._settings.worker_start_timeout,
            bus=self._bus,
            clock=self._clock,
        )
        for instance, entry in adopted:
            self._watcher.watch(instance)
            self._monitor.follow(instance, entry)
            self._queue.add(instance.key)

    async def stop(self, *, stop_workers: bool) -> None:
        """Leave workers running (as kubelet does), or stop every one of them first."""
        await self._spawner.close()  # every process started is known, to stop or leave
        if stop_workers and self._table.instances:
            for instance in await self._stopper.stop_all():
                self._ended(instance.key, instance, None)
        else:
            self._stopper.say_left_running()
        for instance in list(self._table.instances.values()):
            self._watcher.unwatch(instance)
            await HealthMonitor.stopped(instance)
        await self._monitor.close()

    async def spawns_done(self) -> None:
        """Until every spawn in flight has ended."""
        await self._spawner.done()

    # -- reconcile -----------------------------------------------------------------------
    async def reconcile(self, key: ObjectKey) -> Result:
        """One look at a Worker key: observe, `plan_worker`, act; raises what it cannot
        handle (the controller retries it with back-off)."""
        decided = await self._decide(key)
        if isinstance(decided, Result):
            return decided
        return self._carry_out(key, *decided)

    async def reconcile_batch(self, keys: Sequence[ObjectKey]) -> list[Result | Exception]:
        """Keys ready together (the controller's batch), each decided as `reconcile` does.
        The stops are signalled together, every SIGTERM in one tight loop (the first worker
        to exit competes for the CPU with what follows: B6), then told. Every other
        decision is carried out at once, letting the loop in after each (a start's checks
        and spawn are not held back for the rest of the batch: B5)."""
        outcomes: dict[ObjectKey, Result | Exception] = {}
        stops: list[tuple[ObjectKey, Instance, Stop | Replace]] = []
        for key in keys:
            try:
                found = await self._decide(key)
                if isinstance(found, Result):
                    outcomes[key] = found
                    continue
                spec, instance, decision = found
                if isinstance(decision, Stop | Replace) and instance is not None:
                    stops.append((key, instance, decision))
                    continue
                outcomes[key] = self._carry_out(key, spec, instance, decision)
            except Exception as exc:
                outcomes[key] = exc
            await asyncio.sleep(0)
        signalled = [
            (key, instance, self._stopper.signal(instance, decision.reason, decision.message))
            for key, instance, decision in stops
        ]
        for key, instance, sent in signalled:
            try:
                outcomes[key] = Result(
                    requeue_after=self._stopper.stopping(instance, signalled=sent)
                )
            except Exception as exc:
                outcomes[key] = exc
        return [outcomes[key] for key in keys]

    async def _decide(self, key: ObjectKey) -> Result | _Decided:
        """Observe and decide (nothing done yet but an end recorded), or the Result at
        once: a spawn in flight wakes the key itself."""
        name = key.name
        if self._spawner.launching(name):
            return Result(in_progress=True)  # the spawn wakes the key once it has ended
        error = self._spawner.take_error(name)
        if error is not None:
            raise error
        spec = self._spec(key)
        instance = self._table.instances.get(name)
        if instance is not None and self._watcher.check_exit(instance):
            self._ended(key, instance, spec)
            instance = None
        facts = await self._facts(key, spec, instance)
        history = self._table.history(name)
        return spec, instance, plan_worker(spec, facts, history, self._now(), rules=self._rules)

    def failed(
        self, key: ObjectKey, error: HiveError, *, attempt: int, retry_in: float | None
    ) -> None:
        """A reconcile raised: said as `reconcile_error`; the controller tries again."""
        text = (
            error.message
            if isinstance(error, InternalError)
            else f"{type(error).__name__}: {show_text(error.message)}"
        )
        self._bus.emit(
            "reconcile_error",
            text,
            object=key,
            level=Level.ERROR,
            data={"reason": error.reason, "attempt": attempt, "retry_in_seconds": retry_in},
        )

    def _spec(self, key: ObjectKey) -> WorkerSpec | None:
        record = self._store.desired(key)
        if record is not None and isinstance(record.manifest, WorkerManifest):
            return record.manifest.spec
        return None

    def _now(self) -> Instant:
        return Instant(monotonic=self._clock.monotonic(), wall=self._clock.now())

    def _model_view(self, model: str) -> ModelView:
        return self._departures.view(model, self._models.observe(model))

    async def _facts(
        self, key: ObjectKey, spec: WorkerSpec | None, instance: Instance | None
    ) -> Facts:
        """What the planner needs now; the start facts only when no process runs it."""
        facts = Facts(
            process=instance.running() if instance is not None else None,
            model=self._model_view(spec.model) if spec is not None else None,
            sources_synced=self._store.all_synced,
            generation=self._store.generation(key),
        )
        if instance is not None or spec is None or spec.state == "stopped":
            return facts
        # NVML may be slow on a sick GPU: off the loop; a CPU placement needs no GPU at all.
        gpus = await asyncio.to_thread(self._gpus.gpus) if spec.device != "CPU-0" else []
        return facts.model_copy(
            update={
                "runtimes": {e.id: e for e in self._runtimes.entries()},
                "runtime_root": self._runtimes.root,
                "boot": boot_id(),
                "placement": Placement(gpus=tuple(gpus), ram_available_bytes=self._ram_available()),
            }
        )

    def _ram_available(self) -> int:
        """Available RAM, read at most once a second (a burst of spawns reads it once)."""
        now = self._clock.monotonic()
        if self._ram is None or now - self._ram[0] >= 1.0:
            self._ram = (now, psutil.virtual_memory().available)
        return self._ram[1]

    def _carry_out(
        self, key: ObjectKey, spec: WorkerSpec | None, instance: Instance | None, decision: Decision
    ) -> Result:
        match decision:
            case Start():
                assert spec is not None
                refused = self._spawner.begin(key, spec, decision)
                if refused is None:
                    # The spawn wakes the key once it has ended; until then it has no
                    # outcome (an unexpected error of it keeps the streak growing).
                    return Result(in_progress=True)
                self._pending(key, refused, pending_report(refused), narrate=True)
                self._waiting.add(key)
                return Result(requeue_after=self._rules.placement_retry)
            case Stop() | Replace():
                assert instance is not None
                return Result(
                    requeue_after=self._stopper.stop(instance, decision.reason, decision.message)
                )
            case Escalate():
                assert instance is not None
                return Result(requeue_after=self._stopper.escalate(instance))
            case Wait():
                if decision.report is not None:
                    self._report(key, decision.report)
                return Result(requeue_after=decision.until - self._clock.monotonic())
            case Unschedulable():
                self._pending(key, decision.why, decision.report, narrate=decision.narrate)
                if decision.for_resources:
                    self._waiting.add(key)
                return Result(requeue_after=decision.retry_after)
            case Nothing():
                if decision.report is not None:
                    self._report(key, decision.report)
                return Result()
            case Forget():
                self._table.histories.pop(key.name, None)
                self._statuses.forget(key)
                return Result()

    def _report(self, key: ObjectKey, report: Report) -> None:
        write_status(self._statuses, key, report, self._table.history(key.name))

    def _pending(self, key: ObjectKey, why: Why, report: Report, *, narrate: bool) -> None:
        """Pending, said once per message (a wait for its model is not said)."""
        previous = self._statuses.get(key)
        status = write_status(self._statuses, key, report, self._table.history(key.name))
        if narrate and (previous is None or previous.message != status.message):
            self._bus.narrate(
                key,
                f"worker_{_snake(why.reason)}",
                f"⏸️ Worker {key.name}: {why.message}",
                level=Level.WARNING,
                reason=why.reason,
            )

    def _ended(self, key: ObjectKey, instance: Instance, spec: WorkerSpec | None) -> None:
        """The process is gone: the stopper sweeps and tells it; what it held is free."""
        self._stopper.ended(
            instance,
            policy=spec.restartPolicy if spec is not None else None,
            generation=self._store.generation(key),
        )
        self._wake_unschedulable()  # what it held (memory, a port) is free again

    def _wake_unschedulable(self) -> None:
        """Resources were freed: workers waiting for them are looked at again now (one
        that still does not fit goes back to waiting)."""
        for key in self._waiting:
            self._queue.add(key)
        self._waiting.clear()


def _snake(reason: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in reason).lstrip("_")
