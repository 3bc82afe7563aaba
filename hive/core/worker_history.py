"""A worker's history, pure: what outlives its processes (restarts, the failure streak,
how the last run ended) and how an end changes it: `record_exit` applies the restart
policy (`Always`, `OnFailure`, `Never`) and CrashLoopBackOff, `record_spawn_failure`
counts a refused spawn, `record_start` a restart. The planner (`core.worker_decide`)
reads it; the worker reconciler keeps one per worker."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict

from hive.core.workers import crashloop_delay, restart_wanted
from hive.model.workers import ExitInfo

#: Ends of a run that hive asked for: not failures, no back-off.
ASKED = frozenset({"Removed", "Stopped", "Replaced", "RestartRequested", "Shutdown", "ModelGone"})
#: Ends after which the next start is a first start, not a restart.
FIRST_START_NEXT = frozenset({"Removed", "Stopped", "Replaced", "Shutdown", "ModelGone"})


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Instant(_Frozen):
    """Now, on both clocks: deadlines are monotonic, what is shown is wall time."""

    monotonic: float
    wall: datetime


class Rules(_Frozen):
    """The settings the decisions follow (HIVE_CRASHLOOP_*, HIVE_PLACEMENT_RETRY)."""

    crashloop_base: float = 10.0
    crashloop_cap: float = 300.0
    #: Healthy seconds after which a crash starts a new failure streak.
    crashloop_reset: float = 600.0
    #: Seconds before a worker that does not fit (or whose runtime is missing) looks again.
    placement_retry: float = 15.0

    def delay(self, failures_in_a_row: int) -> float:
        return crashloop_delay(failures_in_a_row, base=self.crashloop_base, cap=self.crashloop_cap)


#: The settings' defaults.
DEFAULT_RULES = Rules()


class History(_Frozen):
    """What outlives a worker's processes: restarts, the failure streak, how the last run
    ended. Replaced (never changed in place) by the `record_*` functions."""

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


class Ended(_Frozen):
    """How a process ended, as the watcher saw it."""

    exit: ExitInfo
    stop_reason: str | None = None
    stop_message: str = ""
    unhealthy: bool = False
    start_timed_out: bool = False
    ready_at: float | None = None  # monotonic


class ExitOutcome(_Frozen):
    """What `record_exit` made of an end: the exit (with why it ended), whether hive asked
    for it, and the back-off before a restart (None: no restart scheduled)."""

    exit: ExitInfo
    asked: bool
    restart_in: float | None = None


# -- history -----------------------------------------------------------------------------
def record_exit(
    history: History,
    ended: Ended,
    *,
    policy: str | None,
    generation: int,
    now: Instant,
    rules: Rules = DEFAULT_RULES,
) -> tuple[History, ExitOutcome]:
    """A process ended: why (`ended.stop_reason`, else its health, else it exited), and
    what its restart policy makes of it (`policy`; None: no record, nothing to restart).
    Every end hive did not ask for counts toward the back-off, a clean exit 0 under
    `Always` too (as kubelet does); `rules.crashloop_reset` healthy seconds before it
    start a new streak; a policy that does not restart halts this `generation`."""
    reason = ended.stop_reason or (
        "Unhealthy" if ended.unhealthy else "StartTimeout" if ended.start_timed_out else "Exited"
    )
    exit = ended.exit.model_copy(update={"reason": reason, "message": ended.stop_message})
    changes: dict[str, object] = {
        "last_exit": exit,
        "restart_next": reason not in FIRST_START_NEXT,
    }
    if reason in ASKED:
        if reason == "Replaced":
            changes.update(restarts=0, failures_in_a_row=0)
        changes.update(next_start=0.0, next_start_at=None)
        return history.model_copy(update=changes), ExitOutcome(exit=exit, asked=True)
    if policy is None:
        return history.model_copy(update=changes), ExitOutcome(exit=exit, asked=False)
    healthy_for = now.monotonic - ended.ready_at if ended.ready_at is not None else 0.0
    if healthy_for >= rules.crashloop_reset:
        changes["failures_in_a_row"] = 0
    if not restart_wanted(policy, exit):
        changes["halted_generation"] = generation
        return history.model_copy(update=changes), ExitOutcome(exit=exit, asked=False)
    history, delay = _back_off(history.model_copy(update=changes), now, rules)
    return history, ExitOutcome(exit=exit, asked=False, restart_in=delay)


def record_spawn_failure(
    history: History, *, reason: str, message: str, now: Instant, rules: Rules = DEFAULT_RULES
) -> tuple[History, float]:
    """A spawn was refused (SpawnFailed, InsufficientSpace): a failure in the streak, as
    a crash is; returns the history and the back-off before the next try."""
    failed = history.model_copy(
        update={"last_exit": ExitInfo(at=now.wall, reason=reason, message=message)}
    )
    return _back_off(failed, now, rules)


def record_start(history: History, *, restarting: bool) -> History:
    """A process of the worker now runs: a restart is counted."""
    if not restarting:
        return history
    return history.model_copy(update={"restarts": history.restarts + 1, "restart_next": False})


def _back_off(history: History, now: Instant, rules: Rules) -> tuple[History, float]:
    failures = history.failures_in_a_row + 1
    delay = rules.delay(failures)
    return (
        history.model_copy(
            update={
                "failures_in_a_row": failures,
                "next_start": now.monotonic + delay,
                "next_start_at": now.wall + timedelta(seconds=delay),
            }
        ),
        delay,
    )
