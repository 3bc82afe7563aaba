"""Token-bucket math: waits that add up to the rate, bursts, and a rate changed in flight."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hive.core.ratelimit import TokenBucket


def test_unlimited_never_waits() -> None:
    bucket = TokenBucket(rate=None, burst=0)
    assert bucket.take(10**12, now=0.0) == 0.0


def test_the_burst_is_free_then_bytes_cost_time_at_the_rate() -> None:
    bucket = TokenBucket(rate=1000.0, burst=500.0)
    assert bucket.take(500, now=0.0) == 0.0
    assert bucket.take(1000, now=0.0) == pytest.approx(1.0)


def test_idle_time_refills_up_to_the_burst_only() -> None:
    bucket = TokenBucket(rate=1000.0, burst=500.0)
    bucket.take(500, now=0.0)
    assert bucket.take(500, now=100.0) == 0.0  # refilled, but capped at the burst
    assert bucket.take(1000, now=100.0) == pytest.approx(1.0)


def test_a_new_rate_applies_to_the_next_bytes() -> None:
    bucket = TokenBucket(rate=1000.0, burst=0.0)
    bucket.take(0, now=0.0)
    bucket.set_rate(10.0, now=0.0)
    assert bucket.take(100, now=0.0) == pytest.approx(10.0)
    bucket.set_rate(None, now=0.0)
    assert bucket.take(10**9, now=0.0) == 0.0


@given(
    rate=st.floats(min_value=1e3, max_value=1e9),
    chunks=st.lists(st.integers(min_value=1, max_value=10**7), min_size=1, max_size=50),
)
def test_sending_as_told_never_beats_the_rate(rate: float, chunks: list[int]) -> None:
    """A sender that waits what take() says needs at least (bytes - burst) / rate seconds."""
    burst = rate / 4
    bucket = TokenBucket(rate=rate, burst=burst)
    now = 0.0
    for n in chunks:
        now += bucket.take(n, now=now)
    assert now >= (sum(chunks) - burst) / rate - 1e-6
