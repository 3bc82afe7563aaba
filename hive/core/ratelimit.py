"""Token-bucket math for bandwidth limits: how long to wait before sending n bytes.

Pure: the caller supplies the time and does the waiting.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TokenBucket:
    """`rate` bytes per second with a burst of `burst` bytes; rate None means unlimited."""

    rate: float | None
    burst: float
    _tokens: float = 0.0
    _at: float | None = None

    def set_rate(self, rate: float | None, *, now: float) -> None:
        """Change the rate; takes effect for the next bytes, as a running download expects."""
        self._refill(now)
        self.rate = rate

    def _refill(self, now: float) -> None:
        if self._at is None:
            self._tokens = self.burst
        elif self.rate is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def take(self, n: int, *, now: float) -> float:
        """Spend n bytes' worth of tokens; returns the seconds to wait before sending them."""
        if self.rate is None:
            return 0.0
        self._refill(now)
        self._tokens -= n
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate
