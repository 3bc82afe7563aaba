"""Back-off math: per-key exponential delays after failures, reset on success."""

from __future__ import annotations

from dataclasses import dataclass, field

from hive.core.clock import Clock


def backoff_delay(failures: int, *, base: float = 1.0, cap: float = 300.0) -> float:
    """Delay after the `failures`-th failure in a row: base, 2·base, 4·base, ... up to cap."""
    if failures <= 0:
        return 0.0
    # Cap the exponent first so that a long streak cannot overflow a float.
    return min(cap, base * 2.0 ** min(failures - 1, 64))


@dataclass
class Backoff:
    """Failure streaks per key; `ready_at` says when a key may be tried again."""

    clock: Clock
    base: float = 1.0
    cap: float = 300.0
    _failures: dict[str, int] = field(default_factory=dict)
    _ready_at: dict[str, float] = field(default_factory=dict)

    def failure(self, key: str) -> float:
        """Record a failure; returns the delay before the next try."""
        count = self._failures.get(key, 0) + 1
        self._failures[key] = count
        delay = backoff_delay(count, base=self.base, cap=self.cap)
        self._ready_at[key] = self.clock.monotonic() + delay
        return delay

    def success(self, key: str) -> None:
        self._failures.pop(key, None)
        self._ready_at.pop(key, None)

    def failures(self, key: str) -> int:
        return self._failures.get(key, 0)

    def remaining(self, key: str) -> float:
        """Seconds until `key` may be tried again (0 when it may now)."""
        ready = self._ready_at.get(key)
        return 0.0 if ready is None else max(0.0, ready - self.clock.monotonic())
