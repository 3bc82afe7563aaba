"""B5 to B7 workers: 100 Worker records in one file, started (B5) and stopped (B6) by the
real `hive serve`, and hive's idle cost while they run (B7). The peer is supervisord (4.3)
running the same 100 command lines. The workers are `tests/workers/scripted_worker.py`, a
stdlib HTTP server that answers /health: a test runtime, not an inference engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import select
import shlex
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
import xmlrpc.client
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from benchmarks import (
    PYTHON,
    Row,
    child,
    cpu_seconds,
    free_port,
    get_json,
    hive_serve,
    log,
    main_thread_cpu,
    make_tiny_model,
    model_manifest,
    write_atomic,
)
from hive.observers.health import HealthProbe
from testkit.scripted_runtime import install_scripted_runtime

WORKERS = 100
QUICK_WORKERS = 20
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
#: B5 again with fewer workers (full runs only), to find where its goal stops holding.
SCALE = (25, 50)
SCALE_ROUNDS = 3


# -- inputs ------------------------------------------------------------------------------
def worker_names(n: int) -> list[str]:
    return [f"w-{i:03d}" for i in range(1, n + 1)]


def workers_manifest(names: Sequence[str]) -> str:
    return "---\n".join(
        "apiVersion: hive/v1\nkind: Worker\n"
        f"metadata:\n  name: {name}\n"
        "spec:\n  model: tiny\n  runtime: scripted\n  device: CPU-0\n  args: {mode: serve}\n"
        for name in names
    )


def free_port_range(count: int) -> int:
    """The first port of `count` consecutive ports that can all be bound now, below the
    kernel's ephemeral range (so that no outgoing connection takes one meanwhile)."""
    for first in range(20000, 32000 - count, 500):
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


def workers_cpu(pids: Sequence[int]) -> float:
    """CPU seconds the workers of one start have used, together."""
    return sum(cpu_seconds(psutil.Process(p)) for p in pids)


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


def sweep(token: str) -> list[int]:
    """Kill (SIGKILL, the whole group) every process of this run that is still there."""
    found = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if p.pid != os.getpid() and p.environ().get(MARK) == token:
                found.append(p)
    for p in found:
        with contextlib.suppress(OSError):
            if os.getpgid(p.pid) == p.pid:
                os.killpg(p.pid, signal.SIGKILL)
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(found, timeout=5)
    return [p.pid for p in found]


# -- hive's event stream -----------------------------------------------------------------
@dataclass(frozen=True)
class Arrival:
    at: float  # time.monotonic() in this process, when the event arrived
    event: dict[str, Any]

    @property
    def hive_time(self) -> float:
        """The event's own timestamp (hive's wall clock), as seconds since the epoch."""
        return datetime.fromisoformat(self.event["time"]).timestamp()


class EventStream:
    """GET /v1/events, read in a thread of its own, every event kept with its arrival.

    `pause` disconnects, so that hive serializes nothing for this client (B6: supervisord
    has no client to feed while its workers exit either); `resume` reconnects with
    `Last-Event-ID`, and hive replays what it narrated meanwhile from its buffer."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._cond = threading.Condition()
        self._events: list[Arrival] = []
        self._connected = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._session: aiohttp.ClientSession | None = None
        self._reader: asyncio.Task[None] | None = None
        self._last_id: str | None = None
        self._thread = threading.Thread(target=self._run, name="sse", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._wait_connected()

    def _wait_connected(self) -> None:
        if not self._connected.wait(30):
            raise RuntimeError(f"B5: no answer from {self._url}/v1/events: {self._error!r}")

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    def pause(self) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._stop_reading(), self._loop).result(10)

    def resume(self) -> None:
        assert self._loop is not None
        self._connected.clear()
        asyncio.run_coroutine_threadsafe(self._start_reading(), self._loop).result(10)
        self._wait_connected()

    def mark(self) -> int:
        with self._cond:
            return len(self._events)

    def since(self, index: int) -> list[Arrival]:
        with self._cond:
            return self._events[index:]

    def first_of_each(
        self, action: str, objects: set[str], *, since: int, timeout: float
    ) -> dict[str, Arrival]:
        """The first `action` event of each object, once every object has had one."""
        found: dict[str, Arrival] = {}
        position = since
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for arrival in self._events[position:]:
                    obj = arrival.event.get("object")
                    if arrival.event.get("action") == action and obj in objects:
                        found.setdefault(obj, arrival)
                position = len(self._events)
                if len(found) == len(objects):
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or self._error is not None:
                    raise RuntimeError(
                        f"B5: {len(found)} of {len(objects)} {action} events after "
                        f"{timeout:.0f}s ({self._error!r})"
                    )
                self._cond.wait(min(left, 1.0))

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        self._error = exc
        with self._cond:
            self._cond.notify_all()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with aiohttp.ClientSession() as session:
            self._session = session
            await self._start_reading()
            await self._stop.wait()
            await self._stop_reading()

    async def _start_reading(self) -> None:
        def done(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                self._failed(task.exception())  # type: ignore[arg-type]

        self._reader = asyncio.create_task(self._read())
        self._reader.add_done_callback(done)

    async def _stop_reading(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _read(self) -> None:
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        headers = {} if self._last_id is None else {"Last-Event-ID": self._last_id}
        url = f"{self._url}/v1/events"
        async with self._session.get(url, timeout=timeout, headers=headers) as response:
            response.raise_for_status()
            async for raw in response.content:
                now = time.monotonic()
                self._connected.set()
                if not raw.startswith(b"data: "):
                    continue
                arrival = Arrival(now, json.loads(raw[6:]))
                self._last_id = str(arrival.event["id"])
                with self._cond:
                    self._events.append(arrival)
                    self._cond.notify_all()


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
        self, root: Path, label: str, argvs: Sequence[Sequence[str]], *, startsecs: int | None
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
            if startsecs is not None:
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


def hive_start(
    *, url: str, desired: Path, events: EventStream, names: Sequence[str], proc: psutil.Process
) -> Start:
    objects = {f"Worker/{n}" for n in names}
    index = events.mark()
    text = workers_manifest(names)
    cpu0 = cpu_seconds(proc)
    wall0 = time.time()
    t0 = time.monotonic()
    write_atomic(desired / WORKERS_FILE, text)
    ready = events.first_of_each(
        "worker_spawn_complete", objects, since=index, timeout=PHASE_TIMEOUT
    )
    all_ready = max(a.at for a in ready.values()) - t0
    first_ready = min(a.at for a in ready.values()) - t0
    cpu = cpu_seconds(proc) - cpu0
    # The status the API shows follows from the next reconcile of each key.
    deadline = time.monotonic() + PHASE_TIMEOUT
    while True:
        items = get_json(f"{url}/v1/workers", timeout=30)["items"]
        if len(items) == len(names) and all(i["status"]["phase"] == "Running" for i in items):
            break
        if time.monotonic() > deadline:
            raise RuntimeError("B5: /v1/workers does not show every worker Running")
        time.sleep(0.05)
    api = time.monotonic() - t0
    pids = [int(i["observed"]["pid"]) for i in items]
    # Where the time went, from hive's own event timestamps (its wall clock).
    arrivals = events.since(index)

    def hive_times(action: str) -> list[float]:
        return [
            a.hive_time - wall0
            for a in arrivals
            if a.event.get("action") == action and a.event.get("object") in objects
        ]

    applied = hive_times("manifest_applied")
    spawns = hive_times("worker_spawn_start")
    completes = hive_times("worker_spawn_complete")
    waits = [float(a.event["data"]["seconds"]) for a in ready.values()]
    # worker_spawn_start is narrated just before Popen, worker_spawn_health_check just after
    # it returned and the state record was written.
    begun: dict[str, float] = {}
    popen: list[float] = []
    for a in arrivals:
        obj, action = a.event.get("object"), a.event.get("action")
        if obj not in objects:
            continue
        if action == "worker_spawn_start":
            begun[obj] = a.hive_time
        elif action == "worker_spawn_health_check" and obj in begun:
            popen.append(a.hive_time - begun[obj])
    extra = {
        "api_all_running": api,
        "applied": min(applied),
        "first_spawn": min(spawns),
        "last_spawn": max(spawns),
        "last_complete_hive": max(completes),
        "health_wait_p50": statistics.median(waits),
        "health_wait_max": max(waits),
        "popen_p50": statistics.median(popen),
        "workers_cpu": workers_cpu(pids),
    }
    return Start(all_ready, first_ready, cpu, pids, extra)


def hive_stop(
    *,
    url: str,
    desired: Path,
    events: EventStream,
    start: Start,
    names: Sequence[str],
    proc: psutil.Process,
) -> Stop:
    objects = {f"Worker/{n}" for n in names}
    procs = [psutil.Process(pid) for pid in start.pids]
    index = events.mark()
    # No client is fed while the workers exit (supervisord has none either); what hive
    # narrated meanwhile is read afterwards, replayed from its buffer.
    events.pause()
    cpu0 = cpu_seconds(proc)
    t0 = time.monotonic()
    os.unlink(desired / WORKERS_FILE)
    gone = wait_gone(procs, t0, timeout=PHASE_TIMEOUT)
    events.resume()
    events.first_of_each("worker_proc_del_ok", objects, since=index, timeout=PHASE_TIMEOUT)
    deadline = time.monotonic() + PHASE_TIMEOUT
    while get_json(f"{url}/v1/workers", timeout=30)["items"]:
        if time.monotonic() > deadline:
            raise RuntimeError("B6: /v1/workers still lists workers")
        time.sleep(0.01)
    done = time.monotonic() - t0
    return Stop(gone, done, cpu_seconds(proc) - cpu0)


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


def supervisord_start(
    sup: Supervisord, proc: psutil.Process, ports: Sequence[int], *, poll: bool
) -> Start:
    """`supervisorctl start all` is `startAllProcesses(wait=True)`. With `poll`, it runs in
    a thread while a client polls every worker's /health as hive does, which loads the
    machine (about 0.6 CPU-s over a start); without, nothing else runs. When each process
    was spawned and became RUNNING comes from supervisord's log, so that nothing polls
    supervisord."""
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
    health: list[float] = []
    if poll:
        starter = threading.Thread(target=start_all, name="startAllProcesses")
        starter.start()
        health = asyncio.run(_health_times(ports, t0, PHASE_TIMEOUT))
        starter.join(PHASE_TIMEOUT)
    else:
        start_all()
    if failed:
        raise failed[0]
    if not returned:
        raise RuntimeError(f"B5: supervisord {sup.label}: start all did not return")
    cpu = cpu_seconds(proc) - cpu0
    infos = sup.proxy().supervisor.getAllProcessInfo()
    if sum(i["statename"] == "RUNNING" for i in infos) != sup.count:
        raise RuntimeError(f"B5: supervisord {sup.label}: not every program is RUNNING")
    pids = [int(i["pid"]) for i in infos]
    spawned, running = supervisord_times(sup.log_file, wall0)
    if len(spawned) != sup.count or len(running) != sup.count:
        raise RuntimeError(
            f"B5: supervisord {sup.label} logged {len(spawned)} spawns, {len(running)} RUNNING"
        )
    extra = {
        "returned": returned[0] - t0,
        "first_spawn": min(spawned),
        "last_spawn": max(spawned),
        "workers_cpu": workers_cpu(pids),
    }
    if health:
        extra |= {"health_all": max(health), "health_first": min(health)}
    return Start(all_ready=max(running), first_ready=min(running), cpu=cpu, pids=pids, extra=extra)


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


# -- the floor: a bare spawner that waits for health ------------------------------------------
class Bare:
    """A reference, not a peer: the least a manager that waits for health has to do.
    `Popen` each command line in turn (in a thread, its own process group, output to a
    file), and probe each spawned worker with hive's own `HealthProbe` on hive's 0.25 s
    grid until every one answers; no state record, no event, no status, no API. Its stop:
    SIGTERM to each group, then wait. It runs in this process, whose CPU is its CPU."""

    def __init__(self, root: Path, argvs: Sequence[Sequence[str]], env: dict[str, str]) -> None:
        self.dir = root / "bare"
        self.dir.mkdir()
        self.argvs = [list(a) for a in argvs]
        self.env = {**os.environ, **env}
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> Start:
        me = psutil.Process()
        cpu0 = cpu_seconds(me)
        t0 = time.monotonic()
        spawned: list[float] = []
        ready = asyncio.run(self._start(t0, spawned))
        cpu = cpu_seconds(me) - cpu0
        pids = [p.pid for p in self.procs]
        return Start(
            all_ready=max(ready),
            first_ready=min(ready),
            cpu=cpu,
            pids=pids,
            extra={
                "first_spawn": min(spawned),
                "last_spawn": max(spawned),
                "workers_cpu": workers_cpu(pids),
            },
        )

    async def _start(self, t0: float, spawned: list[float]) -> list[float]:
        def spawn_all() -> None:
            for i, argv in enumerate(self.argvs):
                with open(self.dir / f"w-{i:03d}.log", "ab") as out:
                    self.procs.append(
                        subprocess.Popen(
                            argv,
                            stdout=out,
                            stderr=subprocess.STDOUT,
                            env=self.env,
                            process_group=0,
                        )
                    )
                spawned.append(time.monotonic() - t0)

        loop = asyncio.get_running_loop()
        spawner = asyncio.ensure_future(asyncio.to_thread(spawn_all))
        probes: list[HealthProbe] = []
        ready: dict[int, float] = {}
        deadline = t0 + PHASE_TIMEOUT
        while len(ready) < len(self.argvs):
            if spawner.done():
                spawner.result()  # a failed Popen ends the phase
            for argv in self.argvs[len(probes) : len(self.procs)]:
                port = int(argv[argv.index("--port") + 1])
                probes.append(HealthProbe(host="127.0.0.1", port=port, path="/health"))
            waiting = [i for i in range(len(probes)) if i not in ready]
            answers = await asyncio.gather(*(probes[i].check(limit=2.0) for i in waiting))
            now = time.monotonic() - t0
            ready.update((i, now) for i, error in zip(waiting, answers, strict=True) if not error)
            if len(ready) == len(self.argvs):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"B5: bare: {len(ready)} of {len(self.argvs)} answered")
            clock = loop.time()
            await asyncio.sleep(HEALTH_START_INTERVAL - clock % HEALTH_START_INTERVAL)
        await spawner
        return list(ready.values())

    def stop(self) -> Stop:
        me = psutil.Process()
        procs = [psutil.Process(p.pid) for p in self.procs]
        cpu0 = cpu_seconds(me)
        t0 = time.monotonic()
        for p in self.procs:
            os.killpg(p.pid, signal.SIGTERM)
        gone = wait_gone(procs, t0, timeout=PHASE_TIMEOUT)
        for p in self.procs:
            p.wait()
        done = time.monotonic() - t0
        self.procs = []
        return Stop(gone, done, cpu_seconds(me) - cpu0)


def idle(
    proc: psutil.Process, workers: Sequence[psutil.Process], window: float
) -> dict[str, float]:
    """CPU (% of one core) and RSS of `proc` over `window` seconds; the workers' CPU too."""
    cpu0, main0 = cpu_seconds(proc), main_thread_cpu(proc)
    w0 = sum(cpu_seconds(w) for w in workers)
    t0 = time.monotonic()
    peak = 0
    while (left := t0 + window - time.monotonic()) > 0:
        time.sleep(min(1.0, left))
        peak = max(peak, proc.memory_info().rss)
    elapsed = time.monotonic() - t0
    cpu = cpu_seconds(proc) - cpu0
    return {
        "cpu_pct": 100.0 * cpu / elapsed,
        "main_cpu_pct": 100.0 * (main_thread_cpu(proc) - main0) / elapsed,
        "workers_cpu_pct": 100.0 * (sum(cpu_seconds(w) for w in workers) - w0) / elapsed,
        "rss_mb": proc.memory_info().rss / 1e6,
        "peak_rss_mb": peak / 1e6,
    }


# -- the run ---------------------------------------------------------------------------------
@dataclass
class Results:
    n: int
    rounds: int
    window: float
    hive_start: list[Start] = field(default_factory=list)
    hive_stop: list[Stop] = field(default_factory=list)
    sup_start: dict[str, list[Start]] = field(default_factory=dict)
    sup_stop: dict[str, list[Stop]] = field(default_factory=dict)
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


def _log_start(who: str, s: Start) -> None:
    extra = " ".join(f"{k} {v:.3f}" for k, v in s.extra.items())
    log(
        f"B5 {who:<5} start: all ready {s.all_ready:6.3f} s, first {s.first_ready:.3f} s, "
        f"cpu {s.cpu:.2f} s; {extra}"
    )


def _log_stop(who: str, s: Stop) -> None:
    log(f"B6 {who:<5} stop: all gone {s.gone:6.3f} s, done {s.done:.3f} s, cpu {s.cpu:.2f} s")


def measure(
    root: Path, *, n: int, rounds: int, window: float | None, env: dict[str, str]
) -> Results:
    """`rounds` of the four phases, in turn; B7's idle windows in the first (no window: none)."""
    desired, home, logs = root / "desired", root / "home", root / "logs"
    for d in (desired, home, logs):
        d.mkdir(parents=True)
    model = make_tiny_model(root / "tiny.gguf")
    install_scripted_runtime(home)
    write_atomic(desired / "models.yaml", model_manifest("tiny", model))
    first = free_port_range(5 * n)
    names = worker_names(n)
    args = ["--stop-workers-on-exit", "--worker-ports", f"{first}-{first + 2 * n - 1}"]
    res = Results(n=n, rounds=rounds, window=window or 0.0)
    with contextlib.ExitStack() as stack:
        hive_proc, url = stack.enter_context(
            hive_serve(desired=desired, home=home, log_file=logs / "hive.log", env=env, args=args)
        )
        wait_model_available(url, "tiny")
        events = EventStream(url)
        events.start()
        stack.callback(events.close)
        hp = psutil.Process(hive_proc.pid)
        time.sleep(SETTLE)
        res.hive_rss_no_workers = hp.memory_info().rss / 1e6
        sups: dict[str, tuple[Supervisord, psutil.Process, list[int]]] = {}
        bare: Bare | None = None
        for r in range(rounds):
            order = ["hive", "s1", "s0", "bare"]
            order = order[r % 4 :] + order[: r % 4]
            for who in order:
                if who == "hive":
                    start = hive_start(
                        url=url, desired=desired, events=events, names=names, proc=hp
                    )
                    _log_start(who, start)
                    res.hive_start.append(start)
                    if bare is None:
                        argvs = hive_argvs(home, names)
                        for label, startsecs, base in (("s1", None, 2 * n), ("s0", 0, 3 * n)):
                            ports = list(range(first + base, first + base + n))
                            sup = Supervisord(
                                root,
                                label,
                                [with_port(a, p) for a, p in zip(argvs, ports, strict=True)],
                                startsecs=startsecs,
                            )
                            sp = stack.enter_context(
                                child(sup.argv(), log_file=logs / f"{label}.log", env=env)
                            )
                            spp = psutil.Process(sp.pid)
                            sup.wait_ready(spp)
                            sups[label] = (sup, spp, ports)
                        ports = list(range(first + 4 * n, first + 5 * n))
                        bare = Bare(
                            root, [with_port(a, p) for a, p in zip(argvs, ports, strict=True)], env
                        )
                    if r == 0 and window:
                        time.sleep(SETTLE)
                        log(f"B7: hive idle window of {window:.0f} s with {n} workers")
                        workers = [psutil.Process(p) for p in start.pids]
                        res.idle["hive"] = idle(hp, workers, window)
                    stop = hive_stop(
                        url=url, desired=desired, events=events, start=start, names=names, proc=hp
                    )
                    _log_stop(who, stop)
                    res.hive_stop.append(stop)
                elif who == "bare":
                    if bare is None:
                        continue  # its command lines are hive's, known after hive's first start
                    start = bare.start()
                    _log_start(who, start)
                    res.bare_start.append(start)
                    stop = bare.stop()
                    _log_stop(who, stop)
                    res.bare_stop.append(stop)
                else:
                    if who not in sups:
                        continue  # as for bare
                    sup, spp, ports = sups[who]
                    # startsecs=1, the goal's peer, starts with nothing else running; the
                    # startsecs=0 phase carries the client that polls its workers' /health.
                    start = supervisord_start(sup, spp, ports, poll=who == "s0")
                    _log_start(who, start)
                    res.sup_start.setdefault(who, []).append(start)
                    if r == 0 and who == "s1" and window:
                        time.sleep(SETTLE)
                        log(f"B7: supervisord idle window of {window:.0f} s with {n} workers")
                        workers = [psutil.Process(p) for p in start.pids]
                        res.idle["supervisord"] = idle(spp, workers, window)
                    stop = supervisord_stop(sup, start, spp)
                    _log_stop(who, stop)
                    res.sup_stop.setdefault(who, []).append(stop)
                time.sleep(SETTLE)
    return res


def run(*, quick: bool) -> list[Row]:
    n = QUICK_WORKERS if quick else WORKERS
    rounds = 1 if quick else 5
    window = 15.0 if quick else 60.0
    token = uuid.uuid4().hex
    out: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="hive-bench-b5-") as tmp:
        log(f"B5-B7: {n} scripted workers, {rounds} round(s) of hive, supervisord x2, bare")
        try:
            res = measure(Path(tmp) / "main", n=n, rounds=rounds, window=window, env={MARK: token})
            out += rows(res)
            for m in () if quick else SCALE:
                log(f"B5 at {m} workers: {SCALE_ROUNDS} rounds")
                res = measure(
                    Path(tmp) / f"n{m}", n=m, rounds=SCALE_ROUNDS, window=None, env={MARK: token}
                )
                out += scale_rows(res)
        finally:
            left = sweep(token)
            if left:
                log(f"B5-B7: killed {len(left)} process(es) of this run left behind: {left}")
    return out


def per_round(bench: str, ratios: Sequence[float], won: str, peer: str) -> list[Row]:
    """Rows of the ratios peer/hive within each round (its two phases ran next to each
    other: the least noisy comparison): rounds won, median, range."""
    return [
        Row(bench, f"{won} (of {len(ratios)})", sum(r >= 1.0 for r in ratios), "rounds",
            f"{peer} in the same round"),
        Row(bench, "per round, supervisord's time / hive's: median",
            statistics.median(ratios), "x", how="computed"),
        Row(bench, "per round, supervisord's time / hive's: lowest, highest", min(ratios),
            "x", "highest", max(ratios), how="computed"),
    ]  # fmt: skip


def scale_rows(res: Results) -> list[Row]:
    """B5 with fewer workers: where the goal holds on this machine, and where it stops."""
    med = statistics.median
    n, k = res.n, res.rounds
    hive = med(s.all_ready for s in res.hive_start)
    cpu = med(s.extra["workers_cpu"] for s in res.hive_start) / (os.cpu_count() or 1)
    paired = [
        p.all_ready / h.all_ready for h, p in zip(res.hive_start, res.sup_start["s1"], strict=True)
    ]
    b = "B5 scale"
    metric = f"{n} workers: write -> all Running, median of {k}"
    return [
        Row(b, metric, hive, "s", "supervisord startsecs=1 (default): all RUNNING",
            med(s.all_ready for s in res.sup_start["s1"]), "peer/hive >= 1.0"),
        Row(b, metric, hive, "s", "bare spawner, hive's grid: all answer /health (the floor)",
            med(s.all_ready for s in res.bare_start)),
        Row(b, f"{n} workers: per round, supervisord's time / hive's, median", med(paired),
            "x", how="computed"),
        Row(b, f"{n} workers: their start CPU / cores (least time)", cpu, "s",
            how="computed"),
    ]  # fmt: skip


def rows(res: Results) -> list[Row]:
    n, k = res.n, res.rounds
    med = statistics.median
    cores = os.cpu_count() or 1

    def hs(fn: Callable[[Start], float]) -> float:
        return med(fn(s) for s in res.hive_start)

    def ss(label: str, fn: Callable[[Start], float]) -> float:
        starts = [s for lb, group in res.sup_start.items() if label in ("*", lb) for s in group]
        return med(fn(s) for s in starts)

    def ht(fn: Callable[[Stop], float]) -> float:
        return med(fn(s) for s in res.hive_stop)

    def st(label: str, fn: Callable[[Stop], float]) -> float:
        return med(fn(s) for s in res.sup_stop[label])

    s1 = "supervisord startsecs=1 (default), nothing else running"
    s0 = "supervisord startsecs=0, while a client polls /health"
    both = f"supervisord, both configs ({2 * k} starts)"
    bare = "bare spawner: Popen each + hive's probe on its 0.25 s grid"
    b = "B5 start"
    all_ready = hs(lambda s: s.all_ready)
    first_ready = hs(lambda s: s.first_ready)
    metric = f"{n} workers, one file: write -> all Running, median of {k}"
    # Round r's phases ran next to each other: the ratio within a round is the least noisy.
    pairs = zip(res.hive_start, res.sup_start["s1"], strict=True)
    paired = [p.all_ready / h.all_ready for h, p in pairs]
    out = [
        Row(b, metric, all_ready, "s", f"{s1}: start all -> all RUNNING",
            ss("s1", lambda s: s.all_ready), "peer/hive >= 1.0"),
        *per_round(b, paired, "rounds in which hive was ready first", f"{s1}: all RUNNING"),
        Row(b, metric, all_ready, "s", f"{s0}: start all -> all RUNNING",
            ss("s0", lambda s: s.all_ready)),
        Row(b, metric, all_ready, "s", f"{s0}: start all -> all answer /health",
            ss("s0", lambda s: s.extra["health_all"])),
        Row(b, metric, all_ready, "s", f"{bare}: all answer /health (the floor)",
            med(s.all_ready for s in res.bare_start)),
        Row(b, metric, all_ready, "s", f"{s1}: supervisorctl start all returned",
            ss("s1", lambda s: s.extra["returned"])),
        Row(b, "write -> first Running", first_ready, "s", f"{s1}: first RUNNING",
            ss("s1", lambda s: s.first_ready)),
        Row(b, "write -> first Running", first_ready, "s", f"{s0}: first answers /health",
            ss("s0", lambda s: s.extra["health_first"])),
        Row(b, "write -> first Running", first_ready, "s", f"{bare}: first answers",
            med(s.first_ready for s in res.bare_start)),
        Row(b, "write -> last worker_spawn_start (spawn rate)",
            hs(lambda s: s.extra["last_spawn"]), "s", f"{both}: last spawned:",
            ss("*", lambda s: s.extra["last_spawn"])),
        Row(b, "CPU of hive over the start", hs(lambda s: s.cpu), "s", f"CPU of {s1}",
            ss("s1", lambda s: s.cpu)),
        Row(b, "CPU of hive over the start", hs(lambda s: s.cpu), "s",
            f"CPU of the {bare} (in the benchmark's process)",
            med(s.cpu for s in res.bare_start)),
        Row(b, f"CPU of the {n} workers until ready (sum)", hs(lambda s: s.extra["workers_cpu"]),
            "s", f"under {s1}", ss("s1", lambda s: s.extra["workers_cpu"])),
        Row(b, f"that CPU / {cores} cores: least time to start them",
            hs(lambda s: s.extra["workers_cpu"]) / cores, "s", how="computed"),
        Row(b, "write -> manifest_applied (hive's clock)", hs(lambda s: s.extra["applied"]), "s"),
        Row(b, "write -> first worker_spawn_start", hs(lambda s: s.extra["first_spawn"]), "s"),
        Row(b, "Popen + state record per worker, median", hs(lambda s: s.extra["popen_p50"]),
            "s"),
        Row(b, "spawn -> health answered per worker, median",
            hs(lambda s: s.extra["health_wait_p50"]), "s"),
        Row(b, "spawn -> health answered per worker, max",
            hs(lambda s: s.extra["health_wait_max"]), "s"),
        Row(b, "write -> /v1/workers shows all Running",
            hs(lambda s: s.extra["api_all_running"]), "s"),
    ]  # fmt: skip
    b = "B6 stop"
    gone = ht(lambda s: s.gone)
    metric = f"remove the file -> all {n} processes gone, median of {k}"
    s1 = "supervisord startsecs=1 (default)"
    paired = [p.gone / h.gone for h, p in zip(res.hive_stop, res.sup_stop["s1"], strict=True)]
    out += [
        Row(b, metric, gone, "s", f"{s1}: stop all -> all gone",
            st("s1", lambda s: s.gone), "peer/hive >= 1.0"),
        *per_round(b, paired, "rounds in which hive's workers were gone first", f"{s1}: stop"),
        Row(b, metric, gone, "s", "supervisord startsecs=0: stop all -> all gone",
            st("s0", lambda s: s.gone)),
        Row(b, metric, gone, "s", "bare: SIGTERM to each group -> all gone (the floor)",
            med(s.gone for s in res.bare_stop)),
        Row(b, "remove the file -> /v1/workers empty", ht(lambda s: s.done), "s",
            f"{s1}: supervisorctl stop all returned", st("s1", lambda s: s.done)),
        Row(b, "CPU of hive over the stop", ht(lambda s: s.cpu), "s",
            f"CPU of {s1}", st("s1", lambda s: s.cpu)),
    ]  # fmt: skip
    b = "B7 idle"
    h, s = res.idle["hive"], res.idle["supervisord"]
    w = f"{res.window:.0f} s"
    probes = n / HEALTH_INTERVAL
    out += [
        Row(b, f"hive CPU, {n} workers Running, /health every 5 s, {w}", h["cpu_pct"],
            "% of a core", "supervisord, the same workers RUNNING (no health checks)",
            s["cpu_pct"], "< 1%"),
        Row(b, "hive CPU, main thread (event loop)", h["main_cpu_pct"], "% of a core"),
        Row(b, "hive CPU, other threads", max(0.0, h["cpu_pct"] - h["main_cpu_pct"]),
            "% of a core"),
        Row(b, f"main-thread CPU / probes ({probes:g}/s): at most per /health probe",
            10.0 * h["main_cpu_pct"] / probes, "ms", how="computed"),
        Row(b, f"hive RSS, {n} workers Running", h["rss_mb"], "MB",
            "supervisord, the same workers", s["rss_mb"], "< 150 MB"),
        Row(b, f"hive RSS, {n} workers Running", h["rss_mb"], "MB",
            "hive, the model only (no workers)", res.hive_rss_no_workers),
        Row(b, "hive peak RSS in the window", h["peak_rss_mb"], "MB"),
        Row(b, f"CPU of the {n} workers themselves (sum), under hive", h["workers_cpu_pct"],
            "% of a core", "under supervisord", s["workers_cpu_pct"]),
    ]  # fmt: skip
    return out
