"""The floor of B5 and B6: a bare spawner that waits for health (`Popen` each command line,
hive's own probe), and its SIGTERM loop. A reference, not a peer.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from benchmarks import cpu_seconds
from benchmarks.fleet import (
    HEALTH_START_INTERVAL,
    PHASE_TIMEOUT,
    Start,
    Stop,
    check_listening,
    wait_gone,
    workers_cpu,
)
from hive.observers.health import HealthProbe


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
        ports = [int(a[a.index("--port") + 1]) for a in self.argvs]
        check_listening(pids, ports, "the floor")
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
