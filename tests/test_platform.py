"""hive/platform.py with real processes, both ways: Linux's (pidfd, /proc) and the portable
one (psutil) that `portable=True` forces, as macOS would have it."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from hive import platform
from hive.platform import ExitWatch, boot_id, wait_any, watch_exit
from tests.conftest import apoll

WAYS = pytest.mark.parametrize("portable", [False, True], ids=["linux", "portable"])


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A child of ours that runs until killed (and is reaped at the end)."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait(timeout=10)


def test_the_linux_boot_id_is_the_kernels_and_the_portable_one_the_boot_time() -> None:
    boot_id.cache_clear()
    try:
        assert boot_id() == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        assert boot_id(portable=True) == f"boot-time-{int(psutil.boot_time())}"
    finally:
        boot_id.cache_clear()


def test_without_the_kernels_boot_id_the_boot_time_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    boot_id.cache_clear()
    monkeypatch.setattr(platform, "BOOT_ID", tmp_path / "boot_id")
    try:
        (tmp_path / "boot_id").write_text("9132fa0b-cc50-498b-b4db-d32d63b7ccc2\n")
        assert boot_id() == "9132fa0b-cc50-498b-b4db-d32d63b7ccc2"
        boot_id.cache_clear()
        (tmp_path / "boot_id").unlink()  # not Linux: no such file
        assert boot_id() == f"boot-time-{int(psutil.boot_time())}"
    finally:
        boot_id.cache_clear()


@WAYS
async def test_a_process_killed_is_noticed_and_its_status_left_to_its_parent(
    sleeper: subprocess.Popen[bytes], portable: bool
) -> None:
    ended: list[float] = []
    watch = watch_exit(
        sleeper.pid, lambda: ended.append(time.monotonic()), portable=portable, poll=0.02
    )
    try:
        assert (watch.fd is None) == portable  # the way asked for is the way taken
        assert not watch.ended()
        killed = time.monotonic()
        sleeper.send_signal(signal.SIGKILL)
        await apoll(lambda: ended, within=10, what="the end noticed")
        assert ended[0] - killed < 5
        assert watch.fd is None  # closed once it fired
        assert sleeper.wait(timeout=10) == -signal.SIGKILL  # not reaped by the watch
    finally:
        watch.close()


@WAYS
async def test_a_process_gone_before_the_watch_is_noticed_at_once(
    sleeper: subprocess.Popen[bytes], portable: bool
) -> None:
    sleeper.kill()
    sleeper.wait(timeout=10)  # reaped: the pid names nothing
    ended: list[bool] = []
    watch = watch_exit(sleeper.pid, lambda: ended.append(True), portable=portable, poll=60)
    try:
        await apoll(lambda: ended, within=10, what="the end, told without a poll")
    finally:
        watch.close()


@WAYS
async def test_a_closed_watch_tells_nothing(
    sleeper: subprocess.Popen[bytes], portable: bool
) -> None:
    """Had the closed watch been left running, it would have told no later than the open
    one, made after it the same way (the same pidfd readiness, an earlier timer)."""
    told: list[str] = []
    first = watch_exit(sleeper.pid, lambda: told.append("closed"), portable=portable, poll=0.02)
    second = watch_exit(sleeper.pid, lambda: told.append("open"), portable=portable, poll=0.02)
    first.close()
    first.close()  # again: nothing
    sleeper.kill()
    try:
        await apoll(lambda: told, within=10, what="the open watch told")
        assert told == ["open"]
    finally:
        second.close()


@WAYS
def test_waiting_for_a_group_returns_when_one_of_them_ends(portable: bool) -> None:
    procs = [subprocess.Popen(["sleep", "60"]) for _ in range(2)]
    watches = [ExitWatch(p.pid, portable=portable) for p in procs]
    try:
        started = time.monotonic()
        wait_any(watches, 0.1)  # nothing ends: the whole timeout
        assert time.monotonic() - started >= 0.1
        assert not any(w.ended() for w in watches)
        procs[1].kill()
        started = time.monotonic()
        wait_any(watches, 30)
        assert time.monotonic() - started < 10
        assert [w.ended() for w in watches] == [False, True]
        assert procs[1].wait(timeout=10) == -signal.SIGKILL  # its status is still ours
    finally:
        for w in watches:
            w.close()
        for p in procs:
            p.kill()
            p.wait(timeout=10)


def test_the_native_watch_is_linuxs_unless_the_portable_one_is_asked_for() -> None:
    assert platform.native_watch() is platform.LINUX
    assert platform.native_watch(portable=True) is False


async def test_callbacks_run_on_the_loop(sleeper: subprocess.Popen[bytes]) -> None:
    loop = asyncio.get_running_loop()
    on: list[bool] = []

    def record() -> None:
        on.append(asyncio.get_running_loop() is loop)

    watch = watch_exit(sleeper.pid, record, portable=True, poll=0.02)
    sleeper.kill()
    try:
        await apoll(lambda: on, within=10, what="the end")
        assert on == [True]
    finally:
        watch.close()
