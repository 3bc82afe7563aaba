"""The process table, for real: a recorded worker is found again only when pid, start time
and both environment markers match; and what a live worker uses."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest

from hive.model.workers import WorkerState
from hive.observers.processes import find_worker, is_same, usage
from tests.conftest import poll

INSTANCE = "hive-instance-x"
WORKER_ID = "worker-y"
SLEEPER = "import time; time.sleep(60)"
BUSY = "import time\ndeadline = time.monotonic() + 60\nwhile time.monotonic() < deadline: pass\n"

Start = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """A real child carrying hive's markers, in its own group, returned once its Python
    runs (it touches a file first); every group is killed at the end."""
    procs: list[subprocess.Popen[bytes]] = []

    def run(
        code: str = SLEEPER, *, instance: str = INSTANCE, worker_id: str = WORKER_ID
    ) -> subprocess.Popen[bytes]:
        ready = tmp_path / f"ready-{len(procs)}"
        env = {**os.environ, "HIVE_INSTANCE": instance, "HIVE_WORKER_ID": worker_id}
        proc = subprocess.Popen(
            [sys.executable, "-c", f"open({str(ready)!r}, 'w').close()\n{code}"],
            env=env,
            start_new_session=True,
        )
        procs.append(proc)

        def running() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the child exited with {proc.returncode}")
            return ready.exists()

        poll(running, what="the child to run")
        return proc

    yield run
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def make_state(pid: int, create_time: float) -> WorkerState:
    return WorkerState(
        name="w",
        worker_id=WORKER_ID,
        instance=INSTANCE,
        pid=pid,
        create_time=create_time,
        host="127.0.0.1",
        port=9001,
        argv=(sys.executable, "-c", SLEEPER),
        runtime="scripted",
        worker_type="cpu",
        model="tiny",
        model_path=Path("/models/tiny.gguf"),
        model_sha256=None,
        device="CPU-0",
        spec_hash="0" * 16,
        started_at=datetime.now(UTC),
        log_path=Path("/logs/w.log"),
    )


def state_of(proc: subprocess.Popen[bytes]) -> WorkerState:
    return make_state(proc.pid, psutil.Process(proc.pid).create_time())


# -- find_worker -------------------------------------------------------------------------------
def test_a_live_worker_with_its_markers_is_found(start: Start) -> None:
    proc = start()
    found, why = find_worker(state_of(proc), instance=INSTANCE)
    assert why == "found"
    assert found is not None
    assert found.pid == proc.pid
    assert is_same(found)


def test_another_hives_worker_is_not_taken(start: Start) -> None:
    proc = start(instance="another-hive")
    found, why = find_worker(state_of(proc), instance=INSTANCE)
    assert found is None
    assert why == f"pid {proc.pid} does not carry this hive's markers"


def test_a_process_with_another_worker_id_is_not_taken(start: Start) -> None:
    proc = start(worker_id="someone-else")
    found, why = find_worker(state_of(proc), instance=INSTANCE)
    assert found is None
    assert why == f"pid {proc.pid} does not carry this hive's markers"


def test_a_process_without_markers_is_not_taken() -> None:
    me = psutil.Process()  # this very test process: alive, but not a worker of ours
    found, why = find_worker(make_state(me.pid, me.create_time()), instance=INSTANCE)
    assert found is None
    assert why == f"pid {me.pid} does not carry this hive's markers"


def test_a_start_time_within_psutils_rounding_is_the_same_process(start: Start) -> None:
    proc = start()
    state = state_of(proc)
    found, why = find_worker(make_state(proc.pid, state.create_time + 0.01), instance=INSTANCE)
    assert (found is not None, why) == (True, "found")


@pytest.mark.parametrize("shift", [10.0, -10.0, 1.0, 0.2])
def test_a_pid_with_another_start_time_belongs_to_another_process(
    start: Start, shift: float
) -> None:
    proc = start()
    state = state_of(proc)
    found, why = find_worker(make_state(proc.pid, state.create_time + shift), instance=INSTANCE)
    assert found is None
    assert why == f"pid {proc.pid} now belongs to another process"


def test_an_exited_worker_not_yet_reaped_has_exited(start: Start) -> None:
    proc = start()
    state = state_of(proc)
    os.kill(proc.pid, signal.SIGKILL)
    poll(
        lambda: psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE,
        what="the child to become a zombie",
    )
    found, why = find_worker(state, instance=INSTANCE)
    assert found is None
    assert why == f"pid {proc.pid} has exited"


def test_a_reaped_worker_is_gone(start: Start) -> None:
    proc = start()
    state = state_of(proc)
    proc.kill()
    proc.wait()
    found, why = find_worker(state, instance=INSTANCE)
    assert found is None
    assert why == f"pid {proc.pid} is gone"


# -- is_same -----------------------------------------------------------------------------------
def test_is_same_follows_the_process_to_its_end(start: Start) -> None:
    proc = start()
    found, _ = find_worker(state_of(proc), instance=INSTANCE)
    assert found is not None
    assert is_same(found)
    proc.send_signal(signal.SIGKILL)
    poll(lambda: not is_same(found), what="is_same to see the exit (zombie)")
    proc.wait()
    assert not is_same(found)


# -- usage -------------------------------------------------------------------------------------
def test_usage_of_a_busy_worker_shows_cpu_and_memory(start: Start) -> None:
    proc = start(BUSY)
    found, _ = find_worker(state_of(proc), instance=INSTANCE)
    assert found is not None
    cpu, rss_mb = usage(found)  # the first call starts the CPU measurement
    assert is_same(found), "the worker was killed from outside the test"
    assert cpu is not None
    assert rss_mb is not None
    assert 1 <= rss_mb < 1024  # a running Python interpreter holds several MB

    def busy() -> float | None:
        assert proc.poll() is None, f"the busy worker died ({proc.returncode})"
        cpu, _ = usage(found)
        return cpu if cpu and cpu > 10 else None

    poll(busy, interval=0.05, what="the busy worker's CPU percent")


def test_usage_of_a_gone_worker_is_unknown(start: Start) -> None:
    proc = start()
    found, _ = find_worker(state_of(proc), instance=INSTANCE)
    assert found is not None
    proc.kill()
    proc.wait()
    assert usage(found) == (None, None)
