"""Back-off: 1, 2, 4, ... seconds after failures in a row, capped, reset by a success."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hive.core.backoff import Backoff, backoff_delay
from hive.core.clock import FakeClock


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


def test_remaining_counts_down_with_the_clock() -> None:
    clock = FakeClock()
    backoff = Backoff(clock=clock)
    assert backoff.remaining("Model/a") == 0.0
    assert backoff.failure("Model/a") == 1.0
    assert backoff.failure("Model/a") == 2.0
    assert backoff.failure("Model/a") == 4.0
    assert backoff.failures("Model/a") == 3
    assert backoff.remaining("Model/a") == 4.0
    clock.advance(1.5)
    assert backoff.remaining("Model/a") == pytest.approx(2.5)
    clock.advance(2.5)
    assert backoff.remaining("Model/a") == 0.0
    clock.advance(100)
    assert backoff.remaining("Model/a") == 0.0


def test_success_resets_the_streak() -> None:
    clock = FakeClock()
    backoff = Backoff(clock=clock)
    for _ in range(5):
        backoff.failure("Model/a")
    backoff.success("Model/a")
    assert backoff.failures("Model/a") == 0
    assert backoff.remaining("Model/a") == 0.0
    assert backoff.failure("Model/a") == 1.0


def test_keys_are_independent() -> None:
    clock = FakeClock()
    backoff = Backoff(clock=clock)
    for _ in range(3):
        backoff.failure("Model/a")
    backoff.failure("Model/b")
    assert (backoff.remaining("Model/a"), backoff.remaining("Model/b")) == (4.0, 1.0)
    backoff.success("Model/b")
    assert backoff.remaining("Model/a") == 4.0
    assert backoff.failures("Model/b") == 0


def test_a_long_streak_is_capped() -> None:
    clock = FakeClock()
    backoff = Backoff(clock=clock, base=2.0, cap=60.0)
    delays = [backoff.failure("k") for _ in range(200)]
    assert delays[:6] == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0]
    assert set(delays[5:]) == {60.0}
    assert backoff.remaining("k") == 60.0


def test_success_of_an_unknown_key_is_harmless() -> None:
    backoff = Backoff(clock=FakeClock())
    backoff.success("never-failed")
    assert backoff.failures("never-failed") == 0
