"""Back-off math: the exponential delay after failures in a row (the work queue keeps the
streak of each key, hive/runtime/queue.py)."""

from __future__ import annotations


def backoff_delay(failures: int, *, base: float = 1.0, cap: float = 300.0) -> float:
    """Delay after the `failures`-th failure in a row: base, 2·base, 4·base, ... up to cap."""
    if failures <= 0:
        return 0.0
    # Cap the exponent first so that a long streak cannot overflow a float.
    return min(cap, base * 2.0 ** min(failures - 1, 64))
