"""The workers of B5 to B7 (start, stop, idle): their records, their ports, the phases'
measurements, and the processes a run leaves behind. Shared by hive's side, the peer
(`benchmarks.supervisord`) and the floor (`benchmarks.floor`).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import signal
import socket
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from benchmarks import Row, cpu_seconds, get_json

#: Every process of a run (hive, supervisord, each worker) carries MARK=<run token> in its
#: environment, so that the sweep at the end finds whatever survived.
MARK = "HIVE_BENCH_B5_RUN"
PHASE_TIMEOUT = 180.0
#: hive's own default: a worker that is starting is probed every 0.25 s.
HEALTH_START_INTERVAL = 0.25
#: hive's default: a Running worker is probed every 5 s.
HEALTH_INTERVAL = 5.0
#: Pause between phases, so that one phase's exiting processes do not load the next.
SETTLE = 2.0
WORKERS_FILE = "workers.yaml"


# -- inputs ------------------------------------------------------------------------------
def worker_names(n: int) -> list[str]:
    return [f"w-{i:03d}" for i in range(1, n + 1)]


#: The workers' runtimes: the scripted test worker (a stdlib HTTP server, no inference)
#: and the built-in llama-cpp runtime (llama.cpp's server through xllamacpp), both on the
#: tiny model.
SCRIPTED, LLAMA = "scripted", "llama-cpp"


def workers_manifest(names: Sequence[str], runtime: str = SCRIPTED) -> str:
    args = "  args: {mode: serve}\n" if runtime == SCRIPTED else ""
    return "---\n".join(
        "apiVersion: hive/v1\nkind: Worker\n"
        f"metadata:\n  name: {name}\n"
        f"spec:\n  model: tiny\n  runtime: {runtime}\n  device: CPU-0\n{args}"
        for name in names
    )


def free_port_range(count: int) -> int:
    """The first port of `count` consecutive ports that can all be bound now, below the
    kernel's ephemeral range (so that no outgoing connection takes one meanwhile). The
    search starts at a random place: two benchmarks run side by side (other checkouts on
    a shared machine) would otherwise pick the same free range at once."""
    starts = list(range(10000, 32000 - count, 500))
    offset = random.randrange(len(starts))
    for first in starts[offset:] + starts[:offset]:
        ok = True
        for port in range(first, first + count):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return first
    raise RuntimeError(f"B5: no {count} consecutive free ports between 20000 and 32000")


# -- processes ---------------------------------------------------------------------------
def alive(p: psutil.Process) -> bool:
    """Still running: not gone, not a zombie (an exited child its parent has not reaped)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def check_listening(pids: Sequence[int], ports: Sequence[int], who: str) -> None:
    """Every port is listened on by one of `pids`: a health answer from a port that a
    process of someone else holds (another benchmark on a shared machine) would make a
    start look instant. Raises, naming the ports, when it is not so."""
    held: set[int] = set()
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            held |= {
                c.laddr.port
                for c in psutil.Process(pid).net_connections(kind="tcp")
                if c.status == psutil.CONN_LISTEN
            }
    foreign = sorted(set(ports) - held)
    if foreign:
        raise RuntimeError(f"B5: {who}: ports {foreign[:5]} are not its workers' (taken?)")


def workers_cpu(pids: Sequence[int]) -> float:
    """CPU seconds the workers of one start have used, together."""
    return sum(cpu_seconds(psutil.Process(p)) for p in pids)


def workers_rss_mb(pids: Sequence[int]) -> float:
    """The workers' resident memory, per worker (MB, mean)."""
    return sum(psutil.Process(p).memory_info().rss for p in pids) / max(1, len(pids)) / 1e6


def wait_gone(procs: Sequence[psutil.Process], t0: float, *, timeout: float) -> float:
    """Seconds from `t0` until none of `procs` runs (exited: gone, or a zombie its parent
    has not reaped yet). Each process's pidfd becomes readable when it exits, so the wait
    costs no CPU: polling 100 processes every 10 ms, as this did before, took half a core
    during the very wave it timed."""
    fds: set[int] = set()
    poller = select.poll()
    try:
        for p in procs:
            try:
                fd = os.pidfd_open(p.pid)
            except ProcessLookupError:
                continue
            if not p.is_running():  # gone before the pidfd, and its pid taken since
                os.close(fd)
                continue
            fds.add(fd)
            poller.register(fd, select.POLLIN)
        deadline = time.monotonic() + timeout
        while fds:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"B6: {len(fds)} process(es) still running after {timeout:.0f}s")
            for fd, _ in poller.poll(left * 1000):
                poller.unregister(fd)
                os.close(fd)
                fds.discard(fd)
        return time.monotonic() - t0
    finally:
        for fd in fds:
            os.close(fd)


def sweep(token: str, *, mark: str = MARK) -> list[int]:
    """Kill (SIGKILL, the whole group) every process of this run (`mark`=`token` in its
    environment) that is still there."""
    found = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if p.pid != os.getpid() and p.environ().get(mark) == token:
                found.append(p)
    for p in found:
        with contextlib.suppress(OSError):
            if os.getpgid(p.pid) == p.pid:
                os.killpg(p.pid, signal.SIGKILL)
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(found, timeout=5)
    return [p.pid for p in found]


# -- measurements --------------------------------------------------------------------------
@dataclass
class Start:
    all_ready: float  # s from the trigger to the last worker ready (hive: health answered)
    first_ready: float
    cpu: float  # CPU seconds of hive (or supervisord) over the phase
    pids: list[int]
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class Stop:
    gone: float  # s from the trigger until no worker process runs
    done: float  # s until the manager says so (hive: /v1/workers empty; supervisord: RPC)
    cpu: float


@dataclass
class Results:
    n: int
    rounds: int
    window: float
    runtime: str = SCRIPTED
    hive_start: list[Start] = field(default_factory=list)
    hive_stop: list[Stop] = field(default_factory=list)
    sup_start: list[Start] = field(default_factory=list)
    sup_stop: list[Stop] = field(default_factory=list)
    bare_start: list[Start] = field(default_factory=list)
    bare_stop: list[Stop] = field(default_factory=list)
    idle: dict[str, dict[str, float]] = field(default_factory=dict)
    hive_rss_no_workers: float = 0.0


def hive_argvs(home: Path, names: Sequence[str]) -> list[list[str]]:
    """The command lines hive ran, from its state records."""
    out = []
    for name in names:
        state = json.loads((home / "state" / "workers" / f"{name}.json").read_text())
        out.append(list(state["argv"]))
    return out


def with_port(argv: Sequence[str], port: int) -> list[str]:
    out = list(argv)
    out[out.index("--port") + 1] = str(port)
    return out


def wait_model_available(url: str, name: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(OSError):
            view = get_json(f"{url}/v1/models/{name}")
            if (view.get("status") or {}).get("phase") == "Available":
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"B5: model {name} not Available after 60 s")
        time.sleep(0.05)


def per_round(
    bench: str, ratios: Sequence[float], *, what: str, won: str, goal: str = ""
) -> list[Row]:
    """Rows of the ratios peer/hive within each round (its phases ran next to each other:
    the least noisy comparison): their median (with the goal), range, and rounds won."""
    return [
        Row(bench, f"{what}: per round, peer's time / hive's, median of {len(ratios)}",
            statistics.median(ratios), "x", goal=goal, how="computed"),
        Row(bench, f"{what}: per round, lowest and highest", min(ratios), "x", "highest",
            max(ratios), how="computed"),
        Row(bench, f"{what}: {won} (of {len(ratios)})", sum(r >= 1.0 for r in ratios),
            "rounds"),
    ]  # fmt: skip
