"""The work queue: keys to reconcile, de-duplicated, one worker per key at a time.

Same contract as controller-runtime's: a key added while it is being processed is
marked dirty and handed out again once `done` is called. As its rate-limiting queue, it
also keeps each key's failures in a row: `add_rate_limited` hands the key out again after
an exponential back-off (base, 2·base, … up to cap), `forget` ends the streak.
"""

from __future__ import annotations

import asyncio
from collections import deque

from hive.core.backoff import backoff_delay
from hive.core.clock import Clock, SystemClock


class WorkQueue:
    def __init__(
        self, *, clock: Clock | None = None, base: float = 1.0, cap: float = 300.0
    ) -> None:
        self._clock = clock or SystemClock()
        self._base = base
        self._cap = cap
        self._failures: dict[str, int] = {}
        self._not_before: dict[str, float] = {}
        self._order: deque[str] = deque()
        self._queued: set[str] = set()
        self._processing: set[str] = set()
        self._dirty: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._ready = asyncio.Condition()
        self._closed = False

    def __len__(self) -> int:
        return len(self._order)

    @property
    def processing(self) -> frozenset[str]:
        return frozenset(self._processing)

    def add(self, key: str) -> None:
        if self._closed:
            return
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if key in self._processing:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        self._queued.add(key)
        self._order.append(key)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._ready:
            self._ready.notify()

    def add_after(self, key: str, delay: float) -> None:
        """Add `key` after `delay` seconds; an earlier pending add wins."""
        if self._closed:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        existing = self._timers.get(key)
        if existing is not None and existing.when() <= loop.time() + delay:
            return
        if existing is not None:
            existing.cancel()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.add(key)

    # -- rate limiting -------------------------------------------------------------------
    def add_rate_limited(self, key: str) -> float:
        """One more failure of `key` in a row: it comes back after the back-off, which is
        returned (seconds)."""
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        delay = backoff_delay(failures, base=self._base, cap=self._cap)
        self._not_before[key] = self._clock.monotonic() + delay
        self.add_after(key, delay)
        return delay

    def failures(self, key: str) -> int:
        """The failures of `key` in a row (0 once it succeeded, see `forget`)."""
        return self._failures.get(key, 0)

    def backing_off(self, key: str) -> float:
        """Seconds left of `key`'s back-off (0 when it may be tried now)."""
        at = self._not_before.get(key)
        return 0.0 if at is None else max(0.0, at - self._clock.monotonic())

    def forget(self, key: str) -> None:
        """The streak of `key` ends (it succeeded, or its record changed)."""
        self._failures.pop(key, None)
        self._not_before.pop(key, None)

    async def get(self) -> str | None:
        """The next key to work on, or None once the queue is shut down."""
        async with self._ready:
            while not self._order and not self._closed:
                await self._ready.wait()
            if self._closed:
                return None
            key = self._order.popleft()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def take(self, prefix: str, *, limit: int) -> list[str]:
        """Up to `limit` more keys ready now that start with `prefix` (a kind: `Worker/`),
        handed out at once as `get` hands out one (each is being processed until `done`):
        a controller's batch."""
        taken = [key for key in self._order if key.startswith(prefix)][:limit]
        if taken:
            chosen = set(taken)
            self._order = deque(key for key in self._order if key not in chosen)
            self._queued -= chosen
            self._processing |= chosen
        return taken

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    async def shutdown(self) -> None:
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        async with self._ready:
            self._ready.notify_all()
