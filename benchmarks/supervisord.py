"""The peer of B5 to B7: supervisord (4.3), its programs the same command lines hive ran,
`startsecs=0` (RUNNING once spawned: it makes no claim about health), driven over XML-RPC
as supervisorctl drives it, while a client polls every worker's /health as hive's probe
does; the start measured until every worker answered, the stop until every process is
gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
import threading
import time
import xmlrpc.client
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from benchmarks import PYTHON, cpu_seconds, free_port
from benchmarks.fleet import (
    HEALTH_START_INTERVAL,
    PHASE_TIMEOUT,
    Start,
    Stop,
    alive,
    check_listening,
    wait_gone,
    workers_cpu,
    workers_rss_mb,
)


# -- health, as a client polls it --------------------------------------------------------
async def _health_times(ports: Sequence[int], t0: float, within: float) -> list[float]:
    """Seconds from `t0` until each port answers GET /health with 200, each polled every
    0.25 s as hive polls a starting worker (aiohttp, no connection limit, as hive)."""
    deadline = t0 + within
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(port: int) -> float:
            url = f"http://127.0.0.1:{port}/health"
            while time.monotonic() < deadline:
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                        await r.read()
                        if r.status == 200:
                            return time.monotonic() - t0
                await asyncio.sleep(HEALTH_START_INTERVAL)
            raise RuntimeError(f"B5: {url} did not answer within {within:.0f}s")

        return list(await asyncio.gather(*(one(p) for p in ports)))


# -- the peer: supervisord -----------------------------------------------------------------
class Supervisord:
    """One supervisord (`-n`, its own config) with one program per command line, none
    started (`autostart=false`), driven over XML-RPC as supervisorctl drives it."""

    def __init__(
        self, root: Path, label: str, argvs: Sequence[Sequence[str]], *, startsecs: int = 0
    ) -> None:
        self.label = label
        self.dir = root / label
        self.dir.mkdir()
        self.rpc_port = free_port()
        self.url = f"http://127.0.0.1:{self.rpc_port}/RPC2"
        self.conf = self.dir / "supervisord.conf"
        self.log_file = self.dir / "supervisord.log"
        self.count = len(argvs)
        lines = [
            "[unix_http_server]",
            f"file={self.dir / 'supervisor.sock'}",
            "[inet_http_server]",
            f"port=127.0.0.1:{self.rpc_port}",
            "[supervisord]",
            f"logfile={self.log_file}",
            f"pidfile={self.dir / 'supervisord.pid'}",
            f"childlogdir={self.dir}",
            "nodaemon=true",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "[supervisorctl]",
            f"serverurl=unix://{self.dir / 'supervisor.sock'}",
        ]
        for i, argv in enumerate(argvs, 1):
            lines += [
                f"[program:w-{i:03d}]",
                f"command={shlex.join(argv)}",
                "autostart=false",
                "redirect_stderr=true",
                f"stdout_logfile={self.dir / f'w-{i:03d}.log'}",
            ]
            lines.append(f"startsecs={startsecs}")
        self.conf.write_text("\n".join(lines) + "\n")

    def argv(self) -> list[str]:
        return [PYTHON, "-m", "supervisor.supervisord", "-n", "-c", str(self.conf)]

    def proxy(self) -> Any:
        return xmlrpc.client.ServerProxy(self.url)

    def wait_ready(self, proc: psutil.Process, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, xmlrpc.client.Error):
                if self.proxy().supervisor.getState()["statename"] == "RUNNING":
                    return
            if not alive(proc) or time.monotonic() > deadline:
                raise RuntimeError(f"B5: supervisord {self.label} not ready; see {self.dir}")
            time.sleep(0.05)


_SUPERVISORD_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO "
    r"(?:spawned: '(?P<spawned>[^']+)'|success: (?P<running>\S+) entered RUNNING)"
)


def supervisord_times(log_file: Path, since: float) -> tuple[list[float], list[float]]:
    """From supervisord's own log (its wall clock, in ms): seconds after `since` (epoch) of
    each `spawned:` and each `success: ... entered RUNNING` line."""
    spawned: list[float] = []
    running: list[float] = []
    for line in log_file.read_text().splitlines():
        m = _SUPERVISORD_LINE.match(line)
        if m is None:
            continue
        at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() - since
        if at < -0.001:
            continue
        (spawned if m.group("spawned") else running).append(at)
    return spawned, running


def supervisord_start(sup: Supervisord, proc: psutil.Process, ports: Sequence[int]) -> Start:
    """`supervisorctl start all` is `startAllProcesses(wait=True)`; it runs in a thread
    while a client polls every worker's /health on hive's 0.25 s interval (the poller's
    CPU is this process's, as the floor's probe is). Ready: every worker answered. When
    each process was spawned and became RUNNING comes from supervisord's log, so that
    nothing polls supervisord."""
    returned: list[float] = []
    failed: list[BaseException] = []

    def start_all() -> None:
        try:
            result = sup.proxy().supervisor.startAllProcesses(True)
            bad = [r for r in result if r.get("status") != 80]  # 80: SUCCESS
            if bad:
                raise RuntimeError(f"B5: supervisord could not start {bad[:3]}")
            returned.append(time.monotonic())
        except BaseException as exc:
            failed.append(exc)

    cpu0 = cpu_seconds(proc)
    wall0 = time.time()
    t0 = time.monotonic()
    starter = threading.Thread(target=start_all, name="startAllProcesses")
    starter.start()
    health = asyncio.run(_health_times(ports, t0, PHASE_TIMEOUT))
    starter.join(PHASE_TIMEOUT)
    if failed:
        raise failed[0]
    if not returned:
        raise RuntimeError(f"B5: supervisord {sup.label}: start all did not return")
    cpu = cpu_seconds(proc) - cpu0
    infos = sup.proxy().supervisor.getAllProcessInfo()
    if sum(i["statename"] == "RUNNING" for i in infos) != sup.count:
        raise RuntimeError(f"B5: supervisord {sup.label}: not every program is RUNNING")
    pids = [int(i["pid"]) for i in infos]
    check_listening(pids, ports, f"supervisord {sup.label}")
    spawned, running = supervisord_times(sup.log_file, wall0)
    if len(spawned) != sup.count or len(running) != sup.count:
        raise RuntimeError(
            f"B5: supervisord {sup.label} logged {len(spawned)} spawns, {len(running)} RUNNING"
        )
    extra = {
        "returned": returned[0] - t0,
        "first_spawn": min(spawned),
        "last_spawn": max(spawned),
        "running_all": max(running),
        "workers_cpu": workers_cpu(pids),
        "workers_rss_mb": workers_rss_mb(pids),
    }
    return Start(all_ready=max(health), first_ready=min(health), cpu=cpu, pids=pids, extra=extra)


def supervisord_stop(sup: Supervisord, start: Start, proc: psutil.Process) -> Stop:
    """`supervisorctl stop all` is `stopAllProcesses(wait=True)`."""
    procs = [psutil.Process(pid) for pid in start.pids]
    cpu0 = cpu_seconds(proc)
    t0 = time.monotonic()
    box: list[float] = []
    failed: list[BaseException] = []

    def stop_all() -> None:
        try:
            sup.proxy().supervisor.stopAllProcesses(True)
            box.append(time.monotonic() - t0)
        except BaseException as exc:
            failed.append(exc)

    stopper = threading.Thread(target=stop_all, name="stopAllProcesses")
    stopper.start()
    gone = wait_gone(procs, t0, timeout=PHASE_TIMEOUT)
    stopper.join(PHASE_TIMEOUT)
    if failed:
        raise failed[0]
    return Stop(gone, box[0], cpu_seconds(proc) - cpu0)
