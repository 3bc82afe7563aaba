"""The process table (psutil): is a recorded worker still the process hive started, and
what does it use. A process is hive's only with the same pid, start time and markers."""

from __future__ import annotations

import os
import time

import psutil

from hive.model.workers import WorkerState

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
    same number, whoever asked before), and resident memory in MB."""
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
