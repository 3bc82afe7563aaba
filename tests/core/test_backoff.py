"""Back-off: 1, 2, 4, ... seconds after failures in a row, capped, reset by a success."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hive.core.backoff import backoff_delay


@pytest.mark.parametrize(
    ("failures", "delay"),
    [
        (-1, 0.0),
        (0, 0.0),
        (1, 1.0),
        (2, 2.0),
        (3, 4.0),
        (4, 8.0),
        (9, 256.0),
        (10, 300.0),
        (11, 300.0),
        (1000, 300.0),
        (10**6, 300.0),
        (10**18, 300.0),
    ],
)
def test_backoff_delay(failures: int, delay: float) -> None:
    assert backoff_delay(failures) == delay


def test_backoff_delay_base_and_cap() -> None:
    assert [backoff_delay(n, base=0.5, cap=3.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


@given(st.integers(min_value=1, max_value=10**30))
def test_backoff_delay_is_finite_and_within_bounds(failures: int) -> None:
    delay = backoff_delay(failures)
    assert math.isfinite(delay)
    assert 1.0 <= delay <= 300.0


@given(st.integers(min_value=1, max_value=10**6))
def test_backoff_delay_never_shrinks_as_failures_grow(failures: int) -> None:
    assert backoff_delay(failures + 1) >= backoff_delay(failures)
