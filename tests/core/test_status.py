"""Status math: conditions keep lastTransitionTime until their status changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from hive.core.status import (
    merge_status,
    model_absent,
    model_available,
    model_failed,
    model_working,
)
from hive.model.status import (
    ConditionType,
    ConditionUpdate,
    ModelPhase,
    ObjectStatus,
    StatusUpdate,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
READY = ConditionType.READY
PROGRESSING = ConditionType.PROGRESSING
DEGRADED = ConditionType.DEGRADED


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def statuses(status: ObjectStatus) -> dict[ConditionType, str]:
    return {c.type: c.status for c in status.conditions}


def times(status: ObjectStatus) -> dict[ConditionType, datetime]:
    return {c.type: c.lastTransitionTime for c in status.conditions}


def test_first_status_sets_every_time_and_the_generation() -> None:
    status = merge_status(
        None,
        model_working(ModelPhase.DOWNLOADING, "Downloading", "12 of 100 MB"),
        generation=3,
        now=at(0),
        failures=2,
        next_retry=at(8),
    )
    assert status.phase == "Downloading"
    assert status.observedGeneration == 3
    assert status.message == "12 of 100 MB"
    assert (status.failures, status.nextRetryTime) == (2, at(8))
    assert statuses(status) == {READY: "False", PROGRESSING: "True", DEGRADED: "False"}
    assert set(times(status).values()) == {at(0)}


def test_time_stays_while_the_status_stays_even_if_reason_and_message_change() -> None:
    first = merge_status(
        None, model_working(ModelPhase.PENDING, "Queued", ""), generation=1, now=at(0)
    )
    second = merge_status(
        first,
        model_working(ModelPhase.DOWNLOADING, "Downloading", "50%"),
        generation=1,
        now=at(30),
    )
    assert times(second) == times(first)
    ready = second.condition(READY)
    assert ready is not None
    assert (ready.reason, ready.message) == ("Downloading", "50%")


def test_time_moves_only_for_conditions_whose_status_changed() -> None:
    working = merge_status(
        None, model_working(ModelPhase.DOWNLOADING, "Downloading", ""), generation=1, now=at(0)
    )
    failed = merge_status(
        working, model_failed("ChecksumMismatch", "sha256 differs"), generation=1, now=at(10)
    )
    assert statuses(failed) == {READY: "False", PROGRESSING: "False", DEGRADED: "True"}
    assert times(failed) == {READY: at(0), PROGRESSING: at(10), DEGRADED: at(10)}

    available = merge_status(failed, model_available("ready"), generation=2, now=at(20))
    assert statuses(available) == {READY: "True", PROGRESSING: "False", DEGRADED: "False"}
    assert times(available) == {READY: at(20), PROGRESSING: at(10), DEGRADED: at(20)}
    assert available.observedGeneration == 2


def test_observed_generation_follows_the_argument_not_the_previous_status() -> None:
    first = merge_status(None, model_available("ok"), generation=5, now=at(0))
    assert (
        merge_status(first, model_available("ok"), generation=6, now=at(1)).observedGeneration == 6
    )


def test_a_condition_new_to_the_status_gets_the_current_time() -> None:
    only_ready = StatusUpdate(
        phase="Available",
        conditions=(ConditionUpdate(type=READY, status="True", reason="Available"),),
    )
    first = merge_status(None, only_ready, generation=1, now=at(0))
    with_conflict = StatusUpdate(
        phase="Available",
        conditions=(
            ConditionUpdate(type=READY, status="True", reason="Available"),
            ConditionUpdate(type=ConditionType.CONFLICT, status="True", reason="Conflict"),
        ),
    )
    second = merge_status(first, with_conflict, generation=1, now=at(5))
    assert times(second) == {READY: at(0), ConditionType.CONFLICT: at(5)}


def test_messages_are_redacted_as_they_enter_a_status() -> None:
    failed = model_failed("Unauthorized", "https://alice:S3CR3T@h.example/m?token=T0K: 401")
    status = merge_status(None, failed, generation=1, now=at(0))
    assert status.message == "https://alice:***@h.example/m?token=***: 401"
    assert not [c for c in status.conditions if "S3CR3T" in c.message or "T0K" in c.message]
    assert any("alice:***@" in c.message for c in status.conditions)


def test_retry_fields_are_cleared_when_not_given() -> None:
    failing = merge_status(
        None, model_failed("Transient", "x"), generation=1, now=at(0), failures=3, next_retry=at(4)
    )
    healed = merge_status(failing, model_available("ok"), generation=1, now=at(5))
    assert (healed.failures, healed.nextRetryTime) == (0, None)


def test_absent_is_ready_and_not_degraded() -> None:
    status = merge_status(None, model_absent("deleted"), generation=1, now=at(0))
    assert status.phase == "Absent"
    assert statuses(status) == {READY: "True", PROGRESSING: "False", DEGRADED: "False"}


_UPDATES = [
    model_available("ok"),
    model_absent("gone"),
    model_failed("Transient", "boom"),
    model_working(ModelPhase.PENDING, "Queued", ""),
    model_working(ModelPhase.DOWNLOADING, "Downloading", "x%"),
    model_working(ModelPhase.DELETING, "Deleting", ""),
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(range(len(_UPDATES))), min_size=1, max_size=20))
def test_transition_time_is_the_time_of_the_last_status_change(choices: list[int]) -> None:
    status: ObjectStatus | None = None
    last_change: dict[ConditionType, tuple[str, datetime]] = {}
    for step, choice in enumerate(choices):
        now = at(step)
        update = _UPDATES[choice]
        status = merge_status(status, update, generation=step, now=now)
        for c in update.conditions:
            before = last_change.get(c.type)
            if before is None or before[0] != c.status:
                last_change[c.type] = (c.status, now)
        assert status.observedGeneration == step
        assert status.phase == update.phase
        assert times(status) == {t: when for t, (_, when) in last_change.items()}
