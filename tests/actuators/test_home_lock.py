"""The home's lock: one holder at a time, named to the one refused, even on a full disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hive.actuators.home_lock import STOP_WORKERS, HomeInUse, hold
from tests.disk import fill


@pytest.fixture
def small_disk_size() -> str:
    return "1m"


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    first = hold(tmp_path, command=STOP_WORKERS)
    try:
        with pytest.raises(HomeInUse) as refused:
            hold(tmp_path)
        assert refused.value.pid == os.getpid()
        assert refused.value.command == STOP_WORKERS
        assert "hive stop-workers" in refused.value.message
    finally:
        os.close(first)
    os.close(hold(tmp_path))  # let go: the next one holds it


def test_a_full_disk_does_not_stop_hive_from_holding_its_home(small_disk: Path) -> None:
    """The holder line needs a block; the flock does not. On a full disk hive still starts
    (it used to stop with `No space left on device`), and still refuses a second one."""
    home = small_disk / "home"
    (home / "state").mkdir(parents=True)
    fill(small_disk)
    first = hold(home)
    try:
        with pytest.raises(HomeInUse) as refused:
            hold(home)
        assert refused.value.pid == 0  # nothing could be written: unknown, said as `pid ?`
        assert "pid ?" in refused.value.message
    finally:
        os.close(first)
