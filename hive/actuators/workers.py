"""Worker processes: pick a port, spawn in its own process group with the environment
markers, signal the group, and keep the log file (rotated by size, read from the end)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hive.actuators.files import write_atomic
from hive.errors import TransientError
from hive.model.workers import WorkerState

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


def state_path(home: Path, name: str) -> Path:
    return home / "state" / "workers" / f"{name}.json"


def log_path(home: Path, name: str) -> Path:
    return home / "logs" / "workers" / f"{name}.log"


def write_state(home: Path, state: WorkerState) -> None:
    path = state_path(home, state.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not fsynced: a state record matters while processes live, and none survives a reboot.
    write_atomic(path, state.model_dump_json(indent=2).encode(), durable=False)


def remove_state(home: Path, name: str) -> None:
    state_path(home, name).unlink(missing_ok=True)


def read_states(home: Path) -> tuple[list[WorkerState], list[tuple[Path, str]]]:
    """Every state record, and the unreadable ones with why."""
    directory = home / "state" / "workers"
    states, bad = [], []
    try:
        paths = sorted(directory.glob("*.json"))
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
