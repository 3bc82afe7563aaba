"""How a mutating job waits: it forwards the narration of the objects it wrote (from the
bus, from the moment before its write) and looks at their status on every event and every
phase change, until a check says they converged (`True`) or failed for good (a reason)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection

from hive.jobs.job import Job, JobFailed
from hive.model.events import Event
from hive.model.ids import ObjectKey
from hive.model.status import ConditionType, ModelPhase, ObjectStatus, WorkerPhase
from hive.narration.bus import Bus, Gap, Subscription
from hive.runtime.status_store import StatusStore

#: None: not yet; True: converged; a string: failed for good, and why.
Verdict = bool | str | None
Check = Callable[[], Verdict]
#: How often a check runs when nothing is said (a status that moved without narration).
IDLE_CHECK = 1.0

#: Why a Worker is Pending that will not change without a change of its record or of
#: the machine: the job ends with [ERROR] (waiting for its model is not one of them).
WORKER_STUCK = frozenset(
    {"UnknownRuntime", "RuntimeUnavailable", "InvalidArgs", "Unschedulable", "NoPort", "PortInUse"}
)


class Moved:
    """Wakes the jobs that follow statuses whenever a phase moves (a StatusStore watcher)."""

    def __init__(self, statuses: StatusStore) -> None:
        self._event = asyncio.Event()
        statuses.watch(lambda key, before, after: self.tell())

    def tell(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self) -> None:
        await self._event.wait()


def permanent_failure(event: Event) -> str | None:
    """The reason in an event that says an action failed for good (retrying cannot help)."""
    if event.action.endswith("_failed") and event.data.get("permanent") is True:
        return event.message.removeprefix("❌ ")
    return None


async def follow(
    *,
    job: Job,
    bus: Bus,
    moved: Moved,
    keys: Collection[ObjectKey],
    after: int,
    check: Check,
) -> None:
    """Forward the events about `keys` since event `after`, until `check` decides: return
    on True, JobFailed on a reason (or on an event that says a key failed for good)."""
    subscription = Subscription(bus, after=after, max_lag=max(bus.last_id - after, 10_000))
    wanted = set(keys)
    while True:
        await _forward(job, bus, subscription, wanted)
        verdict = check()
        if verdict is True:
            # What was said up to now belongs to the job (the last `…_complete` line).
            await _forward(job, bus, subscription, wanted)
            return
        if isinstance(verdict, str):
            raise JobFailed(verdict)
        if bus.closed:
            raise asyncio.CancelledError
        said = asyncio.ensure_future(bus.wait(subscription.cursor))
        phase = asyncio.ensure_future(moved.wait())
        try:
            await asyncio.wait([said, phase], timeout=IDLE_CHECK, return_when="FIRST_COMPLETED")
        finally:
            for task in (said, phase):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def _forward(job: Job, bus: Bus, subscription: Subscription, wanted: set[ObjectKey]) -> None:
    """Every event said so far about `wanted` (without waiting for more)."""
    while bus.last_id > subscription.cursor:
        for item in await subscription.next_batch(wait=IDLE_CHECK):
            _one(job, item, wanted)


def _one(job: Job, item: Event | Gap, wanted: set[ObjectKey]) -> None:
    if isinstance(item, Event) and item.object in wanted:
        job.forward(item)
        reason = permanent_failure(item)
        if reason is not None:
            raise JobFailed(f"{item.object}: {reason}")


def _current(status: ObjectStatus | None, generation: int) -> ObjectStatus | None:
    return status if status is not None and status.observedGeneration >= generation else None


def model_available(statuses: StatusStore, key: ObjectKey, generation: int) -> Check:
    """The Model is Available at `generation` or later; a permanent failure is an error."""

    def check() -> Verdict:
        status = _current(statuses.get(key), generation)
        if status is None:
            return None
        if status.phase == ModelPhase.AVAILABLE:
            return True
        if status.phase == ModelPhase.FAILED and status.nextRetryTime is None:
            return f"{key}: {status.message}"
        return None

    return check


def workers_running(statuses: StatusStore, generations: dict[ObjectKey, int]) -> Check:
    """Every Worker is Running; one that cannot start (its runtime, its args, no room) or
    that ended (a crash, a failed spawn) is an error."""

    def check() -> Verdict:
        for key, generation in generations.items():
            status = _current(statuses.get(key), generation)
            if status is None:
                return None
            if status.phase == WorkerPhase.RUNNING:
                continue
            ready = status.condition(ConditionType.READY)
            reason = ready.reason if ready else ""
            if status.phase == WorkerPhase.DEAD or (
                status.phase == WorkerPhase.PENDING and reason in WORKER_STUCK
            ):
                return f"{key}: {status.phase} ({reason}): {status.message}"
            return None
        return True

    return check
