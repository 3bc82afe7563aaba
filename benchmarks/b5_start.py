"""B5 start: a file of N Worker records written -> every worker answers /health (hive:
every worker Running, which hive declares when its probe got an answer), for the real
`hive serve`, read from its event stream; its rows against supervisord (`startsecs=0` and
the same health poller) and the floor (bare `Popen` and hive's probe). The phases run in
`benchmarks.b5_to_b7`.
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
    check_listening,
    per_round,
    workers_cpu,
    workers_manifest,
    workers_rss_mb,
)
from benchmarks.hive_events import EventStream


def hive_start(
    *,
    url: str,
    desired: Path,
    events: EventStream,
    names: Sequence[str],
    proc: psutil.Process,
    runtime: str,
) -> Start:
    objects = {f"Worker/{n}" for n in names}
    index = events.mark()
    text = workers_manifest(names, runtime)
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
    check_listening(pids, [int(i["observed"]["port"]) for i in items], "hive")
    # Where the time went, from hive's own event timestamps (its wall clock).
    arrivals = events.since(index)

    def hive_times(action: str) -> list[float]:
        return [
            a.hive_time - wall0
            for a in arrivals
            if a.event.action == action and a.event.object in objects
        ]

    applied = hive_times("manifest_applied")
    spawns = hive_times("worker_spawn_start")
    completes = hive_times("worker_spawn_complete")
    waits = [float(a.event.data["seconds"]) for a in ready.values()]
    # worker_spawn_start is narrated just before Popen, worker_spawn_health_check just after
    # it returned and the state record was written.
    begun: dict[str, float] = {}
    popen: list[float] = []
    for a in arrivals:
        obj, action = a.event.object, a.event.action
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
        "workers_rss_mb": workers_rss_mb(pids),
    }
    return Start(all_ready, first_ready, cpu, pids, extra)


def rows(res: Results, *, detail: bool) -> list[Row]:
    """B5's rows for one fleet: hive's start against supervisord's and the floor's, the
    medians and the per-round ratios; with `detail`, where hive's time went."""
    n, k = res.n, res.rounds
    med = statistics.median
    cores = os.cpu_count() or 1

    def hs(fn: Callable[[Start], float]) -> float:
        return med(fn(s) for s in res.hive_start)

    b = "B5 start"
    sup = "supervisord startsecs=0 + health poller: start all -> all answer /health"
    floor = "floor (Popen + hive's probe): all answer /health"
    fleet = f"{n} {res.runtime} workers"
    all_ready = hs(lambda s: s.all_ready)
    metric = f"{fleet}: write -> all answer /health (Running), median of {k}"
    paired_sup = [
        p.all_ready / h.all_ready for h, p in zip(res.hive_start, res.sup_start, strict=True)
    ]
    paired_floor = [
        p.all_ready / h.all_ready for h, p in zip(res.hive_start, res.bare_start, strict=True)
    ]
    out = [
        Row(
            b,
            metric,
            all_ready,
            "s",
            sup,
            med(s.all_ready for s in res.sup_start),
            "peer/hive >= 1.0",
        ),
        Row(
            b,
            metric,
            all_ready,
            "s",
            floor,
            med(s.all_ready for s in res.bare_start),
            "peer/hive >= 0.95 (hive <= 1.05x)",
        ),
        *per_round(
            b, paired_sup, what=f"{fleet}, supervisord", won="rounds hive was first", goal=">= 1.0"
        ),
        *per_round(
            b, paired_floor, what=f"{fleet}, floor", won="rounds hive was first", goal=">= 0.95"
        ),
        Row(b, f"{fleet}: RSS per worker", hs(lambda s: s.extra["workers_rss_mb"]), "MB"),
        Row(
            b,
            f"{fleet}: their start CPU (sum) / {cores} cores: least time",
            hs(lambda s: s.extra["workers_cpu"]) / cores,
            "s",
            how="computed",
        ),
    ]
    if not detail:
        return out
    first_ready = hs(lambda s: s.first_ready)

    def ss(fn: Callable[[Start], float]) -> float:
        return med(fn(s) for s in res.sup_start)

    out += [
        Row(b, f"{fleet}: write -> first answers", first_ready, "s", "supervisord: first",
            ss(lambda s: s.first_ready)),
        Row(b, f"{fleet}: write -> first answers", first_ready, "s", "floor: first",
            med(s.first_ready for s in res.bare_start)),
        Row(b, f"{fleet}: write -> last worker_spawn_start (spawn rate)",
            hs(lambda s: s.extra["last_spawn"]), "s", "supervisord: last spawned",
            ss(lambda s: s.extra["last_spawn"])),
        Row(b, f"{fleet}: supervisord's last RUNNING (startsecs=0: spawned)",
            ss(lambda s: s.extra["running_all"]), "s"),
        Row(b, f"{fleet}: CPU of hive over the start", hs(lambda s: s.cpu), "s",
            "CPU of supervisord", ss(lambda s: s.cpu)),
        Row(b, f"{fleet}: CPU of hive over the start", hs(lambda s: s.cpu), "s",
            "CPU of the floor (spawner + probe, the benchmark's process)",
            med(s.cpu for s in res.bare_start)),
        Row(b, f"{fleet}: CPU of the workers until ready (sum)",
            hs(lambda s: s.extra["workers_cpu"]), "s", "under supervisord",
            ss(lambda s: s.extra["workers_cpu"])),
        Row(b, f"{fleet}: write -> manifest_applied (hive's clock)",
            hs(lambda s: s.extra["applied"]), "s"),
        Row(b, f"{fleet}: write -> first worker_spawn_start",
            hs(lambda s: s.extra["first_spawn"]), "s"),
        Row(b, f"{fleet}: Popen + state record per worker, median",
            hs(lambda s: s.extra["popen_p50"]), "s"),
        Row(b, f"{fleet}: spawn -> health answered per worker, median",
            hs(lambda s: s.extra["health_wait_p50"]), "s"),
        Row(b, f"{fleet}: spawn -> health answered per worker, max",
            hs(lambda s: s.extra["health_wait_max"]), "s"),
        Row(b, f"{fleet}: write -> /v1/workers shows all Running",
            hs(lambda s: s.extra["api_all_running"]), "s"),
    ]  # fmt: skip
    return out
