"""The narration bus: every event hive emits, kept in a ring buffer that SSE streams,
the console and metrics read from. Publishing never waits for a reader. Every URL in an
event's message and data is redacted here, the one way into the ring."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from hive.core.clock import Clock
from hive.model.events import Event, Level
from hive.model.text import redact_text

Listener = Callable[[Event], None]


class Gap:
    """Marks events a reader missed: it fell too far behind, or they left the ring."""

    def __init__(self, *, missed: int, after_id: int) -> None:
        self.missed = missed
        self.after_id = after_id

    def as_data(self) -> dict[str, Any]:
        return {
            "action": "events_dropped",
            "level": Level.WARNING.value,
            "message": f"{self.missed} events were dropped because this client fell behind; "
            "re-read the objects you follow (GET /v1/models) to resync",
            "data": {"missed": self.missed, "after_id": self.after_id},
        }


def _redacted(value: Any) -> Any:
    """An event's data with every URL in its strings redacted (in nested lists and dicts
    too: hive builds them, a few levels deep at most)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return value


class Bus:
    """A bounded ring of events with a cursor per reader."""

    def __init__(self, *, clock: Clock, capacity: int = 10_000) -> None:
        self._clock = clock
        self._capacity = capacity
        self._ring: list[Event | None] = [None] * capacity
        self._last_id = 0
        self._changed = asyncio.Event()
        self._listeners: list[Listener] = []
        self.closed = False

    @property
    def last_id(self) -> int:
        return self._last_id

    @property
    def first_id(self) -> int:
        """The oldest id still in the ring (last_id + 1 when empty)."""
        return max(1, self._last_id - self._capacity + 1)

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def emit(
        self,
        action: str,
        message: str,
        *,
        object: str | None = None,
        level: Level = Level.INFO,
        data: dict[str, Any] | None = None,
    ) -> Event:
        self._last_id += 1
        event = Event(
            id=self._last_id,
            time=self._clock.now(),
            object=object,
            action=action,
            level=level,
            message=redact_text(message),
            data=_redacted(data) if data else {},
        )
        self._ring[self._last_id % self._capacity] = event
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a broken listener must not stop narration
                continue
        # Wake every reader waiting now; the next wait gets a fresh flag.
        self._changed.set()
        self._changed = asyncio.Event()
        return event

    def narrate(
        self, key: str, action: str, message: str, *, level: Level = Level.INFO, **data: object
    ) -> Event:
        """An event about one object, its data as keywords."""
        return self.emit(action, message, object=key, level=level, data=dict(data))

    def read(self, after: int, *, limit: int) -> tuple[list[Event], Gap | None]:
        """Up to `limit` events with id > after; a Gap when some are no longer in the ring."""
        if after > self._last_id:  # a cursor from an earlier run of hive: start over
            after = 0
        gap = None
        start = after + 1
        if start < self.first_id:
            gap = Gap(missed=self.first_id - start, after_id=after)
            start = self.first_id
        stop = min(self._last_id, start + limit - 1)
        events = [self._ring[i % self._capacity] for i in range(start, stop + 1)]
        return [e for e in events if e is not None], gap

    def close(self) -> None:
        """No more events: readers waiting now return, so streams end at shutdown."""
        self.closed = True
        self._changed.set()

    async def wait(self, after: int) -> None:
        """Return once an event with id > after exists, or the bus is closed."""
        while self._last_id <= after and not self.closed:
            await self._changed.wait()


class Subscription:
    """One reader: yields events (optionally for one object) and gap markers.

    A reader that lags more than `max_lag` events behind skips ahead and gets a Gap, so a
    slow client costs the bus nothing."""

    def __init__(
        self, bus: Bus, *, after: int | None, object: str | None = None, max_lag: int = 1000
    ) -> None:
        self._bus = bus
        if after is not None and after > bus.last_id:
            after = 0  # a cursor from an earlier run of hive: start over
        self._cursor = bus.last_id if after is None else after
        self._object = object
        self._max_lag = max_lag

    @property
    def cursor(self) -> int:
        return self._cursor

    @property
    def closed(self) -> bool:
        """The bus is closed and every event up to its end was read."""
        return self._bus.closed and self._cursor >= self._bus.last_id

    async def next_batch(self, *, wait: float) -> list[Event | Gap]:
        """Events after the cursor; empty when none came within `wait` seconds."""
        try:
            await asyncio.wait_for(self._bus.wait(self._cursor), wait)
        except TimeoutError:
            return []
        out: list[Event | Gap] = []
        lag = self._bus.last_id - self._cursor
        if lag > self._max_lag:
            skip_to = self._bus.last_id - self._max_lag
            out.append(Gap(missed=skip_to - self._cursor, after_id=self._cursor))
            self._cursor = skip_to
        events, gap = self._bus.read(self._cursor, limit=self._max_lag)
        if gap is not None:
            out.append(gap)
        for event in events:
            self._cursor = event.id
            if self._object is None or event.object == self._object:
                out.append(event)
        return out
