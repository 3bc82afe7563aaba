"""The spawner: a start the worker planner decided becomes a process. It reserves a port,
launches the process (`worker_launch.py`: its command, then the fork/exec and its state
record) in a thread pool, as a task of its own, not inside a reconcile, and hands the new
instance to the process watcher and the health monitor. Its end wakes the worker's key: a
refused spawn (SpawnFailed, a full disk) after its crash-loop back-off, an unexpected
error at once, for the next reconcile to raise."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

import psutil

from hive.actuators import workers as proc
from hive.actuators.provision import update_metadata
from hive.actuators.space import RECORDS, no_space
from hive.core.clock import Clock
from hive.core.worker_decide import Report, Start
from hive.core.worker_history import Instant, Rules, record_spawn_failure, record_start
from hive.core.worker_plan import Why
from hive.errors import HiveError, is_no_space
from hive.model.events import Level
from hive.model.ids import ObjectKey
from hive.model.manifests import WorkerSpec
from hive.model.runtimes import RuntimeEntry
from hive.model.status import WorkerPhase
from hive.model.workers import WorkerState
from hive.narration.bus import Bus
from hive.observers.catalog import ModelCatalog
from hive.runtime.queue import WorkQueue
from hive.runtime.status_store import StatusStore
from hive.runtime.worker_adopt import instance_id
from hive.runtime.worker_health import HealthMonitor
from hive.runtime.worker_launch import command, run
from hive.runtime.worker_table import Instance, WorkerProcess, WorkerTable, write_status
from hive.runtime.worker_watch import ProcessWatcher
from hive.settings import Settings

log = logging.getLogger(__name__)

#: last_accessed of a model is written at most this often.
_TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class _Spawn:
    key: ObjectKey
    spec: WorkerSpec
    start: Start
    port: int


class Spawner:
    def __init__(
        self,
        *,
        settings: Settings,
        clock: Clock,
        bus: Bus,
        table: WorkerTable,
        statuses: StatusStore,
        models: ModelCatalog,
        watcher: ProcessWatcher,
        monitor: HealthMonitor,
        queue: WorkQueue,
        rules: Rules,
        queen_url: Callable[[], str | None] = lambda: None,
    ) -> None:
        #: The Queen's URL now (`--queen-url`, or one discovered since): given to each
        #: worker at its start for its own heartbeats.
        self._queen_url = queen_url
        self._settings = settings
        self._clock = clock
        self._bus = bus
        self._table = table
        self._statuses = statuses
        self._models = models
        self._watcher = watcher
        self._monitor = monitor
        self._queue = queue
        self._rules = rules
        #: A random id per hive home, carried by every worker as HIVE_INSTANCE.
        self.instance_id = ""
        #: Ports of spawns in flight (port → worker name).
        self._reserved: dict[int, str] = {}
        #: Spawns in flight (worker name → task). `Popen` returns once the child has
        #: exec'd, which a busy machine delays by up to a few hundred ms; a spawn runs as a
        #: task of its own, not inside a reconcile, so that a burst of them holds none of
        #: the `max_concurrent_actions` reconcile workers (B5: 100 spawns held all four
        #: for 5 s, and every other key waited behind them).
        self._launching: dict[str, asyncio.Task[None]] = {}
        #: Spawns that failed unexpectedly (a bug, not a refusal): the next reconcile of
        #: the worker raises it, and the controller retries with its back-off.
        self._errors: dict[str, Exception] = {}
        self._pool = ThreadPoolExecutor(
            max_workers=settings.max_concurrent_spawns, thread_name_prefix="hive-spawn"
        )

    def open(self) -> None:
        self.instance_id = instance_id(self._settings.home)

    async def close(self) -> None:
        """At hive's exit: every spawn in flight ends with its process known."""
        await self.done(cancel=True)
        self._pool.shutdown(wait=False)

    def launching(self, name: str) -> bool:
        return name in self._launching

    def take_error(self, name: str) -> Exception | None:
        return self._errors.pop(name, None)

    async def done(self, *, cancel: bool = False) -> None:
        """Until every spawn in flight has ended (as an instance, or as a failure). With
        `cancel`, at hive's exit: each still ends with its process known (see `_spawn`)."""
        while self._launching:
            tasks = list(self._launching.items())
            if cancel:
                for _, task in tasks:
                    task.cancel()
            await asyncio.gather(*(task for _, task in tasks), return_exceptions=True)
            for name, task in tasks:
                if self._launching.get(name) is task:  # cancelled before its first step
                    del self._launching[name]
                    self._reserved = {p: n for p, n in self._reserved.items() if n != name}

    def begin(self, key: ObjectKey, spec: WorkerSpec, start: Start) -> Why | None:
        """Reserve a port and launch; the port's refusal (taken, out of range) instead."""
        name = key.name
        taken = {i.state.port: n for n, i in self._table.instances.items()} | self._reserved
        try:
            port = proc.allocate_port(
                host=self._settings.worker_host,
                wanted=spec.port,
                ports=self._settings.worker_port_range,
                taken=taken,
                name=name,
            )
        except proc.PortUnavailable as exc:
            return Why(reason=exc.reason, message=exc.message)
        self._reserved[port] = name  # until the instance holds it: no two spawns race
        spawn = _Spawn(key=key, spec=spec, start=start, port=port)
        self._launching[name] = asyncio.create_task(self._launch(spawn), name=f"spawn {name}")
        return None

    async def _launch(self, spawn: _Spawn) -> None:
        """One spawn, as a task: then the key is looked at again (its record may have
        changed meanwhile), after the back-off if the spawn was refused."""
        key = spawn.key
        delay: float | None = None
        try:
            delay = await self._spawn(spawn)
        except Exception as exc:
            self._errors[key.name] = exc
        finally:
            self._reserved.pop(spawn.port, None)
            del self._launching[key.name]
        self._queue.add_after(key, delay or 0.0)

    async def _spawn(self, spawn: _Spawn) -> float | None:
        key, spec, port = spawn.key, spawn.spec, spawn.port
        launch, name = spawn.start.launch, spawn.key.name
        entry = launch.entry
        history = self._table.history(name)
        restarting = history.restart_next
        now = self._clock.now()
        run_as = command(
            settings=self._settings,
            queen_url=self._queen_url(),
            name=name,
            spec=spec,
            launch=launch,
            port=port,
            instance=self.instance_id,
            now=now,
            restarts=history.restarts + (1 if restarting else 0),
        )
        log_file = run_as.log_file
        adjusted = launch.adjusted
        if adjusted is not None and adjusted != history.args_adjusted:
            self._bus.narrate(
                key,
                "worker_args_adjusted",
                f"⚠️ Worker {name} runs with other args than asked: {adjusted[1]}",
                level=Level.WARNING,
                reason=adjusted[0],
            )
        self._table.histories[name] = history.model_copy(update={"args_adjusted": adjusted})
        self._bus.narrate(
            key,
            "worker_spawn_start",
            f"🚀 Spawning worker {name}: {entry.id} serving {spec.model} on {spec.device}, "
            f"port {port}" + (f" (restart {history.restarts + 1})" if restarting else ""),
            runtime=entry.id,
            model=spec.model,
            device=spec.device,
            port=port,
        )
        # In a thread: meanwhile the loop goes on, and other spawns with it.
        launched = functools.partial(run, run_as, home=self._settings.home, now=now)
        launching = asyncio.get_running_loop().run_in_executor(self._pool, launched)
        try:
            popen, process, state = await asyncio.shield(launching)
        except asyncio.CancelledError:
            # hive is stopping: the process exists (or will in a moment); know it, so that
            # --stop-workers-on-exit stops it and otherwise the next hive adopts it.
            with contextlib.suppress(Exception):
                popen, process, state = await launching
                self._started(key, spec, entry, popen, process, state, restarting=restarting)
            raise
        except (HiveError, psutil.Error, OSError) as exc:
            reason = "SpawnFailed"
            if isinstance(exc, OSError):
                if not is_no_space(exc):
                    raise
                # A full disk under the home (the worker's log, its state record).
                exc = no_space(exc, where=log_file.parent, needed=f"{RECORDS} needed")
                reason = exc.reason
            return self._refused(key, reason, getattr(exc, "message", str(exc)))
        self._started(key, spec, entry, popen, process, state, restarting=restarting)
        return None

    def _refused(self, key: ObjectKey, reason: str, message: str) -> float:
        """A refused spawn is a failure in the crash-loop streak; returns its back-off."""
        self._bus.narrate(
            key, "worker_spawn_failed", f"❌ {message}", level=Level.ERROR, reason=reason
        )
        now = Instant(monotonic=self._clock.monotonic(), wall=self._clock.now())
        history, delay = record_spawn_failure(
            self._table.history(key.name),
            reason=reason,
            message=message,
            now=now,
            rules=self._rules,
        )
        self._table.histories[key.name] = history
        report = Report(
            phase=WorkerPhase.DEAD, reason=reason, message=message, degraded=(reason, message)
        )
        write_status(self._statuses, key, report, history)
        return delay

    def _started(
        self,
        key: ObjectKey,
        spec: WorkerSpec,
        entry: RuntimeEntry,
        popen: subprocess.Popen[bytes],
        process: psutil.Process,
        state: WorkerState,
        *,
        restarting: bool,
    ) -> None:
        """A spawned process becomes an instance: watched, health-checked, in status."""
        history = record_start(self._table.history(key.name), restarting=restarting)
        self._table.histories[key.name] = history
        mono = self._clock.monotonic()
        timeout = self._settings.worker_start_timeout or entry.start_timeout_seconds
        instance = Instance(
            proc=WorkerProcess(
                state=state,
                handle=process,
                popen=popen,
                started=mono,
                start_deadline=mono + timeout,
                grace=entry.grace_seconds,
            )
        )
        self._table.instances[key.name] = instance
        self._watcher.watch(instance)
        self._bus.narrate(
            key,
            "worker_spawn_health_check",
            "Waiting for worker to start...",
            pid=popen.pid,
            url=f"http://{state.host}:{state.port}{entry.health_path}",
        )
        self._monitor.follow(instance, entry)
        self._touch_model(spec.model)
        report = Report(
            phase=WorkerPhase.STARTING,
            progressing=True,
            reason="Starting",
            message=f"PID {popen.pid} on port {state.port}; waiting for its health check",
        )
        write_status(self._statuses, key, report, history)

    def _touch_model(self, name: str) -> None:
        """The model's `last_accessed` in metadata.json: a worker now uses it."""
        observed = self._models.observe(name)
        if observed is None or observed.metadata is None:
            return
        now = self._clock.now()
        last = observed.metadata.last_accessed
        if last is not None and now - last < _TOUCH_EVERY:
            return  # a hundred workers of one model write it once
        try:
            # Not fsynced: losing the last minute of last_accessed to a power cut is fine.
            update_metadata(self._models.directory(name), durable=False, last_accessed=now)
        except (OSError, ValueError) as exc:
            log.warning("cannot record last_accessed of %s: %s", name, exc)
