"""Kubernetes-style status of an object: phase, observedGeneration, conditions."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ModelPhase(StrEnum):
    PENDING = "Pending"
    DOWNLOADING = "Downloading"
    AVAILABLE = "Available"
    FAILED = "Failed"
    DELETING = "Deleting"
    ABSENT = "Absent"


class WorkerPhase(StrEnum):
    """rbee's WorkerStatus (Starting, Running, Stopping, Dead), plus Pending: not started
    yet (waiting for its model, a device, a port, or a restart back-off)."""

    PENDING = "Pending"
    STARTING = "Starting"
    RUNNING = "Running"
    STOPPING = "Stopping"
    DEAD = "Dead"


class ConditionType(StrEnum):
    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    CONFLICT = "Conflict"
    #: A worker runs with other args than its record asks (a clamp); True while it does.
    ARGS_ADJUSTED = "ArgsAdjusted"


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: ConditionType
    status: ConditionStatus
    reason: str
    message: str = ""
    lastTransitionTime: datetime


class ObjectStatus(BaseModel):
    model_config = ConfigDict(frozen=True)

    phase: str
    observedGeneration: int = 0
    conditions: tuple[Condition, ...] = ()
    message: str = ""
    #: When the reconciler will look at this object again after a failure.
    nextRetryTime: datetime | None = None
    failures: int = 0

    def condition(self, kind: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)


class ConditionUpdate(BaseModel):
    """A condition as the reconciler wants it; the time is filled in on transition."""

    model_config = ConfigDict(frozen=True)

    type: ConditionType
    status: ConditionStatus
    reason: str
    message: str = ""


class StatusUpdate(BaseModel):
    model_config = ConfigDict(frozen=True)

    phase: str
    conditions: tuple[ConditionUpdate, ...] = Field(default=())
    message: str = ""
