"""Narration events: one structured type for every step hive takes."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Level(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class Event(BaseModel):
    """`{id, time, object, action, level, message, data}`; `id` grows by one per event."""

    model_config = ConfigDict(frozen=True)

    id: int
    time: datetime
    object: str | None = None
    action: str
    level: Level = Level.INFO
    message: str
    data: dict[str, Any] = Field(default_factory=dict)


class EventsDropped(BaseModel):
    """The `/v1/events` frame that says events were dropped (it has no `id`): this reader
    fell behind or asked for events that left the ring; `after_id` is the last one before
    the gap. Re-read the objects followed to resync."""

    model_config = ConfigDict(frozen=True)

    missed: int
    after_id: int
    message: str
