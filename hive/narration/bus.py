"""The narration bus: every event hive emits, kept in a ring buffer that SSE streams,
the console and metrics read from. Publishing never waits for a reader. Every URL in an
event's message and data is redacted here, the one way into the ring.

A reader loses only what left the ring (it fell `capacity` events behind), unless it
asked to skip ahead sooner (`max_lag`). Each event is encoded for the wire once, by the
first reader that sends it, and kept beside it in the ring for every other reader
(`Subscription.next_frames`): 100 streams cost one encoding per event, not 100."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

from hive.core.clock import Clock
from hive.model.events import Event, Level
from hive.model.text import redact_data, redact_text

Listener = Callable[[Event], None]
#: An event as a stream sends it (an SSE frame); the bus keeps what it returns.
Encoder = Callable[[Event], bytes]
#: The most events one read returns: a reader far behind catches up in reads of this size
#: (each one write to its client, awaited), never in one write of the whole ring.
READ_LIMIT = 1000


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


class Bus:
    """A bounded ring of events with a cursor per reader."""

    def __init__(self, *, clock: Clock, capacity: int = 10_000) -> None:
        self._clock = clock
        self._capacity = capacity
        self._ring: list[Event | None] = [None] * capacity
        #: Beside each event of the ring, its encoding, once a reader made it.
        self._frames: list[bytes | None] = [None] * capacity
        self._last_id = 0
        self._changed = asyncio.Event()
        self._listeners: list[Listener] = []
        self._closing = asyncio.Event()
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
            data=redact_data(data) if data else {},
        )
        slot = self._last_id % self._capacity
        self._ring[slot] = event
        self._frames[slot] = None
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

    def recent(self, *, object: str | None, limit: int) -> list[Event]:
        """The newest `limit` events the ring holds (of `object` only, when given), oldest
        first: a scan from the newest back, which stops once it has `limit`."""
        found: list[Event] = []
        for i in range(self._last_id, self.first_id - 1, -1):
            if len(found) >= limit:
                break
            event = self._ring[i % self._capacity]
            if event is not None and (object is None or event.object == object):
                found.append(event)
        found.reverse()
        return found

    def frames(
        self, after: int, *, limit: int, encode: Encoder
    ) -> tuple[list[bytes], int, Gap | None]:
        """`read`, encoded: the encodings of up to `limit` events with id > after, the id
        of the last of them (`after` when none), and a Gap as `read` gives it. An event is
        encoded by the first reader that asks (with `encode`: the bus has one encoding,
        the SSE frame) and kept in the ring; slices of the ring, not a loop per event."""
        if after > self._last_id:
            after = 0
        gap = None
        start = after + 1
        if start < self.first_id:
            gap = Gap(missed=self.first_id - start, after_id=after)
            start = self.first_id
        stop = min(self._last_id, start + limit - 1)
        if stop < start:
            return [], after, gap
        out: list[bytes] = []
        cap = self._capacity
        first, last = start % cap, stop % cap
        spans = [(first, last + 1)] if first <= last else [(first, cap), (0, last + 1)]
        for lo, hi in spans:
            chunk = self._frames[lo:hi]
            if None in chunk:
                for i, frame in enumerate(chunk):
                    if frame is None:
                        event = self._ring[lo + i]
                        assert event is not None
                        chunk[i] = self._frames[lo + i] = encode(event)
            out += chunk  # type: ignore[arg-type]  # every None was filled
        return out, stop, gap

    def frame(self, event: Event, encode: Encoder) -> bytes:
        """One event's encoding, kept in the ring while the event is."""
        slot = event.id % self._capacity
        if self._ring[slot] is not event:
            return encode(event)
        frame = self._frames[slot]
        if frame is None:
            frame = self._frames[slot] = encode(event)
        return frame

    def close(self) -> None:
        """No more events: readers waiting now return, so streams end at shutdown."""
        self.closed = True
        self._closing.set()
        self._changed.set()

    async def until_closed(self, within: float) -> bool:
        """Wait up to `within` seconds for the bus to close (at once when it is): whether it
        did. What a stream that is no reader of events (the telemetry) waits on."""
        if self.closed:
            return True
        try:
            async with asyncio.timeout(within):
                await self._closing.wait()
        except TimeoutError:
            return False
        return True

    async def wait(self, after: int) -> None:
        """Return once an event with id > after exists, or the bus is closed."""
        while self._last_id <= after and not self.closed:
            await self._changed.wait()


class Subscription:
    """One reader: yields events (optionally for one object) and gap markers.

    A reader behind the ring (more than its capacity) gets a Gap and goes on from the
    oldest event kept; publishing never waits for it. With `max_lag`, a reader that lags
    more than that skips ahead sooner (a Gap too). None, the default: it loses nothing the
    ring still holds, so a reader that keeps up loses nothing in a burst the ring holds."""

    def __init__(
        self,
        bus: Bus,
        *,
        after: int | None,
        object: str | None = None,
        max_lag: int | None = None,
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

    @property
    def behind(self) -> bool:
        """Whether events after the cursor are waiting (a read left some for the next)."""
        return self._cursor < self._bus.last_id

    async def ready(self, wait: float) -> bool:
        """Whether an event after the cursor exists within `wait` seconds."""
        if self._bus.last_id > self._cursor:
            return True
        try:
            async with asyncio.timeout(wait):
                await self._bus.wait(self._cursor)
        except TimeoutError:
            return False
        return True

    def _skip_ahead(self) -> Gap | None:
        """With a `max_lag` that the reader passed: a Gap, the cursor moved up to it."""
        if self._max_lag is None or self._bus.last_id - self._cursor <= self._max_lag:
            return None
        skip_to = self._bus.last_id - self._max_lag
        gap = Gap(missed=skip_to - self._cursor, after_id=self._cursor)
        self._cursor = skip_to
        return gap

    async def next_batch(self, *, wait: float) -> list[Event | Gap]:
        """Events after the cursor (READ_LIMIT at most); empty when none came within
        `wait` seconds."""
        if not await self.ready(wait):
            return []
        out: list[Event | Gap] = []
        skipped = self._skip_ahead()
        if skipped is not None:
            out.append(skipped)
        events, gap = self._bus.read(self._cursor, limit=READ_LIMIT)
        if gap is not None:
            out.append(gap)
        for event in events:
            self._cursor = event.id
            if self._object is None or event.object == self._object:
                out.append(event)
        return out

    async def next_frames(
        self, *, wait: float, encode: Encoder, encode_gap: Callable[[Gap], bytes]
    ) -> tuple[bytes, int]:
        """`next_batch`, encoded and joined: what a stream writes next, and how many frames
        it holds (none when nothing came within `wait` seconds). Each event is encoded once
        for every reader."""
        if not await self.ready(wait):
            return b"", 0
        return self.take_frames(encode=encode, encode_gap=encode_gap)

    def take_frames(
        self, *, encode: Encoder, encode_gap: Callable[[Gap], bytes]
    ) -> tuple[bytes, int]:
        """The frames after the cursor, now (none when there are none), the cursor moved
        past them: what `next_frames` returns once `ready`."""
        out: list[bytes] = []
        skipped = self._skip_ahead()
        if skipped is not None:
            out.append(encode_gap(skipped))
        if self._object is None:
            frames, self._cursor, gap = self._bus.frames(
                self._cursor, limit=READ_LIMIT, encode=encode
            )
            if gap is not None:
                out.append(encode_gap(gap))
            return b"".join(itertools.chain(out, frames)), len(out) + len(frames)
        events, gap = self._bus.read(self._cursor, limit=READ_LIMIT)
        if gap is not None:
            out.append(encode_gap(gap))
        for event in events:
            self._cursor = event.id
            if event.object == self._object:
                out.append(self._bus.frame(event, encode))
        return b"".join(out), len(out)
