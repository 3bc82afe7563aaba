"""The process table (psutil) and the workers' state records: is a recorded worker still
the process hive started, and what does it use. A process is hive's only with the same pid,
start time and markers."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from pydantic import ValidationError

from hive.model.runtimes import RuntimeEntry
from hive.model.workers import WorkerState
from hive.observers.runtimes import RuntimeCatalog

#: Seconds between SIGTERM and SIGKILL for a worker whose runtime entry is not there any
#: more: the entries' own default.
DEFAULT_GRACE: float = RuntimeEntry.model_fields["grace_seconds"].default

#: psutil's create_time is rounded; the same process reads back within this many seconds.
_CREATE_TIME_SLACK = 0.05


def find_worker(state: WorkerState, *, instance: str) -> tuple[psutil.Process | None, str]:
    """The live process a state record describes, or None and why not."""
    try:
        proc = psutil.Process(state.pid)
        if abs(proc.create_time() - state.create_time) > _CREATE_TIME_SLACK:
            return None, f"pid {state.pid} now belongs to another process"
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None, f"pid {state.pid} has exited"
        env = proc.environ()
    except psutil.NoSuchProcess:
        return None, f"pid {state.pid} is gone"
    except psutil.AccessDenied:
        return None, f"pid {state.pid} cannot be inspected (access denied); not touching it"
    if env.get("HIVE_INSTANCE") != instance or env.get("HIVE_WORKER_ID") != state.worker_id:
        return None, f"pid {state.pid} does not carry this hive's markers"
    return proc, "found"


def is_same(proc: psutil.Process) -> bool:
    """Still the very process (psutil compares the start time too)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def usage(proc: psutil.Process) -> tuple[float | None, int | None]:
    """CPU percent over the process's life, as `ps` shows it (so every reader sees the
    same number, whoever asked before), and resident memory in MiB."""
    try:
        with proc.oneshot():
            times = proc.cpu_times()
            alive = max(time.time() - proc.create_time(), 1e-3)
            cpu = round(100.0 * (times.user + times.system) / alive, 1)
            return cpu, proc.memory_info().rss // (1024 * 1024)
    except psutil.Error:
        return None, None


def group_leftovers(*, pgid: int, worker_id: str) -> list[psutil.Process]:
    """Processes still in a worker's process group that carry its HIVE_WORKER_ID (children
    inherit it): what is left of a worker after its main process ended. Matching the marker
    too means a reused process group id never points hive at a stranger."""
    try:
        os.killpg(pgid, 0)  # is anyone left in the group? (the usual answer: no)
    except (ProcessLookupError, PermissionError):
        return []
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) != pgid:
                continue
            if proc.environ().get("HIVE_WORKER_ID") == worker_id:
                found.append(proc)
        except (OSError, psutil.Error):
            continue
    return found


@dataclass(frozen=True, eq=False)
class LiveWorker:
    """A worker whose process is still there, and its runtime's grace (SIGTERM to SIGKILL).
    Compared by identity."""

    state: WorkerState
    process: psutil.Process
    grace: float = DEFAULT_GRACE


def state_dir(home: Path) -> Path:
    """Where the workers' state records are (`<name>.json` each)."""
    return home / "state" / "workers"


def read_states(home: Path) -> tuple[list[WorkerState], list[tuple[Path, str]]]:
    """Every state record, and the unreadable ones with why."""
    states, bad = [], []
    try:
        paths = sorted(state_dir(home).glob("*.json"))
    except OSError:
        return [], []
    for path in paths:
        try:
            states.append(WorkerState.model_validate_json(path.read_bytes()))
        except ValidationError as exc:
            bad.append((path, "; ".join(_error_text(e) for e in exc.errors()[:5])))
        except (OSError, ValueError) as exc:
            bad.append((path, str(exc)))
    return states, bad


def _error_text(error: Any) -> str:
    where = ".".join(str(p) for p in error.get("loc", ())) or "(record)"
    return f"{where}: {error.get('msg', 'invalid')}"


def instance_id(home: Path) -> str | None:
    """The home's HIVE_INSTANCE marker, or None when no hive ever ran workers there."""
    try:
        return (home / "state" / "instance-id").read_text().strip() or None
    except FileNotFoundError:
        return None


def live_workers(
    home: Path,
) -> tuple[list[LiveWorker], list[tuple[WorkerState, str]], list[str]]:
    """Read only: the workers of `home` whose process is still there (the same pid, start
    time and markers, as adoption checks), the stale state records with why, and the
    unreadable ones."""
    states, bad = read_states(home)
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
        found.append(LiveWorker(state, process, entry.grace_seconds if entry else DEFAULT_GRACE))
    return found, stale, problems
