"""`hive stop-workers`: stop the workers a hive left running in its home (it exited
without --stop-workers-on-exit, or died), as its own stop does: SIGTERM to each worker's
process group, the runtime's grace, then SIGKILL. A process is signalled only when it is
provably that worker (pid, start time and hive's markers, as adoption checks)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from hive.actuators import workers as proc
from hive.model.workers import WorkerState
from hive.observers.processes import find_worker, group_leftovers
from hive.observers.runtimes import RuntimeCatalog

#: Seconds after SIGKILL before a process still there is reported as stuck.
KILL_WAIT = 5.0


@dataclass(frozen=True)
class Found:
    state: WorkerState
    process: psutil.Process
    grace: float


def instance_id(home: Path) -> str | None:
    """The home's HIVE_INSTANCE marker, or None when no hive ever ran workers there."""
    try:
        return (home / "state" / "instance-id").read_text().strip() or None
    except FileNotFoundError:
        return None


def live_workers(home: Path) -> tuple[list[Found], list[tuple[WorkerState, str]], list[str]]:
    """Read only: the workers of `home` whose process is still there (the same pid, start
    time and markers, as adoption checks), the stale state records with why, and the
    unreadable ones."""
    states, bad = proc.read_states(home)
    problems = [f"ignoring {path}: {why}" for path, why in bad]
    instance = instance_id(home)
    if instance is None:
        return [], [], problems
    runtimes = RuntimeCatalog(home)
    found, stale = [], []
    for state in states:
        process, why = find_worker(state, instance=instance)
        if process is None:
            stale.append((state, why))
            continue
        entry = runtimes.get(state.runtime)
        found.append(Found(state, process, entry.grace_seconds if entry else 10.0))
    return found, stale, problems


def stop_left_running(home: Path, *, say: Callable[[str], None]) -> int:
    """Stop every worker of `home` still running; stale state records are removed (as
    adoption removes them). The number stopped."""
    found, stale, problems = live_workers(home)
    for problem in problems:
        say(problem)
    for state, why in stale:
        say(f"worker {state.name}: {why}; its state record is removed")
        proc.remove_state(home, state.name)
    for f in found:
        s = f.state
        say(
            f"stopping worker {s.name} (PID {s.pid}, port {s.port}): SIGTERM to its process "
            f"group, SIGKILL after {f.grace:g}s"
        )
        proc.signal_group(s.pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(
        [f.process for f in found], timeout=max((f.grace for f in found), default=0)
    )
    for f in found:
        if f.process in alive:
            say(f"worker {f.state.name} (PID {f.state.pid}) ignored SIGTERM: sent SIGKILL")
            proc.signal_group(f.state.pid, signal.SIGKILL)
    _, stuck = psutil.wait_procs(alive, timeout=KILL_WAIT)
    stopped = 0
    for f in found:
        s = f.state
        if f.process in stuck:
            say(f"worker {s.name} (PID {s.pid}) is still there {KILL_WAIT:g}s after SIGKILL")
            continue
        for leftover in group_leftovers(pgid=s.pid, worker_id=s.worker_id):
            with contextlib.suppress(psutil.Error):
                leftover.kill()  # what its children left in its group
        proc.remove_state(home, s.name)
        say(f"stopped worker {s.name} (PID {s.pid}); port {s.port} is free")
        stopped += 1
    return stopped
