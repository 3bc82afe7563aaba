"""The worker supervisor: reconciles Worker keys into processes and keeps them so.

Never blocks the loop: a spawn is a fork, a stop is a signal plus a deadline the key comes
back at; a watcher per process (pidfd) and a health task per worker wake the key up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp
import psutil

from hive.actuators import workers as proc
from hive.actuators.files import write_atomic
from hive.actuators.provision import update_metadata
from hive.actuators.space import RECORDS, no_space
from hive.core.clock import Clock
from hive.core.status import worker_update
from hive.core.store import Store
from hive.core.worker_plan import ModelView, Why, fit, start_check, stop_reason
from hive.core.workers import (
    crashloop_delay,
    cuda_visible_devices,
    render_command,
    restart_wanted,
    spec_hash,
)
from hive.errors import HiveError, is_no_space
from hive.model.events import Level
from hive.model.ids import Kind, ObjectKey
from hive.model.manifests import WorkerManifest, WorkerSpec
from hive.model.runtimes import RuntimeEntry
from hive.model.status import (
    ConditionType,
    ConditionUpdate,
    ObjectStatus,
    WorkerPhase,
)
from hive.model.text import show_text
from hive.model.units import megabytes
from hive.model.workers import ExitInfo, WorkerMetrics, WorkerState
from hive.narration.bus import Bus
from hive.observers.catalog import ModelCatalog, boot_id
from hive.observers.gpus import GpuProbe
from hive.observers.health import HealthProbe, scrape
from hive.observers.processes import (
    DEFAULT_GRACE,
    LiveWorker,
    find_worker,
    is_same,
    read_states,
)
from hive.observers.runtimes import RuntimeCatalog
from hive.runtime.departures import Departures
from hive.runtime.status_store import StatusStore
from hive.settings import Settings

log = logging.getLogger(__name__)

#: Seconds before a reconcile or a spawn that failed unexpectedly (a bug, not a refusal)
#: is tried again.
UNEXPECTED_ERROR_RETRY = 5.0
#: Ends of a run that hive asked for: not failures, no back-off.
_ASKED = {"Removed", "Stopped", "Replaced", "RestartRequested", "Shutdown", "ModelGone"}
#: Ends after which the next start is a first start, not a restart.
_FIRST_START_NEXT = {"Removed", "Stopped", "Replaced", "Shutdown", "ModelGone"}
#: last_accessed of a model is written at most this often.
_TOUCH_EVERY = timedelta(minutes=1)


@dataclass
class Instance:
    """One process of a worker, spawned by this hive or adopted from an earlier one."""

    state: WorkerState
    process: psutil.Process
    popen: subprocess.Popen[bytes] | None = None
    adopted: bool = False
    started: float = 0.0  # monotonic
    start_deadline: float = 0.0
    ready_at: float | None = None
    pidfd: int | None = None
    exit: ExitInfo | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    health_failures: int = 0
    health_error: str | None = None
    health_checked_at: datetime | None = None
    unhealthy: bool = False
    start_timed_out: bool = False
    stop_reason: str | None = None
    stop_message: str = ""
    stop_deadline: float = 0.0
    killed: bool = False
    restart_requested: bool = False
    #: Its log could not be rotated for want of space (said once, until it can be).
    log_full: bool = False
    #: Seconds between SIGTERM and SIGKILL (the runtime entry's).
    grace: float = DEFAULT_GRACE
    metrics: WorkerMetrics | None = None
    monitor: asyncio.Task[None] | None = None

    @property
    def key(self) -> ObjectKey:
        return ObjectKey.of(Kind.WORKER, self.state.name)


@dataclass(frozen=True)
class PendingStop:
    """A SIGTERM sent by `signal_now`, to be narrated and recorded by `begin_stops`."""

    key: ObjectKey
    instance: Instance
    why: tuple[str, str]
    signalled: bool


@dataclass
class Track:
    """What outlives a process: restarts, the failure streak, how the last run ended."""

    restarts: int = 0
    failures_in_a_row: int = 0
    next_start: float = 0.0  # monotonic; 0: now
    next_start_at: datetime | None = None
    last_exit: ExitInfo | None = None
    #: The generation that a `Never`/`OnFailure` policy gave up on; a new one starts again.
    halted_generation: int | None = None
    restarted_at: datetime | None = None
    #: The next start is a restart (after a crash or an asked-for restart), not a first
    #: start (a new record, a replaced spec, `state: running` again).
    restart_next: bool = False
    #: The `ArgsAdjusted` condition (reason, message) of the last run; None: args as asked.
    args_adjusted: tuple[str, str] | None = None


@dataclass(frozen=True)
class SpawnPlan:
    """What a reconcile decided to start: the record's spec, the runtime entry and its
    resolved args, the model file, and the port reserved for it."""

    key: ObjectKey
    spec: WorkerSpec
    entry: RuntimeEntry
    args: dict[str, int | float | str | bool]
    model_path: Path
    model_sha256: str | None
    port: int
    track: Track
    #: The `ArgsAdjusted` condition of these args (see `core.workers.adjust_args`).
    adjusted: tuple[str, str] | None = None


class WorkerSupervisor:
    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        models: ModelCatalog,
        runtimes: RuntimeCatalog,
        gpus: GpuProbe,
        bus: Bus,
        clock: Clock,
        statuses: StatusStore,
        enqueue: Callable[[ObjectKey, float], None],
        departures: Departures,
    ) -> None:
        self.settings = settings
        self._departures = departures
        self.home = settings.home
        self._store = store
        self._models = models
        self.runtimes = runtimes
        self.gpus = gpus
        self._bus = bus
        self._clock = clock
        self._statuses = statuses
        self._enqueue = enqueue
        self.instances: dict[str, Instance] = {}
        self.tracks: dict[str, Track] = {}
        self.instance_id = ""
        self._session: aiohttp.ClientSession | None = None
        self._ports = settings.worker_port_range
        self._ram: tuple[float, int] | None = None
        #: Ports of spawns in flight (port → worker name).
        self._reserved: dict[int, str] = {}
        #: Spawns in flight (worker name → task). `Popen` returns once the child has
        #: exec'd, which a busy machine delays by up to a few hundred ms; a spawn runs as a
        #: task of its own, not inside a reconcile, so that a burst of them holds none of
        #: the `max_concurrent_actions` reconcile workers (B5: 100 spawns held all four
        #: for 5 s, and every other key waited behind them).
        self._launching: dict[str, asyncio.Task[None]] = {}
        self._spawner = ThreadPoolExecutor(
            max_workers=settings.max_concurrent_spawns, thread_name_prefix="hive-spawn"
        )
        #: Workers that did not fit (memory, VRAM, a port) when last looked at: an exit
        #: wakes these, not every status (100 exits x 100 statuses was a fifth of hive's
        #: CPU while stopping 100 workers, B6).
        self._waiting: set[ObjectKey] = set()

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        self.instance_id = self._load_instance_id()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
            headers={"User-Agent": "hive-health"},
        )
        self.adopt()

    async def stop(self, *, stop_workers: bool) -> None:
        """Leave workers running (as kubelet does), or stop every one of them first."""
        await self.spawns_done(cancel=True)  # every process started is known, to stop or leave
        self._spawner.shutdown(wait=False)
        if stop_workers and self.instances:
            await self._stop_all()
        else:
            self._say_left_running()
        for instance in list(self.instances.values()):
            self._unwatch(instance)
            if instance.monitor is not None:
                instance.monitor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await instance.monitor
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def spawns_done(self, *, cancel: bool = False) -> None:
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

    def _load_instance_id(self) -> str:
        """A random id per hive home, carried by every worker as HIVE_INSTANCE."""
        path = self.home / "state" / "instance-id"
        try:
            text = path.read_text().strip()
            if text:
                return text
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        text = uuid.uuid4().hex
        write_atomic(path, text.encode())
        return text

    # -- adoption ------------------------------------------------------------------------
    def adopt(self) -> None:
        """Find the workers an earlier hive left running (state record + pid + start time
        + markers) and take them over without a restart; clean the stale records."""
        states, bad = read_states(self.home)
        for path, why in bad:
            self._bus.emit(
                "worker_state_invalid",
                f"ignoring {path}: {why}",
                level=Level.WARNING,
            )
            path.unlink(missing_ok=True)
        for state in states:
            key = ObjectKey.of(Kind.WORKER, state.name)
            process, why = find_worker(state, instance=self.instance_id)
            track = self.tracks.setdefault(state.name, Track())
            track.restarts = state.restarts
            track.args_adjusted = state.args_adjusted
            if process is None:
                proc.remove_state(self.home, state.name)
                self._bus.emit(
                    "worker_state_stale",
                    f"Worker {state.name} (PID {state.pid}) is not running any more: {why}; "
                    "its state record is removed",
                    object=key,
                )
                continue
            now = self._clock.monotonic()
            entry = self.runtimes.get(state.runtime)
            timeout = self.settings.worker_start_timeout or (
                entry.start_timeout_seconds if entry else 120.0
            )
            instance = Instance(
                state=state,
                process=process,
                adopted=True,
                started=now,
                start_deadline=now + timeout,
                grace=entry.grace_seconds if entry else DEFAULT_GRACE,
            )
            self.instances[state.name] = instance
            self._watch(instance)
            self._bus.emit(
                "worker_adopted",
                f"🤝 Adopted worker {state.name} (PID {state.pid}, port {state.port}) "
                "left running by an earlier hive",
                object=key,
                data={"pid": state.pid, "port": state.port},
            )
            instance.monitor = asyncio.create_task(
                self._monitor(instance, entry), name=f"health {state.name}"
            )
            self._enqueue(key, 0)

    # -- process watching ----------------------------------------------------------------
    def _watch(self, instance: Instance) -> None:
        """Wake the key when the process ends: a pidfd on Linux, else the health loop."""
        try:
            fd = os.pidfd_open(instance.state.pid)
        except (AttributeError, OSError):
            return
        instance.pidfd = fd
        asyncio.get_running_loop().add_reader(fd, self._on_exit, instance)

    def _unwatch(self, instance: Instance) -> None:
        if instance.pidfd is not None:
            loop = asyncio.get_running_loop()
            loop.remove_reader(instance.pidfd)
            os.close(instance.pidfd)
            instance.pidfd = None

    def _on_exit(self, instance: Instance) -> None:
        self._unwatch(instance)
        self._check_exit(instance)
        self._enqueue(instance.key, 0)

    def _check_exit(self, instance: Instance) -> bool:
        """True once the process is gone; reaps it and records how it ended."""
        if instance.exit is not None:
            return True
        popen = instance.popen
        code: int | None = None
        if popen is not None:
            returncode = popen.poll()
            if returncode is None:
                return False
            code = returncode
        elif is_same(instance.process):
            return False
        at = self._clock.now()
        if code is None:
            instance.exit = ExitInfo(at=at)
        elif code < 0:
            instance.exit = ExitInfo(at=at, signal=-code)
        else:
            instance.exit = ExitInfo(at=at, code=code)
        instance.ended.set()
        return True

    # -- reconcile -----------------------------------------------------------------------
    async def reconcile(self, key: ObjectKey) -> float | None:
        """One look at a Worker key; returns when to look again (None: on the next event)."""
        name = key.name
        if name in self._launching:
            return None  # the spawn wakes the key once it has ended
        spec = self._spec(key)
        instance = self.instances.get(name)
        if instance is not None and self._check_exit(instance):
            self._ended(key, instance, spec)
            instance = None
        if instance is not None:
            return self._tend(key, instance, spec)
        if spec is None:
            if self._store.all_synced:
                self.tracks.pop(name, None)
                self._statuses.forget(key)
            return None
        if spec.state == "stopped":
            self._status(
                key,
                WorkerPhase.DEAD,
                ready=False,
                reason="Stopped",
                message="state: stopped (set state: running to start it)",
            )
            return None
        return await self._maybe_start(key, spec)

    def signal_now(self, keys: list[ObjectKey]) -> list[PendingStop]:
        """The first step of a reconcile, run at once for Worker records a source just
        changed: every SIGTERM these changes call for goes out now, in one go (100 removed
        records: 100 signals in a few ms, B6). Reads the store like any reconcile. The
        caller narrates them with `begin_stops` once it has told what changed; the queued
        reconcile carries on from there."""
        wanted = []
        for key in keys:
            instance = self.instances.get(key.name)
            # _check_exit has just found it alive: waitpid for a child of hive (whose pid
            # cannot be reused before hive reaps it), psutil for an adopted worker.
            if instance is None or instance.stop_reason is not None or self._check_exit(instance):
                continue
            why = self._stop_wanted(key, instance, self._spec(key))
            if why is not None:
                wanted.append((key, instance, why))
        # Decided first, then every signal in one tight loop: the first worker to exit
        # competes for the CPU with this loop, and would slow every decision after it.
        return [
            PendingStop(key, instance, why, self._signal_term(instance, alive=True))
            for key, instance, why in wanted
        ]

    def begin_stops(self, stops: list[PendingStop]) -> None:
        for stop in stops:
            self._begin_stop(stop.key, stop.instance, *stop.why, signalled=stop.signalled)

    def _spec(self, key: ObjectKey) -> WorkerSpec | None:
        record = self._store.desired(key)
        if record is not None and isinstance(record.manifest, WorkerManifest):
            return record.manifest.spec
        return None

    def _stop_wanted(
        self, key: ObjectKey, instance: Instance, spec: WorkerSpec | None
    ) -> tuple[str, str] | None:
        """Why a live process must stop (reason, message), or None: the decision alone,
        made by the rules `hive plan` applies too (`core.worker_plan.stop_reason`)."""
        why = stop_reason(
            spec,
            running=instance.state,
            model=self._model_view(spec.model) if spec is not None else None,
            sources_synced=self._store.all_synced,
            restart_requested=instance.restart_requested,
            unhealthy=f"{instance.health_failures} health checks failed in a row "
            f"({instance.health_error})"
            if instance.unhealthy
            else None,
            start_timed_out=f"no healthy answer within {self._start_timeout(instance):g}s of "
            f"starting ({instance.health_error})"
            if instance.start_timed_out
            else None,
        )
        return (why.reason, why.message) if why is not None else None

    def _model_view(self, model: str) -> ModelView:
        return self._departures.view(model, self._models.observe(model))

    def _tend(self, key: ObjectKey, instance: Instance, spec: WorkerSpec | None) -> float | None:
        """A live process: stop it if it is not wanted as it is, else report its health."""
        now = self._clock.monotonic()
        if instance.stop_reason is not None:
            return self._continue_stop(key, instance, now)
        why = self._stop_wanted(key, instance, spec)
        if why is not None:
            return self._begin_stop(key, instance, *why, signalled=self._signal_term(instance))
        if spec is None:
            self._status(
                key,
                WorkerPhase.RUNNING if instance.ready_at else WorkerPhase.STARTING,
                ready=instance.ready_at is not None,
                reason="WaitingForSources",
                message="adopted; kept until every source has synced",
            )
            return None
        if instance.ready_at is None:
            self._status(
                key,
                WorkerPhase.STARTING,
                ready=False,
                progressing=True,
                reason="Starting",
                message=f"waiting for {instance.state.host}:{instance.state.port} to answer "
                "its health check",
            )
        else:
            degraded = (
                (
                    "HealthCheckFailing",
                    f"{instance.health_failures} failed: {instance.health_error}",
                )
                if instance.health_failures
                else None
            )
            self._status(
                key,
                WorkerPhase.RUNNING,
                ready=True,
                reason="Healthy",
                message=f"serving {instance.state.model} on "
                f"http://{instance.state.host}:{instance.state.port}",
                degraded=degraded,
            )
        return None

    def _start_timeout(self, instance: Instance) -> float:
        return instance.start_deadline - instance.started

    # -- stop ----------------------------------------------------------------------------
    def _signal_term(self, instance: Instance, *, alive: bool | None = None) -> bool:
        """SIGTERM to the worker's group (if it is still that process, as `alive` says or
        psutil finds); True if sent."""
        instance.stop_deadline = self._clock.monotonic() + instance.grace
        if alive is None:
            alive = is_same(instance.process)
        return alive and proc.signal_group(instance.state.pid, signal.SIGTERM)

    def _begin_stop(
        self, key: ObjectKey, instance: Instance, reason: str, message: str, *, signalled: bool
    ) -> float:
        """After the SIGTERM: narrate why, and mark the worker Stopping until its deadline."""
        instance.stop_reason, instance.stop_message = reason, message
        pid, grace = instance.state.pid, instance.grace
        why = {
            "Replaced": ("worker_replace", f"♻️ Replacing worker {key.name}: {message}"),
            "Unhealthy": ("worker_unhealthy", f"💔 Worker {key.name} is unhealthy: {message}"),
            "StartTimeout": ("worker_start_timeout", f"⏱️ Worker {key.name}: {message}"),
            "ModelGone": ("worker_model_gone", f"⏏️ Stopping worker {key.name}: {message}"),
        }.get(reason)
        if why is not None:
            level = Level.INFO if reason == "Replaced" else Level.WARNING
            self._bus.narrate(key, why[0], why[1], level=level)
        self._bus.narrate(
            key,
            "worker_proc_del_start",
            f"🗑️ Killing worker PID {pid} ({message})",
            pid=pid,
            reason=reason,
        )
        if signalled:
            self._bus.narrate(key, "worker_proc_del_sigterm", "Sent SIGTERM", pid=pid, grace=grace)
        self._status(
            key, WorkerPhase.STOPPING, ready=False, progressing=True, reason=reason, message=message
        )
        return grace

    def _continue_stop(self, key: ObjectKey, instance: Instance, now: float) -> float:
        if now < instance.stop_deadline:
            return instance.stop_deadline - now
        pid = instance.state.pid
        if not instance.killed:
            instance.killed = True
            if is_same(instance.process):
                proc.signal_group(pid, signal.SIGKILL)
            self._say_killed(instance)
        else:
            self._say_stuck(instance)
        instance.stop_deadline = now + proc.KILL_WAIT
        return proc.KILL_WAIT

    def _say_killed(self, instance: Instance) -> None:
        pid = instance.state.pid
        self._bus.narrate(
            instance.key,
            "worker_proc_del_sigkill",
            f"Worker PID {pid} ignored SIGTERM for its grace period: sent SIGKILL",
            level=Level.WARNING,
            pid=pid,
        )

    def _say_stuck(self, instance: Instance) -> None:
        pid = instance.state.pid
        self._bus.narrate(
            instance.key,
            "worker_proc_del_stuck",
            f"Worker PID {pid} is still there {proc.KILL_WAIT:g}s after SIGKILL (uninterruptible?)",
            level=Level.ERROR,
            pid=pid,
        )

    def _say_left_running(self) -> None:
        """At hive's exit without --stop-workers-on-exit: which workers keep running, and
        how to stop them (they have no owner until a hive starts on this home again)."""
        left = [i for i in self.instances.values() if not self._check_exit(i)]
        for instance in sorted(left, key=lambda i: i.state.name):
            state = instance.state
            self._bus.narrate(
                instance.key,
                "worker_left_running",
                f"Leaving worker {state.name} running (PID {state.pid}, port {state.port}): "
                f"the next hive on this home adopts it; `kill -TERM -- -{state.pid}` stops "
                "it alone (its process group)",
                pid=state.pid,
                port=state.port,
            )
        if left:
            self._bus.emit(
                "workers_left_running",
                f"{len(left)} worker(s) left running; stop them with `hive stop-workers "
                f"--home {self.home}` (`make stop` for `make run`), or run hive with "
                "--stop-workers-on-exit to stop them when it exits",
                level=Level.WARNING,
                data={"workers": sorted(i.state.name for i in left)},
            )

    async def _stop_all(self) -> None:
        """At hive's exit with --stop-workers-on-exit: every group SIGTERM, then SIGKILL."""
        instances = [i for i in self.instances.values() if not self._check_exit(i)]
        for instance in instances:
            if instance.stop_reason is None:
                signalled = self._signal_term(instance)
                self._begin_stop(
                    instance.key, instance, "Shutdown", "hive is stopping", signalled=signalled
                )
        # One blocking stop for all of them (`proc.stop_group`, as `hive stop-workers`),
        # in a thread: the SIGTERMs are sent and told; it waits, kills each one at its own
        # stop deadline, waits, releases.
        now = self._clock.monotonic()
        by_worker = {
            LiveWorker(i.state, i.process, grace=max(i.stop_deadline - now, 0.0)): i
            for i in instances
        }
        loop = asyncio.get_running_loop()
        stuck = await asyncio.to_thread(
            proc.stop_group,
            list(by_worker),
            home=self.home,
            signal_term=False,
            on_kill=lambda w: loop.call_soon_threadsafe(self._say_killed, by_worker[w]),
        )
        for worker, instance in by_worker.items():
            if not self._check_exit(instance):
                if worker in stuck:
                    self._say_stuck(instance)
                continue
            self._ended(instance.key, instance, None)

    def _ended(self, key: ObjectKey, instance: Instance, spec: WorkerSpec | None) -> None:
        """The process is gone: sweep its group, forget it, and apply the restart policy."""
        name = key.name
        self._unwatch(instance)
        if instance.monitor is not None:
            instance.monitor.cancel()
        proc.release_group(self.home, instance.state)  # what its children left in its group
        self.instances.pop(name, None)
        assert instance.exit is not None
        reason = instance.stop_reason or (
            "Unhealthy"
            if instance.unhealthy
            else "StartTimeout"
            if instance.start_timed_out
            else "Exited"
        )
        exit = instance.exit.model_copy(update={"reason": reason, "message": instance.stop_message})
        track = self.tracks.setdefault(name, Track())
        track.last_exit = exit
        track.restart_next = reason not in _FIRST_START_NEXT
        now = self._clock.monotonic()
        self._wake_unschedulable()  # what it held (memory, a port) is free again
        if reason in _ASKED:
            self._bus.narrate(
                key,
                "worker_proc_del_ok",
                "✅ Worker killed successfully",
                pid=instance.state.pid,
                exit=exit.describe(),
            )
            if reason == "Replaced":
                track.restarts = 0
                track.failures_in_a_row = 0
            track.next_start = 0.0
            track.next_start_at = None
            return
        tail = proc.tail_lines(instance.state.log_path, 1)
        self._bus.narrate(
            key,
            "worker_exited",
            f"💥 Worker {name} (PID {instance.state.pid}) ended: {exit.describe()}"
            + (f" [{reason}]" if reason != "Exited" else "")
            + (f"; last log line: {tail[-1]}" if tail else ""),
            level=Level.WARNING if not exit.failed else Level.ERROR,
            pid=instance.state.pid,
            exit_code=exit.code,
            signal=exit.signal,
            reason=reason,
        )
        if spec is None:
            return
        healthy_for = now - instance.ready_at if instance.ready_at is not None else 0.0
        if healthy_for >= self.settings.crashloop_reset:
            track.failures_in_a_row = 0
        if not restart_wanted(spec.restartPolicy, exit):
            track.halted_generation = self._store.generation(key)
            return
        # Every unasked end counts toward the back-off, a clean exit 0 under Always too (as
        # kubelet does): a worker that keeps exiting must not be restarted in a tight loop.
        delay = self._back_off(track)
        self._bus.narrate(
            key,
            "worker_restart_scheduled",
            f"⏳ Back-off {delay:g}s restarting failed worker {name} "
            f"({track.failures_in_a_row} failure(s) in a row; restartPolicy "
            f"{spec.restartPolicy})",
            delay_seconds=delay,
            restarts=track.restarts,
        )

    def _wake_unschedulable(self) -> None:
        """Resources were freed: workers waiting for them are looked at again now (one
        that still does not fit goes back to waiting)."""
        for key in self._waiting:
            self._enqueue(key, 0)
        self._waiting.clear()

    # -- start ---------------------------------------------------------------------------
    def _pending(self, key: ObjectKey, reason: str, message: str, *, narrate: bool = True) -> None:
        previous = self._statuses.get(key)
        status = self._status(
            key,
            WorkerPhase.PENDING,
            ready=False,
            reason=reason,
            message=f"{reason}: {message}",
            degraded=(reason, message),
        )
        if narrate and (previous is None or previous.message != status.message):
            self._bus.narrate(
                key,
                f"worker_{_snake(reason)}",
                f"⏸️ Worker {key.name}: {message}",
                level=Level.WARNING,
                reason=reason,
            )

    async def _maybe_start(self, key: ObjectKey, spec: WorkerSpec) -> float | None:
        name = key.name
        track = self.tracks.setdefault(name, Track())
        generation = self._store.generation(key)
        if track.halted_generation is not None:
            if track.halted_generation == generation and track.last_exit is not None:
                self._status(
                    key,
                    WorkerPhase.DEAD,
                    ready=False,
                    reason="Completed" if not track.last_exit.failed else "Failed",
                    message=f"{track.last_exit.describe()}; restartPolicy {spec.restartPolicy} "
                    "does not restart it (change the record to start it again)",
                    degraded=None
                    if not track.last_exit.failed
                    else ("Failed", track.last_exit.describe()),
                )
                return None
            track.halted_generation = None
        remaining = track.next_start - self._clock.monotonic()
        if remaining > 0:
            last = track.last_exit.describe() if track.last_exit else "failed"
            message = (
                f"back-off {self._delay(track.failures_in_a_row):g}s "
                f"restarting failed worker ({last}); next restart in {remaining:.1f}s"
            )
            self._status(
                key,
                WorkerPhase.DEAD,
                ready=False,
                reason="CrashLoopBackOff",
                message=message,
                degraded=("CrashLoopBackOff", message),
            )
            return remaining
        checked = start_check(
            spec,
            runtimes={e.id: e for e in self.runtimes.entries()},
            model=self._model_view(spec.model),
            boot=boot_id(),
            runtime_root=self.runtimes.root,
        )
        if isinstance(checked, Why):
            if checked.reason == "InvalidArgs":
                self._status(
                    key,
                    WorkerPhase.PENDING,
                    ready=False,
                    reason=checked.reason,
                    message=f"{checked.message} (fix the record; hive tries again when it changes)",
                    degraded=(checked.reason, checked.message),
                )
                return None
            waits_for_model = checked.reason in ("ModelGone", "ModelNotReady")
            self._pending(key, checked.reason, checked.message, narrate=not waits_for_model)
            return None if waits_for_model else self.settings.placement_retry
        # NVML may be slow on a sick GPU: off the loop; a CPU placement needs no GPU at all.
        gpus = await asyncio.to_thread(self.gpus.gpus) if spec.device != "CPU-0" else []
        blocked = fit(
            checked, device=spec.device, gpus=gpus, ram_available_bytes=self._ram_available()
        )
        if blocked is not None:
            self._pending(key, blocked.reason, blocked.message)
            self._waiting.add(key)
            return self.settings.placement_retry
        taken = {i.state.port: n for n, i in self.instances.items()} | self._reserved
        try:
            port = proc.allocate_port(
                host=self.settings.worker_host,
                wanted=spec.port,
                ports=self._ports,
                taken=taken,
                name=name,
            )
        except proc.PortUnavailable as exc:
            self._pending(key, exc.reason, exc.message)
            self._waiting.add(key)
            return self.settings.placement_retry
        self._reserved[port] = name  # until the instance holds it: no two spawns race
        meta = checked.meta
        plan = SpawnPlan(
            key,
            spec,
            checked.entry,
            checked.args,
            meta.path,
            meta.sha256,
            port,
            track,
            adjusted=checked.adjusted,
        )
        self._launching[name] = asyncio.create_task(self._launch(plan), name=f"spawn {name}")
        return None

    async def _launch(self, plan: SpawnPlan) -> None:
        """One spawn, as a task: then the key is looked at again (its record may have
        changed meanwhile), after the back-off if the spawn failed."""
        key, port = plan.key, plan.port
        try:
            delay = await self._spawn(plan)
        except Exception as exc:  # as the reconcile loop does: say so, and try again later
            log.exception("spawn of %s failed", key)
            self._bus.emit(
                "reconcile_error",
                f"{type(exc).__name__}: {show_text(str(exc))}",
                object=key,
                level=Level.ERROR,
            )
            delay = UNEXPECTED_ERROR_RETRY
        finally:
            self._reserved.pop(port, None)
            del self._launching[key.name]
        self._enqueue(key, delay or 0.0)

    async def _spawn(self, plan: SpawnPlan) -> float | None:
        key, spec, entry, port, track = plan.key, plan.spec, plan.entry, plan.port, plan.track
        args, model_path, model_sha256 = plan.args, plan.model_path, plan.model_sha256
        name = key.name
        worker_id = f"{name}-{uuid.uuid4().hex[:8]}"
        host = self.settings.worker_host
        queen = self.settings.queen_url or ""
        builtins = {
            "model_path": str(model_path),
            "model": spec.model,
            "host": host,
            "port": str(port),
            "device": spec.device,
            "worker_id": worker_id,
            "queen_url": queen,
            "python": sys.executable,
            "binary": str(entry.path or ""),
            "entry_dir": str(Path(entry.origin).parent) if entry.origin != "built-in" else "",
        }
        argv, entry_env = render_command(entry, args=args, builtins=builtins)
        env = proc.worker_env(
            base=dict(os.environ),
            extra={
                **entry_env,
                "HIVE_WORKER_ID": worker_id,
                "HIVE_WORKER_NAME": name,
                "HIVE_INSTANCE": self.instance_id,
                "HIVE_QUEEN_URL": queen,
                "CUDA_VISIBLE_DEVICES": cuda_visible_devices(spec.device),
            },
        )
        log_file = proc.log_path(self.home, name)
        restarting = track.restart_next
        if plan.adjusted is not None and plan.adjusted != track.args_adjusted:
            self._bus.narrate(
                key,
                "worker_args_adjusted",
                f"⚠️ Worker {name} runs with other args than asked: {plan.adjusted[1]}",
                level=Level.WARNING,
                reason=plan.adjusted[0],
            )
        track.args_adjusted = plan.adjusted
        self._bus.narrate(
            key,
            "worker_spawn_start",
            f"🚀 Spawning worker {name}: {entry.id} serving {spec.model} on {spec.device}, "
            f"port {port}" + (f" (restart {track.restarts + 1})" if restarting else ""),
            runtime=entry.id,
            model=spec.model,
            device=spec.device,
            port=port,
        )
        now = self._clock.now()
        restarts = track.restarts + (1 if restarting else 0)

        def launch() -> tuple[subprocess.Popen[bytes], psutil.Process, WorkerState]:
            """In a thread: fork/exec waits for the child to exec, which a busy machine
            delays; meanwhile the loop goes on, and other spawns with it."""
            popen = proc.spawn(
                argv=argv,
                env=env,
                log_path=log_file,
                banner=f"{proc.stamp(now)} starting {worker_id}: {' '.join(argv)}",
            )
            try:
                process = psutil.Process(popen.pid)
                state = WorkerState(
                    name=name,
                    worker_id=worker_id,
                    instance=self.instance_id,
                    pid=popen.pid,
                    create_time=process.create_time(),
                    host=host,
                    port=port,
                    argv=tuple(argv),
                    runtime=entry.id,
                    worker_type=_worker_type(entry, spec.device),
                    model=spec.model,
                    model_path=model_path,
                    model_sha256=model_sha256,
                    device=spec.device,
                    spec_hash=spec_hash(spec, model_sha256=model_sha256),
                    started_at=now,
                    restarts=restarts,
                    log_path=log_file,
                    args_adjusted=plan.adjusted,
                )
                proc.write_state(self.home, state)  # before anything can lose track of it
            except BaseException:
                popen.kill()
                popen.wait()
                raise
            return popen, process, state

        loop = asyncio.get_running_loop()
        launching = loop.run_in_executor(self._spawner, launch)
        try:
            popen, process, state = await asyncio.shield(launching)
        except asyncio.CancelledError:
            # hive is stopping: the process exists (or will in a moment); know it, so that
            # --stop-workers-on-exit stops it and otherwise the next hive adopts it.
            with contextlib.suppress(Exception):
                popen, process, state = await launching
                self._started(key, spec, entry, popen, process, state, track, restarting)
            raise
        except (HiveError, psutil.Error, OSError) as exc:
            reason = "SpawnFailed"
            if isinstance(exc, OSError):
                if not is_no_space(exc):
                    raise
                # A full disk under the home (the worker's log, its state record).
                exc = no_space(exc, where=log_file.parent, needed=f"{RECORDS} needed")
                reason = exc.reason
            message = getattr(exc, "message", str(exc))
            self._bus.narrate(
                key, "worker_spawn_failed", f"❌ {message}", level=Level.ERROR, reason=reason
            )
            track.last_exit = ExitInfo(at=now, reason=reason, message=message)
            delay = self._back_off(track)
            self._status(
                key,
                WorkerPhase.DEAD,
                ready=False,
                reason=reason,
                message=message,
                degraded=(reason, message),
            )
            return delay
        self._started(key, spec, entry, popen, process, state, track, restarting)
        return None

    def _started(
        self,
        key: ObjectKey,
        spec: WorkerSpec,
        entry: RuntimeEntry,
        popen: subprocess.Popen[bytes],
        process: psutil.Process,
        state: WorkerState,
        track: Track,
        restarting: bool,
    ) -> None:
        """A spawned process becomes an instance: watched, health-checked, in status."""
        if restarting:
            track.restarts += 1
            track.restart_next = False
        mono = self._clock.monotonic()
        timeout = self.settings.worker_start_timeout or entry.start_timeout_seconds
        instance = Instance(
            state=state,
            process=process,
            popen=popen,
            started=mono,
            start_deadline=mono + timeout,
            grace=entry.grace_seconds,
        )
        self.instances[key.name] = instance
        self._watch(instance)
        self._bus.narrate(
            key,
            "worker_spawn_health_check",
            "Waiting for worker to start...",
            pid=popen.pid,
            url=f"http://{state.host}:{state.port}{entry.health_path}",
        )
        instance.monitor = asyncio.create_task(
            self._monitor(instance, entry), name=f"health {key.name}"
        )
        self._touch_model(spec.model)
        self._status(
            key,
            WorkerPhase.STARTING,
            ready=False,
            progressing=True,
            reason="Starting",
            message=f"PID {popen.pid} on port {state.port}; waiting for its health check",
        )

    def _log_not_rotated(self, instance: Instance, exc: OSError) -> None:
        """A full disk refused the copy that rotates a worker's log: said once (a warning
        with reason InsufficientSpace); the log stays as it is until space is freed."""
        if instance.log_full:
            return
        instance.log_full = True
        error = no_space(
            exc,
            where=instance.state.log_path.parent,
            needed=f"a copy of the log ({megabytes(_size(instance.state.log_path))}) needed",
            kept="the log is not rotated (it keeps growing) until space is freed",
        )
        self._bus.narrate(
            instance.key,
            "worker_log_not_rotated",
            f"⚠️ {error.message}",
            level=Level.WARNING,
            reason=error.reason,
        )

    def _ram_available(self) -> int:
        """Available RAM, read at most once a second (a burst of spawns reads it once)."""
        now = self._clock.monotonic()
        if self._ram is None or now - self._ram[0] >= 1.0:
            self._ram = (now, psutil.virtual_memory().available)
        return self._ram[1]

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

    # -- health --------------------------------------------------------------------------
    async def _monitor(self, instance: Instance, entry: RuntimeEntry | None) -> None:
        """Poll `/health` (fast while starting, then every few seconds), scrape metrics,
        rotate the log; wake the key on every change worth a status update."""
        state = instance.state
        host = _connect_host(state.host)
        health = HealthProbe(
            host=host, port=state.port, path=entry.health_path if entry else "/health"
        )
        await self._watch_health(instance, entry, health)

    async def _watch_health(
        self, instance: Instance, entry: RuntimeEntry | None, health: HealthProbe
    ) -> None:
        state = instance.state
        base = f"http://{health.host}:{health.port}"
        metrics_url = base + entry.metrics_path if entry and entry.metrics_path else None
        settings = self.settings
        next_scrape = 0.0
        # The log's size is looked at once per health_interval: a stat per probe of 100
        # starting workers was 3 % of hive's loop in B5.
        next_log_check = 0.0
        assert self._session is not None
        session = self._session
        while instance.exit is None and instance.stop_reason is None:
            starting = instance.ready_at is None
            error = await health.check(limit=settings.health_timeout)
            if instance.exit is not None or instance.stop_reason is not None:
                return
            if self._check_exit(instance):
                self._enqueue(instance.key, 0)
                return
            instance.health_checked_at = self._clock.now()
            now = self._clock.monotonic()
            if error is None:
                if starting:
                    instance.ready_at = now
                    instance.health_error = None  # the refusals while it was loading
                    self._bus.narrate(
                        instance.key,
                        "worker_ready" if instance.adopted else "worker_spawn_complete",
                        f"✅ Adopted worker answers (PID: {state.pid}, port: {state.port})"
                        if instance.adopted
                        else f"✅ Worker spawned (PID: {state.pid}, port: {state.port})",
                        pid=state.pid,
                        port=state.port,
                        seconds=round(now - instance.started, 3),
                    )
                    self._enqueue(instance.key, 0)
                elif instance.health_failures:
                    instance.health_failures, instance.health_error = 0, None
                    self._enqueue(instance.key, 0)
            else:
                instance.health_error = error
                if starting and now >= instance.start_deadline:
                    instance.start_timed_out = True
                    self._enqueue(instance.key, 0)
                    return
                if not starting:
                    instance.health_failures += 1
                    if instance.health_failures >= settings.health_failure_threshold:
                        instance.unhealthy = True
                        self._enqueue(instance.key, 0)
                        return
                    self._enqueue(instance.key, 0)
            if not starting and metrics_url and now >= next_scrape:
                next_scrape = now + settings.metrics_interval
                instance.metrics = await scrape(
                    session, metrics_url, limit=settings.health_timeout, now=self._clock.now()
                )
            if now >= next_log_check:
                next_log_check = now + settings.health_interval
                if _log_big(state.log_path, settings.worker_log_max_bytes):
                    try:
                        await asyncio.to_thread(
                            proc.rotate_log,
                            state.log_path,
                            max_bytes=settings.worker_log_max_bytes,
                            backups=settings.worker_log_backups,
                        )
                        instance.log_full = False
                    except OSError as exc:
                        if not is_no_space(exc):
                            raise
                        self._log_not_rotated(instance, exc)
            interval = (
                settings.health_start_interval
                if instance.ready_at is None
                else settings.health_interval
            )
            # On a shared grid: every worker is probed at the same instants, so one turn of
            # the event loop serves many answers (B7: idle CPU with 100 workers). An exit
            # cancels this task (see _ended).
            clock = asyncio.get_running_loop().time()
            await asyncio.sleep(interval - clock % interval)

    # -- requests ------------------------------------------------------------------------
    def request_restart(self, name: str) -> Instance:
        """An explicit restart (like `kubectl rollout restart`): stop, then start at once."""
        instance = self.instances.get(name)
        if instance is None or instance.stop_reason is not None:
            raise LookupError(name)  # no process, or one being stopped: nothing to restart
        instance.restart_requested = True
        track = self.tracks.setdefault(name, Track())
        track.restarted_at = self._clock.now()
        self._bus.narrate(
            instance.key,
            "worker_restart_requested",
            f"🔁 Restart of worker {name} requested (PID {instance.state.pid})",
            pid=instance.state.pid,
        )
        self._enqueue(instance.key, 0)
        return instance

    def names(self) -> set[str]:
        return set(self.instances) | set(self.tracks)

    # -- helpers -------------------------------------------------------------------------
    def _status(
        self,
        key: ObjectKey,
        phase: WorkerPhase,
        *,
        ready: bool,
        reason: str,
        message: str,
        progressing: bool = False,
        degraded: tuple[str, str] | None = None,
    ) -> ObjectStatus:
        update = worker_update(
            phase,
            ready=ready,
            reason=reason,
            message=message,
            progressing=progressing,
            degraded=degraded,
        )
        track = self.tracks.get(key.name)
        if track is not None and track.args_adjusted is not None:
            adjusted = ConditionUpdate(
                type=ConditionType.ARGS_ADJUSTED,
                status="True",
                reason=track.args_adjusted[0],
                message=track.args_adjusted[1],
            )
            update = update.model_copy(update={"conditions": (*update.conditions, adjusted)})
        return self._statuses.set(key, update)

    def _back_off(self, track: Track) -> float:
        """One more failure in the streak: when the next start may come, and the delay."""
        track.failures_in_a_row += 1
        delay = self._delay(track.failures_in_a_row)
        track.next_start = self._clock.monotonic() + delay
        track.next_start_at = self._clock.now() + timedelta(seconds=delay)
        return delay

    def _delay(self, failures_in_a_row: int) -> float:
        return crashloop_delay(
            failures_in_a_row, base=self.settings.crashloop_base, cap=self.settings.crashloop_cap
        )


def _log_big(path: Path, limit: int) -> bool:
    try:
        return path.stat().st_size > limit
    except OSError:
        return False


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _connect_host(host: str) -> str:
    """Where hive reaches a worker bound to `host` (a wildcard bind answers on loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _worker_type(entry: RuntimeEntry, device: str) -> str:
    """rbee's worker_type of a run: the entry's, except that a CPU device makes it `cpu`."""
    if device.startswith("CPU"):
        return "cpu"
    return entry.worker_type if entry.worker_type != "cpu" else "cuda"


def _snake(reason: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in reason).lstrip("_")
