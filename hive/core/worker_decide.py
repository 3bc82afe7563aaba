"""What to do with one Worker now, pure: `plan_worker(spec, facts, history, now)` returns a
`Decision` (start, stop, replace, escalate a stop, wait until, unschedulable, nothing,
forget) from its record, what was seen of it (`Facts`) and its `History` (see
core/worker_history.py). The worker reconciler (runtime/worker_reconciler.py) gathers the
facts and carries the decision out; `plan_workers` (`hive plan`) asks `plan_worker` too,
so what it prints and what hive does cannot disagree."""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from hive.core.worker_history import DEFAULT_RULES, History, Instant, Rules
from hive.core.worker_plan import Launch, ModelView, Why, fit, start_check, stop_reason
from hive.model.actions import (
    ReplaceWorker,
    StartWorker,
    StopWorker,
    UnschedulableWorker,
    WorkerAction,
)
from hive.model.devices import GpuInfo
from hive.model.manifests import WorkerSpec
from hive.model.observed import ObservedModel
from hive.model.runtimes import RuntimeEntry
from hive.model.status import WorkerPhase
from hive.model.workers import WorkerState


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Stopping(_Frozen):
    """A stop under way: why, and when the next step (SIGKILL, then a last look) is due."""

    reason: str
    message: str
    deadline: float  # monotonic
    killed: bool = False


class Running(_Frozen):
    """What was seen of a worker's live process: its record, its health, a stop."""

    state: WorkerState
    ready: bool = False
    health_failures: int = 0
    health_error: str | None = None
    #: Its health checks failed `health_failure_threshold` times in a row.
    unhealthy: bool = False
    #: It never answered within `start_timeout` seconds of starting.
    start_timed_out: bool = False
    start_timeout: float = 0.0
    restart_requested: bool = False
    stop: Stopping | None = None


class Placement(_Frozen):
    """The devices now: what a start must fit in."""

    gpus: tuple[GpuInfo, ...] = ()
    ram_available_bytes: int = 0


class Facts(_Frozen):
    """What was observed of one worker now. The start facts (`runtimes`, `boot`,
    `placement`) are needed only when no process runs it."""

    process: Running | None = None
    #: Its record's model as hive sees it (None without a record).
    model: ModelView | None = None
    runtimes: Mapping[str, RuntimeEntry] = {}
    runtime_root: Path | None = None
    boot: str | None = None
    placement: Placement = Placement()
    sources_synced: bool = True
    #: The generation of its record.
    generation: int = 0


# -- decisions ---------------------------------------------------------------------------
class Report(_Frozen):
    """The status to record (see `core.status.worker_update`)."""

    phase: WorkerPhase
    ready: bool = False
    reason: str
    message: str
    progressing: bool = False
    degraded: tuple[str, str] | None = None


class Start(_Frozen):
    """No process runs it, and it may start: with these args (`launch`)."""

    kind: Literal["start"] = "start"
    launch: Launch
    #: A restart (counted in `restarts`), not a first start.
    restarting: bool


class Stop(_Frozen):
    """Its live process must stop (SIGTERM, then SIGKILL after the grace)."""

    kind: Literal["stop"] = "stop"
    reason: str
    message: str


class Replace(_Frozen):
    """Its record changed: the process stops, and the new one starts once it has gone."""

    kind: Literal["replace"] = "replace"
    reason: Literal["Replaced"] = "Replaced"
    message: str


class Escalate(_Frozen):
    """A stop's deadline passed: SIGKILL (or, once killed, say it is stuck); look again
    `proc.KILL_WAIT` later."""

    kind: Literal["escalate"] = "escalate"
    killed: bool


class Wait(_Frozen):
    """Nothing to do until `until` (monotonic): a stop's deadline, a crash-loop back-off."""

    kind: Literal["wait"] = "wait"
    until: float
    report: Report | None = None


class Unschedulable(_Frozen):
    """It cannot start now: Pending, and why (`why`)."""

    kind: Literal["unschedulable"] = "unschedulable"
    why: Why
    report: Report
    #: Say so (once per message); waits for a model are not narrated.
    narrate: bool
    #: Look again after (None: when something changes).
    retry_after: float | None
    #: It waits for memory, VRAM or a port: an exit that frees them wakes it.
    for_resources: bool = False


class Nothing(_Frozen):
    """As it should be: record `report` (None: leave the status as it is)."""

    kind: Literal["nothing"] = "nothing"
    report: Report | None = None


class Forget(_Frozen):
    """No record and no process, every source synced: its status and history go."""

    kind: Literal["forget"] = "forget"


Decision = Start | Stop | Replace | Escalate | Wait | Unschedulable | Nothing | Forget


def plan_worker(
    spec: WorkerSpec | None,
    facts: Facts,
    history: History,
    now: Instant,
    *,
    rules: Rules = DEFAULT_RULES,
) -> Decision:
    """What to do with the worker of `spec` (None: no source declares it) now. A process
    that has just ended is recorded first (`record_exit`); then `facts.process` is None."""
    running = facts.process
    if running is not None:
        return _tend(spec, facts, running, now)
    if spec is None:
        return Forget() if facts.sources_synced else Nothing()
    if spec.state == "stopped":
        return Nothing(
            report=Report(
                phase=WorkerPhase.DEAD,
                reason="Stopped",
                message="state: stopped (set state: running to start it)",
            )
        )
    last = history.last_exit
    if history.halted_generation == facts.generation and last is not None:
        return Nothing(
            report=Report(
                phase=WorkerPhase.DEAD,
                reason="Completed" if not last.failed else "Failed",
                message=f"{last.describe()}; restartPolicy {spec.restartPolicy} does not "
                "restart it (change the record to start it again)",
                degraded=None if not last.failed else ("Failed", last.describe()),
            )
        )
    remaining = history.next_start - now.monotonic
    if remaining > 0:
        message = (
            f"back-off {rules.delay(history.failures_in_a_row):g}s restarting failed worker "
            f"({last.describe() if last else 'failed'}); next restart in {remaining:.1f}s"
        )
        return Wait(
            until=history.next_start,
            report=Report(
                phase=WorkerPhase.DEAD,
                reason="CrashLoopBackOff",
                message=message,
                degraded=("CrashLoopBackOff", message),
            ),
        )
    return _start(spec, facts, history, rules)


def _tend(spec: WorkerSpec | None, facts: Facts, running: Running, now: Instant) -> Decision:
    """A live process: go on with its stop, stop it if it is not wanted as it is, else
    report its health."""
    if running.stop is not None:
        if now.monotonic < running.stop.deadline:
            return Wait(until=running.stop.deadline)
        return Escalate(killed=running.stop.killed)
    why = stop_reason(
        spec,
        running=running.state,
        model=facts.model,
        sources_synced=facts.sources_synced,
        restart_requested=running.restart_requested,
        unhealthy=f"{running.health_failures} health checks failed in a row "
        f"({running.health_error})"
        if running.unhealthy
        else None,
        start_timed_out=f"no healthy answer within {running.start_timeout:g}s of starting "
        f"({running.health_error})"
        if running.start_timed_out
        else None,
    )
    if why is not None and why.reason == "Replaced":
        return Replace(message=why.message)
    if why is not None:
        return Stop(reason=why.reason, message=why.message)
    state = running.state
    if spec is None:
        return Nothing(
            report=Report(
                phase=WorkerPhase.RUNNING if running.ready else WorkerPhase.STARTING,
                ready=running.ready,
                reason="WaitingForSources",
                message="adopted; kept until every source has synced",
            )
        )
    if not running.ready:
        return Nothing(
            report=Report(
                phase=WorkerPhase.STARTING,
                progressing=True,
                reason="Starting",
                message=f"waiting for {state.host}:{state.port} to answer its health check",
            )
        )
    failing = running.health_failures
    return Nothing(
        report=Report(
            phase=WorkerPhase.RUNNING,
            ready=True,
            reason="Healthy",
            message=f"serving {state.model} on http://{state.host}:{state.port}",
            degraded=("HealthCheckFailing", f"{failing} failed: {running.health_error}")
            if failing
            else None,
        )
    )


def _start(spec: WorkerSpec, facts: Facts, history: History, rules: Rules) -> Decision:
    """No process runs it: what keeps it from starting (its runtime, args, model, then
    the room on its device), or a start."""
    assert facts.model is not None, "a record's facts carry its model"
    checked = start_check(
        spec,
        runtimes=facts.runtimes,
        model=facts.model,
        boot=facts.boot,
        runtime_root=facts.runtime_root,
    )
    if isinstance(checked, Why):
        if checked.reason == "InvalidArgs":
            return Unschedulable(
                why=checked,
                report=Report(
                    phase=WorkerPhase.PENDING,
                    reason=checked.reason,
                    message=f"{checked.message} (fix the record; hive tries again when it changes)",
                    degraded=(checked.reason, checked.message),
                ),
                narrate=False,
                retry_after=None,
            )
        waits_for_model = checked.reason in ("ModelGone", "ModelNotReady")
        return _pending(
            checked,
            narrate=not waits_for_model,
            retry_after=None if waits_for_model else rules.placement_retry,
        )
    placement = facts.placement
    blocked = fit(
        checked,
        device=spec.device,
        gpus=placement.gpus,
        ram_available_bytes=placement.ram_available_bytes,
    )
    if blocked is not None:
        return _pending(blocked, retry_after=rules.placement_retry, for_resources=True)
    return Start(launch=checked, restarting=history.restart_next)


def _pending(
    why: Why, *, retry_after: float | None, narrate: bool = True, for_resources: bool = False
) -> Unschedulable:
    """Pending for `why`; the actuator that refuses a port says the same."""
    return Unschedulable(
        why=why,
        report=pending_report(why),
        narrate=narrate,
        retry_after=retry_after,
        for_resources=for_resources,
    )


def pending_report(why: Why) -> Report:
    """The Pending status of a worker that cannot start for `why`."""
    return Report(
        phase=WorkerPhase.PENDING,
        reason=why.reason,
        message=f"{why.reason}: {why.message}",
        degraded=(why.reason, why.message),
    )


# -- hive plan ---------------------------------------------------------------------------
def plan_workers(
    desired: Mapping[str, WorkerSpec],
    running: Mapping[str, WorkerState],
    *,
    models: Mapping[str, ObservedModel],
    provisioning: Set[str],
    runtimes: Mapping[str, RuntimeEntry],
    gpus: Sequence[GpuInfo],
    ram_available_bytes: int,
    absent: Set[str] = frozenset(),
    boot: str | None = None,
) -> list[WorkerAction]:
    """Every worker action, in name order, as `plan_worker` decides them for a hive that
    starts now (no history). `running`: the workers whose process is there (checked as
    adoption checks them); `provisioning`: the Models the model plan brings into the
    catalog first (their workers start once they are Available); `absent`: the Models whose
    record says `state: absent`."""
    actions: list[WorkerAction] = []
    placement = Placement(gpus=tuple(gpus), ram_available_bytes=ram_available_bytes)
    origin = Instant(monotonic=0.0, wall=datetime(1970, 1, 1, tzinfo=UTC))
    for name in sorted(set(desired) | set(running)):
        spec, state = desired.get(name), running.get(name)
        model = (
            ModelView.offline(spec.model, models.get(spec.model), absent=spec.model in absent)
            if spec is not None
            else None
        )
        facts = Facts(
            process=Running(state=state, ready=True) if state is not None else None,
            model=model,
            runtimes=runtimes,
            boot=boot,
            placement=placement,
        )
        action = _action(name, spec, state, plan_worker(spec, facts, History(), origin))
        if action is not None:
            if isinstance(action, UnschedulableWorker) and spec is not None:
                action = _provisioned(action, name, spec, provisioning=spec.model in provisioning)
            actions.append(action)
    return actions


def _action(
    name: str, spec: WorkerSpec | None, state: WorkerState | None, decision: Decision
) -> WorkerAction | None:
    match decision:
        case Replace() if state is not None:
            return ReplaceWorker(name=name, pid=state.pid, reason=decision.message)
        case Stop() if state is not None:
            return StopWorker(name=name, pid=state.pid, reason=decision.message)
        case Start() if spec is not None:
            adjusted = decision.launch.adjusted
            note = f"; args adjusted: {adjusted[1]}" if adjusted else ""
            return StartWorker(name=name, reason=f"{_what(spec)}: no process runs it{note}")
        case Unschedulable():
            why = decision.why
            return UnschedulableWorker(name=name, reason=f"{why.reason}: {why.message}")
    return None


def _provisioned(
    action: UnschedulableWorker, name: str, spec: WorkerSpec, *, provisioning: bool
) -> WorkerAction:
    """A worker whose model is not ready: it starts once the model plan provisions it, or
    no record provisions it."""
    if not action.reason.startswith("ModelNotReady:"):
        return action
    if provisioning:
        return StartWorker(
            name=name, reason=f"{_what(spec)}, once Model/{spec.model} is provisioned"
        )
    return UnschedulableWorker(name=name, reason=f"{action.reason} (no record provisions it)")


def _what(spec: WorkerSpec) -> str:
    return f"{spec.runtime} serving {spec.model} on {spec.device}"
