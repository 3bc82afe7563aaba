"""B5 start: a file of N Worker records written -> every worker Running (its /health
answered), for the real `hive serve`, read from its event stream; its rows against
supervisord and the floor. The phases run in `benchmarks.b5_to_b7`.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

from benchmarks import Row, cpu_seconds, get_json, write_atomic
from benchmarks.fleet import (
    PHASE_TIMEOUT,
    WORKERS_FILE,
    Results,
    Start,
    per_round,
    workers_cpu,
    workers_manifest,
)
from benchmarks.hive_events import EventStream


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
    """B5's rows: hive's start against supervisord's (both configs) and the floor's."""
    n, k = res.n, res.rounds
    med = statistics.median
    cores = os.cpu_count() or 1

    def hs(fn: Callable[[Start], float]) -> float:
        return med(fn(s) for s in res.hive_start)

    def ss(label: str, fn: Callable[[Start], float]) -> float:
        starts = [s for lb, group in res.sup_start.items() if label in ("*", lb) for s in group]
        return med(fn(s) for s in starts)

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
    return out
