"""Status math: the phase and conditions of an object from what the loop knows, and
`lastTransitionTime` kept across updates as Kubernetes does. Pure."""

from __future__ import annotations

from datetime import datetime

from hive.model.status import (
    Condition,
    ConditionType,
    ConditionUpdate,
    ModelPhase,
    ObjectStatus,
    StatusUpdate,
)
from hive.model.text import redact_text


def merge_status(
    previous: ObjectStatus | None,
    update: StatusUpdate,
    *,
    generation: int,
    now: datetime,
    failures: int = 0,
    next_retry: datetime | None = None,
) -> ObjectStatus:
    """The new status; a condition's time changes only when its status changes. Messages
    are redacted here, the one way into a status (an error may quote a source's URL)."""
    old = {c.type: c for c in previous.conditions} if previous else {}
    conditions = []
    for c in update.conditions:
        before = old.get(c.type)
        moved = before is None or before.status != c.status
        conditions.append(
            Condition(
                type=c.type,
                status=c.status,
                reason=c.reason,
                message=redact_text(c.message),
                lastTransitionTime=now if moved or before is None else before.lastTransitionTime,
            )
        )
    return ObjectStatus(
        phase=update.phase,
        observedGeneration=generation,
        conditions=tuple(conditions),
        message=redact_text(update.message),
        failures=failures,
        nextRetryTime=next_retry,
    )


def _conds(
    ready: tuple[bool, str, str],
    progressing: tuple[bool, str, str],
    degraded: tuple[bool, str, str],
) -> tuple[ConditionUpdate, ...]:
    def one(kind: ConditionType, v: tuple[bool, str, str]) -> ConditionUpdate:
        return ConditionUpdate(
            type=kind, status="True" if v[0] else "False", reason=v[1], message=v[2]
        )

    return (
        one(ConditionType.READY, ready),
        one(ConditionType.PROGRESSING, progressing),
        one(ConditionType.DEGRADED, degraded),
    )


def model_available(message: str) -> StatusUpdate:
    return StatusUpdate(
        phase=ModelPhase.AVAILABLE,
        message=message,
        conditions=_conds((True, "Available", message), (False, "Idle", ""), (False, "Ok", "")),
    )


def model_absent(message: str) -> StatusUpdate:
    return StatusUpdate(
        phase=ModelPhase.ABSENT,
        message=message,
        conditions=_conds((True, "Absent", message), (False, "Idle", ""), (False, "Ok", "")),
    )


def model_working(phase: ModelPhase, reason: str, message: str) -> StatusUpdate:
    """Pending, Downloading or Deleting: work is under way or queued."""
    return StatusUpdate(
        phase=phase,
        message=message,
        conditions=_conds((False, reason, message), (True, reason, message), (False, "Ok", "")),
    )


def model_failed(reason: str, message: str) -> StatusUpdate:
    return StatusUpdate(
        phase=ModelPhase.FAILED,
        message=message,
        conditions=_conds((False, reason, message), (False, reason, ""), (True, reason, message)),
    )


def worker_update(
    phase: str,
    *,
    ready: bool,
    reason: str,
    message: str,
    progressing: bool = False,
    degraded: tuple[str, str] | None = None,
) -> StatusUpdate:
    """A worker's status: Ready (health answered), Progressing (starting or stopping),
    Degraded (with its reason: Unhealthy, CrashLoopBackOff, Unschedulable, ...)."""
    bad_reason, bad_message = degraded if degraded else ("Ok", "")
    return StatusUpdate(
        phase=phase,
        message=message,
        conditions=_conds(
            (ready, reason, message),
            (progressing, reason if progressing else "Idle", message if progressing else ""),
            (degraded is not None, bad_reason, bad_message),
        ),
    )
