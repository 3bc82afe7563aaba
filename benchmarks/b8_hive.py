"""B8's hive: the real API of a tree's hive (`create_app` over a `Manager`, the real
narration bus and SSE writers, served by aiohttp on loopback, as `hive serve` serves them)
in a child interpreter, whose loop narrates bursts when told on stdin.

    python benchmarks/b8_hive.py HOME        # prints {"port": P} once it listens
    stdin: {"burst": N, "every": K}          # prints {"first", "last", "seconds", "cpu",
                                             #         "cpu_at_start"}
    stdin: {"cpu": 1}                        # prints {"cpu_now"}: the process's CPU seconds

A burst narrates N events through `manager.bus.narrate`, the call every part of hive
narrates with, letting the loop in (`await asyncio.sleep(0)`) after every K events, as the
controller lets it in after each key it reconciles. The events are download progress lines
(the busiest kind hive narrates): object, action, message and data of the usual size.
Imports only hive, the stdlib and aiohttp/psutil (run in the tree's interpreter)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import psutil
from aiohttp import web

from hive.api.app import create_app
from hive.runtime.manager import Manager
from hive.settings import Settings


async def burst(manager: Manager, n: int, every: int) -> dict[str, float]:
    bus = manager.bus
    first = bus.last_id + 1
    me = psutil.Process()
    cpu0 = me.cpu_times()
    t0 = time.perf_counter()
    for i in range(n):
        done = (i + 1) * 1_048_576
        bus.narrate(
            f"Model/bench-{i % 100}",
            "model_download_progress",
            f"Downloaded {done // 1_000_000} MB / 10485 MB ({100 * (i + 1) // n}%)",
            bytes_downloaded=done,
            total_bytes=10_485_760_000,
            speed_bytes_per_sec=104_857_600,
            eta_seconds=n - i,
        )
        if (i + 1) % every == 0:
            await asyncio.sleep(0)
    seconds = time.perf_counter() - t0
    cpu1 = me.cpu_times()
    cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    return {
        "first": first,
        "last": bus.last_id,
        "seconds": seconds,
        "cpu": cpu,
        "cpu_at_start": cpu0.user + cpu0.system,
    }


async def main(home: Path) -> None:
    # HIVE_* variables (HIVE_SSE_FLUSH_INTERVAL…) apply, as to `hive serve`.
    settings = Settings.from_env(
        home=home, console=False, gpu_probe="none", resync_interval=3600.0, port=0
    )
    manager = Manager(settings)
    runner = web.AppRunner(create_app(manager), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]  # the port the OS chose
    print(json.dumps({"port": port}), flush=True)
    loop = asyncio.get_running_loop()
    try:
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            ask = json.loads(line)
            if "cpu" in ask:
                times = psutil.Process().cpu_times()
                print(json.dumps({"cpu_now": times.user + times.system}), flush=True)
                continue
            result = await burst(manager, int(ask["burst"]), int(ask["every"]))
            print(json.dumps(result), flush=True)
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
