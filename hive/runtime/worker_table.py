"""The workers hive knows: one `Instance` per live process (the process, its health, its
stop: each written by one module), one `History` per worker name (what outlives its
processes). The worker reconciler and its actuators write the table; the API reads it, and
records a restart asked for (`request_restart`), which the reconciler carries out."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import psutil

from hive.core.clock import Clock
from hive.core.status import worker_update
from hive.core.worker_decide import Report, Running, Stopping
from hive.core.worker_history import History
from hive.model.ids import Kind, ObjectKey
from hive.model.status import ConditionType, ConditionUpdate, ObjectStatus
from hive.model.workers import ExitInfo, WorkerMetrics, WorkerState
from hive.narration.bus import Bus
from hive.observers.processes import DEFAULT_GRACE
from hive.runtime.queue import WorkQueue
from hive.runtime.status_store import StatusStore


@dataclass
class WorkerProcess:
    """The process (hive/runtime/worker_spawn.py starts it or adoption finds it; hive/
    runtime/worker_watch.py sees it end)."""

    state: WorkerState
    handle: psutil.Process
    popen: subprocess.Popen[bytes] | None = None
    adopted: bool = False
    started: float = 0.0  # monotonic
    start_deadline: float = 0.0
    #: Seconds between SIGTERM and SIGKILL (the runtime entry's).
    grace: float = DEFAULT_GRACE
    #: Stops the exit watch (`hive.platform.watch_exit`); None once the end was seen.
    unwatch: Callable[[], None] | None = None
    exit: ExitInfo | None = None


@dataclass
class Health:
    """What the health monitor (hive/runtime/worker_health.py) saw of it."""

    ready_at: float | None = None  # monotonic
    failures: int = 0
    error: str | None = None
    checked_at: datetime | None = None
    unhealthy: bool = False
    start_timed_out: bool = False
    #: Its log could not be rotated for want of space (said once, until it can be).
    log_full: bool = False
    metrics: WorkerMetrics | None = None
    task: asyncio.Task[None] | None = None


@dataclass
class StopOrder:
    """A stop under way (hive/runtime/worker_stop.py): why, and when the next step is due."""

    reason: str
    message: str
    deadline: float  # monotonic
    killed: bool = False


@dataclass
class Instance:
    """One process of a worker, spawned by this hive or adopted from an earlier one."""

    proc: WorkerProcess
    health: Health = field(default_factory=Health)
    stop: StopOrder | None = None
    restart_requested: bool = False

    @property
    def state(self) -> WorkerState:
        return self.proc.state

    @property
    def key(self) -> ObjectKey:
        return ObjectKey.of(Kind.WORKER, self.proc.state.name)

    @property
    def ready(self) -> bool:
        return self.health.ready_at is not None

    def running(self) -> Running:
        """What the planner knows of it."""
        health, stop = self.health, self.stop
        return Running(
            state=self.proc.state,
            ready=health.ready_at is not None,
            health_failures=health.failures,
            health_error=health.error,
            unhealthy=health.unhealthy,
            start_timed_out=health.start_timed_out,
            start_timeout=self.proc.start_deadline - self.proc.started,
            restart_requested=self.restart_requested,
            stop=Stopping(
                reason=stop.reason, message=stop.message, deadline=stop.deadline, killed=stop.killed
            )
            if stop is not None
            else None,
        )


class WorkerTable:
    """Live instances by worker name, and the history of every worker hive tracks."""

    def __init__(self, *, clock: Clock, bus: Bus, queue: WorkQueue) -> None:
        self._clock = clock
        self._bus = bus
        self._queue = queue
        self.instances: dict[str, Instance] = {}
        self.histories: dict[str, History] = {}

    def history(self, name: str) -> History:
        return self.histories.get(name) or History()

    def names(self) -> set[str]:
        return set(self.instances) | set(self.histories)

    def serving(self, model: str, *, running: bool = False) -> set[str]:
        """The workers whose live process serves `model` (with `running`: not being
        stopped)."""
        return {
            name
            for name, instance in self.instances.items()
            if instance.state.model == model and not (running and instance.stop is not None)
        }

    def request_restart(self, name: str) -> Instance:
        """An explicit restart (like `kubectl rollout restart`): recorded here, carried out
        by the worker's reconcile (stop, then start at once)."""
        instance = self.instances.get(name)
        if instance is None or instance.stop is not None:
            raise LookupError(name)  # no process, or one being stopped: nothing to restart
        instance.restart_requested = True
        self.histories[name] = self.history(name).model_copy(
            update={"restarted_at": self._clock.now()}
        )
        self._bus.narrate(
            instance.key,
            "worker_restart_requested",
            f"🔁 Restart of worker {name} requested (PID {instance.state.pid})",
            pid=instance.state.pid,
        )
        self._queue.add(instance.key)
        return instance


def write_status(
    statuses: StatusStore, key: ObjectKey, report: Report, history: History
) -> ObjectStatus:
    """`report` as the worker's status, with its `ArgsAdjusted` condition (from `history`)."""
    update = worker_update(
        report.phase,
        ready=report.ready,
        reason=report.reason,
        message=report.message,
        progressing=report.progressing,
        degraded=report.degraded,
    )
    if history.args_adjusted is not None:
        adjusted = ConditionUpdate(
            type=ConditionType.ARGS_ADJUSTED,
            status="True",
            reason=history.args_adjusted[0],
            message=history.args_adjusted[1],
        )
        update = update.model_copy(update={"conditions": (*update.conditions, adjusted)})
    return statuses.set(key, update)
