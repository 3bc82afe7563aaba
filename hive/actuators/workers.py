"""Worker processes: pick a port, spawn in its own process group with the environment
markers, signal and stop the group, and keep the log file (rotated by size, read from the
end)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import psutil

from hive.actuators.files import write_atomic
from hive.errors import TransientError
from hive.model.workers import WorkerState
from hive.observers.processes import LiveWorker, group_leftovers, is_same, state_dir
from hive.platform import ExitWatch, wait_any

#: Seconds after SIGKILL before a process still there is reported as stuck.
KILL_WAIT = 5.0
#: Variables of hive's own that a worker must not inherit (the API token above all).
_PRIVATE_ENV = ("HIVE_TOKEN",)


class PortUnavailable(TransientError):
    reason = "PortInUse"


class SpawnFailed(TransientError):
    reason = "SpawnFailed"


def port_free(host: str, port: int) -> bool:
    """True when `port` can be bound on `host` now (as a server would: SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def allocate_port(
    *, host: str, wanted: int | None, ports: range, taken: dict[int, str], name: str
) -> int:
    """`wanted`, or the first free port of `ports`. `taken` (port → worker) holds the ports
    of hive's own workers, spawned or about to be: with the bind check this leaves no race
    between two spawns (they run on one event loop, one after the other)."""
    if wanted is not None:
        owner = taken.get(wanted)
        if owner is not None and owner != name:
            raise PortUnavailable(f"port {wanted} is already used by worker {owner}")
        if owner is None and not port_free(host, wanted):
            raise PortUnavailable(
                f"port {wanted} on {host} is in use by another process (choose another "
                "spec.port, or leave it out to get a free one)"
            )
        return wanted
    for port in ports:
        if port not in taken and port_free(host, port):
            return port
    raise PortUnavailable(
        f"no free port in {ports.start}-{ports.stop - 1} on {host} "
        f"({sum(1 for p in ports if p in taken)} used by hive's workers, the rest by others)"
    )


def worker_env(*, base: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k not in _PRIVATE_ENV}
    env.update(extra)
    return env


def spawn(
    *, argv: list[str], env: dict[str, str], log_path: Path, banner: str
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own process group, stdout and stderr appended to `log_path`.
    The process does not depend on hive: it outlives hive's exit.

    A process group, not a new session: Linux schedules each session as one group
    (autogroup), so 100 workers in 100 sessions would weigh 100 times everything else on
    the machine, hive included, and starve the loop that starts and stops them (B5, B6).
    In hive's session, but in a group of its own, a worker still gets no Ctrl-C or
    terminal signal meant for hive's foreground group."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"--- hive: {banner} ---\n".encode())
        log.flush()
        try:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                process_group=0,
                close_fds=True,
            )
        except OSError as exc:
            raise SpawnFailed(f"cannot run {argv[0]}: {exc.strerror or exc}") from None


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send `sig` to a process group; False when no member is left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def stop_group(
    workers: Sequence[LiveWorker],
    *,
    home: Path,
    signal_term: bool = True,
    on_kill: Callable[[LiveWorker], object] | None = None,
    kill_wait: float = KILL_WAIT,
    portable: bool = False,
) -> list[LiveWorker]:
    """Stop workers as hive does, blocking (run it in a thread from the event loop):
    SIGTERM to each one's process group (unless `signal_term` is False: the caller sent
    it); each one that is still there when its own `grace` runs out gets SIGKILL to its
    group (`on_kill` is told, from this thread) and up to `kill_wait` more to go; then what
    is left of each one gone is released (`release_group`). Waits on each one's end as
    `hive.platform.ExitWatch` sees it (a pidfd on Linux, psutil when `portable`): a child
    of the caller is not reaped here, so its exit status stays the caller's to read.
    Returns the workers still there `kill_wait` after their SIGKILL (uninterruptible, most
    likely)."""
    watched = _watch_exits(workers, portable=portable)
    try:
        if signal_term:
            for worker in workers:
                if is_same(worker.process):
                    signal_group(worker.state.pid, signal.SIGTERM)
        stuck = _kill_at_deadlines(watched, on_kill=on_kill, kill_wait=kill_wait)
    finally:
        for watch in watched.values():
            watch.close()
    for worker in workers:
        if worker not in stuck:
            release_group(home, worker.state)
    return stuck


def _kill_at_deadlines(
    watched: dict[LiveWorker, ExitWatch],
    *,
    on_kill: Callable[[LiveWorker], object] | None,
    kill_wait: float,
) -> list[LiveWorker]:
    """Wait for the watched workers to end, SIGKILLing each one at the end of its own
    grace (soonest first); those still there `kill_wait` after their SIGKILL."""
    start = time.monotonic()
    #: When each one is SIGKILLed if still there, then when it is given up on.
    deadline = {w: start + w.grace for w in watched}
    killed: set[LiveWorker] = set()
    stuck: list[LiveWorker] = []
    alive = dict(watched)
    while alive:
        now = time.monotonic()
        for worker in sorted(alive, key=deadline.__getitem__):
            if deadline[worker] > now:
                break
            if worker in killed:
                stuck.append(worker)
                del alive[worker]
                continue
            if is_same(worker.process):
                signal_group(worker.state.pid, signal.SIGKILL)
            killed.add(worker)
            deadline[worker] = now + kill_wait
            if on_kill is not None:
                on_kill(worker)
        if not alive:
            break
        soonest = min(deadline[w] for w in alive)
        still = set(_wait_exits(alive, timeout=max(soonest - time.monotonic(), 0.0)))
        alive = {w: fd for w, fd in alive.items() if w in still}
    return stuck


def release_group(home: Path, state: WorkerState) -> None:
    """What is left of a worker once its process is gone: what its children left running
    in its group (killed), and its state record."""
    for leftover in group_leftovers(pgid=state.pid, worker_id=state.worker_id):
        with contextlib.suppress(psutil.Error):
            leftover.kill()
    remove_state(home, state.name)


def _watch_exits(workers: Sequence[LiveWorker], *, portable: bool) -> dict[LiveWorker, ExitWatch]:
    """A watch on the end of each worker still there; opened before the process is checked
    to be the worker's, so that a pidfd cannot be another one's."""
    watched: dict[LiveWorker, ExitWatch] = {}
    for worker in workers:
        watch = ExitWatch(worker.state.pid, portable=portable)
        if not watch.ended() and is_same(worker.process):
            watched[worker] = watch
        else:
            watch.close()  # gone (and reaped, or not hive's worker any more)
    return watched


def _wait_exits(watched: dict[LiveWorker, ExitWatch], *, timeout: float) -> list[LiveWorker]:
    """Up to `timeout` seconds for every watched process to end; those still there."""
    deadline = time.monotonic() + timeout
    alive = dict(watched)
    while alive:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        wait_any(list(alive.values()), remaining)
        alive = {w: x for w, x in alive.items() if is_same(w.process)}
    return list(alive)


def state_path(home: Path, name: str) -> Path:
    return state_dir(home) / f"{name}.json"


def log_path(home: Path, name: str) -> Path:
    return home / "logs" / "workers" / f"{name}.log"


def write_state(home: Path, state: WorkerState) -> None:
    path = state_path(home, state.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not fsynced: a state record matters while processes live, and none survives a reboot.
    write_atomic(path, state.model_dump_json(indent=2).encode(), durable=False)


def remove_state(home: Path, name: str) -> None:
    state_path(home, name).unlink(missing_ok=True)


def rotate_log(path: Path, *, max_bytes: int, backups: int) -> bool:
    """copytruncate, as logrotate does for processes that cannot reopen their log: the
    worker keeps writing (O_APPEND) to the same file, which restarts at 0. True if rotated."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    for index in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{index}")
        with contextlib.suppress(FileNotFoundError):
            older.replace(path.with_name(f"{path.name}.{index + 1}"))
    backup = path.with_name(f"{path.name}.1")
    try:
        shutil.copyfile(path, backup)
    except OSError:
        backup.unlink(missing_ok=True)  # half a copy holds space and no whole log
        raise  # the log is left as it is
    os.truncate(path, 0)
    return True


def tail_lines(
    path: Path, count: int, *, max_bytes: int = 1 << 20, end: int | None = None
) -> list[str]:
    """The last `count` lines of a file, or of its first `end` bytes (reading at most
    `max_bytes` back from there)."""
    if count <= 0:
        return []
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            end = size if end is None else min(end, size)
            block, data = 8192, b""
            position = end
            while position > 0 and data.count(b"\n") <= count and end - position < max_bytes:
                step = min(block, position)
                position -= step
                fh.seek(position)
                data = fh.read(step) + data
    except FileNotFoundError:
        return []
    except OSError as exc:
        if exc.errno == errno.EISDIR:
            return []
        raise
    lines = data.decode("utf-8", errors="replace").splitlines()
    if position > 0 and lines:
        lines = lines[1:]  # the first line read is cut
    return lines[-count:]


def stamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")
