"""The controller owns retries: a reconciler raises, the queue counts the failures in a
row and brings the key back after its back-off (a key asked for meanwhile still waits,
unless its record changed), a PermanentError waits for the record, a bug is an
InternalError and never stops the loop, and a reconcile that returns ends the streak.

The reconciler here is a scripted one (it raises what the test tells it): what is under
test is the controller's bookkeeping, on a fake clock and the real queue and store."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from hive.core.clock import FakeClock
from hive.core.parse import parse_text
from hive.core.store import Store
from hive.errors import HiveError, PermanentError, TransientError
from hive.model.ids import Kind, ObjectKey, SourceName
from hive.model.status import ModelPhase, StatusUpdate
from hive.runtime.controller import Controller, Result
from hive.runtime.metrics import ReconcileMetrics
from hive.runtime.queue import WorkQueue
from hive.runtime.status_store import StatusStore
from tests.conftest import model_yaml

SOURCE = SourceName("test")
KEY = ObjectKey.of(Kind.MODEL, "m")


class Scripted:
    """Raises the next of `outcomes` (a Result is returned), and records each call."""

    kind = Kind.MODEL

    def __init__(self, statuses: StatusStore) -> None:
        self.outcomes: list[Exception | Result] = []
        self.calls = 0
        self.failures: list[tuple[str, int, float | None]] = []
        self._statuses = statuses

    async def reconcile(self, key: ObjectKey) -> Result:
        self.calls += 1
        outcome = self.outcomes.pop(0) if self.outcomes else Result()
        if isinstance(outcome, Exception):
            raise outcome
        self._statuses.set(key, StatusUpdate(phase=ModelPhase.AVAILABLE))
        return outcome

    def failed(
        self, key: ObjectKey, error: HiveError, *, attempt: int, retry_in: float | None
    ) -> None:
        self.failures.append((error.reason, attempt, retry_in))
        self._statuses.set(key, StatusUpdate(phase=ModelPhase.FAILED, message=error.message))


class Rig:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.store = Store(clock=self.clock)
        self.store.register(SOURCE, kind="test", location="test.yaml")
        self.declare("file:///one")
        self.queue = WorkQueue(clock=self.clock, base=1.0, cap=8.0)
        self.statuses = StatusStore(store=self.store, clock=self.clock)
        self.reconciler = Scripted(self.statuses)
        self.controller = Controller(
            queue=self.queue,
            store=self.store,
            statuses=self.statuses,
            clock=self.clock,
            reconcilers=[self.reconciler],
            workers=1,
        )

    def declare(self, source: str) -> None:
        parsed = parse_text(model_yaml("m", source), file="test.yaml", source=SOURCE)
        assert not parsed.problems
        self.store.replace(SOURCE, parsed.records)


@pytest.fixture
def rig() -> Rig:
    return Rig()


async def test_failures_back_off_exponentially_up_to_the_cap(rig: Rig) -> None:
    rig.reconciler.outcomes = [TransientError("down")] * 5
    for _ in range(5):
        await rig.controller.process(KEY)
        rig.clock.advance(rig.queue.backing_off(KEY))
    assert rig.reconciler.failures == [
        ("Transient", 1, 1.0),
        ("Transient", 2, 2.0),
        ("Transient", 3, 4.0),
        ("Transient", 4, 8.0),
        ("Transient", 5, 8.0),
    ]
    status = rig.statuses[KEY]
    assert status.failures == 5 and status.phase == ModelPhase.FAILED


async def test_a_key_asked_for_during_its_back_off_waits_it_out(rig: Rig) -> None:
    rig.reconciler.outcomes = [TransientError("down"), TransientError("down")]
    await rig.controller.process(KEY)
    await rig.controller.process(KEY)  # a resync asks again at once
    assert rig.reconciler.calls == 1
    rig.clock.advance(1.0)
    await rig.controller.process(KEY)
    assert rig.reconciler.calls == 2


async def test_a_changed_record_starts_afresh_at_once(rig: Rig) -> None:
    rig.reconciler.outcomes = [TransientError("down"), TransientError("down")]
    await rig.controller.process(KEY)
    await rig.controller.process(KEY)
    rig.declare("file:///two")
    await rig.controller.process(KEY)
    assert rig.reconciler.calls == 2
    assert rig.reconciler.failures[-1] == ("Transient", 1, 1.0)  # a new streak


async def test_a_permanent_error_waits_for_the_record_to_change(rig: Rig) -> None:
    rig.reconciler.outcomes = [PermanentError("bad checksum")]
    await rig.controller.process(KEY)
    assert rig.reconciler.failures == [("Permanent", 1, None)]
    rig.clock.advance(3600)
    await rig.controller.process(KEY)
    assert rig.reconciler.calls == 1
    rig.declare("file:///fixed")
    await rig.controller.process(KEY)
    assert rig.reconciler.calls == 2


async def test_a_bug_is_an_internal_error_retried_with_back_off(rig: Rig) -> None:
    rig.reconciler.outcomes = [ZeroDivisionError("division by zero")]
    await rig.controller.process(KEY)
    assert rig.reconciler.failures == [("InternalError", 1, 1.0)]
    assert rig.statuses[KEY].message == "ZeroDivisionError: division by zero"


async def test_a_reconcile_that_returns_ends_the_streak(rig: Rig) -> None:
    rig.reconciler.outcomes = [TransientError("down"), TransientError("down"), Result()]
    await rig.controller.process(KEY)
    rig.clock.advance(1.0)
    await rig.controller.process(KEY)
    assert rig.statuses[KEY].failures == 2
    assert rig.statuses[KEY].nextRetryTime is not None
    rig.clock.advance(2.0)
    await rig.controller.process(KEY)
    status = rig.statuses[KEY]
    assert (status.phase, status.failures, status.nextRetryTime) == (ModelPhase.AVAILABLE, 0, None)
    assert rig.queue.failures(KEY) == 0 and rig.queue.backing_off(KEY) == 0.0


async def test_requeue_after_brings_the_key_back(rig: Rig) -> None:
    rig.reconciler.outcomes = [Result(requeue_after=0.0)]
    await rig.controller.process(KEY)
    assert await rig.queue.get() == str(KEY)


async def test_the_status_store_tells_phase_changes_only(rig: Rig) -> None:
    moves: list[tuple[str | None, str | None]] = []
    rig.statuses.watch(
        lambda key, before, after: moves.append(
            (before.phase if before else None, after.phase if after else None)
        )
    )
    rig.statuses.set(KEY, StatusUpdate(phase=ModelPhase.DOWNLOADING, message="1%"))
    rig.statuses.set(KEY, StatusUpdate(phase=ModelPhase.DOWNLOADING, message="2%"))
    rig.statuses.set(KEY, StatusUpdate(phase=ModelPhase.AVAILABLE))
    rig.statuses.forget(KEY)
    assert moves == [
        (None, "Downloading"),
        ("Downloading", "Available"),
        ("Available", None),
    ]
    assert rig.statuses.get(KEY) is None


async def test_an_outcome_still_to_come_keeps_the_streak(rig: Rig) -> None:
    """A reconcile whose work has no outcome yet (a download waiting for a slot, a spawn
    under way) does not end the streak: the next failure backs off longer."""
    rig.reconciler.outcomes = [
        TransientError("down"),
        Result(requeue_after=0.5, in_progress=True),
        TransientError("down"),
    ]
    await rig.controller.process(KEY)
    rig.clock.advance(1.0)
    await rig.controller.process(KEY)
    assert rig.queue.failures(KEY) == 1
    await rig.controller.process(KEY)
    assert rig.reconciler.failures[-1] == ("Transient", 2, 2.0)


async def test_an_explicit_request_skips_the_back_off(rig: Rig) -> None:
    rig.reconciler.outcomes = [TransientError("down"), Result()]
    await rig.controller.process(KEY)
    await rig.controller.process(KEY)
    assert rig.reconciler.calls == 1
    rig.controller.expedite(KEY)
    await rig.controller.process(KEY)
    assert rig.reconciler.calls == 2


async def test_reconciles_errors_and_durations_are_counted_by_kind(rig: Rig) -> None:
    registry = CollectorRegistry()
    metrics = ReconcileMetrics(registry)
    value = registry.get_sample_value
    clock = rig.clock

    class Timed(Scripted):
        async def reconcile(self, key: ObjectKey) -> Result:
            clock.advance(0.3)  # a reconcile that takes 0.3 s of the fake clock
            return await super().reconcile(key)

    reconciler = Timed(rig.statuses)
    controller = Controller(
        queue=rig.queue,
        store=rig.store,
        statuses=rig.statuses,
        clock=clock,
        reconcilers=[reconciler],
        workers=1,
        metrics=metrics,
    )
    assert value("hive_reconciles_total", {"kind": "Model"}) == 0  # declared before any
    reconciler.outcomes = [TransientError("down"), ZeroDivisionError("bug"), Result()]
    for _ in range(3):
        await controller.process(KEY)
        clock.advance(rig.queue.backing_off(KEY))
    await controller.process(KEY)  # no failure streak: reconciled again
    assert value("hive_reconciles_total", {"kind": "Model"}) == 4
    for reason in ("InternalError", "Transient"):
        assert value("hive_reconcile_errors_total", {"kind": "Model", "reason": reason}) == 1
    model = {"kind": "Model"}
    assert value("hive_reconcile_duration_seconds_sum", model) == pytest.approx(1.2)
    for le, count in (("0.1", 0), ("0.5", 4), ("+Inf", 4)):
        assert value("hive_reconcile_duration_seconds_bucket", {**model, "le": le}) == count
