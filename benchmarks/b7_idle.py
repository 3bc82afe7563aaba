"""B7 idle: hive's CPU and memory while its workers run and it probes their /health, against
supervisord with the same workers. The windows run in `benchmarks.b5_to_b7`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import psutil

from benchmarks import Row, cpu_seconds, main_thread_cpu
from benchmarks.fleet import HEALTH_INTERVAL, Results


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


def rows(res: Results) -> list[Row]:
    """B7's rows: hive's idle cost with the workers Running, against supervisord's."""
    n = res.n
    b = "B7 idle"
    h, s = res.idle["hive"], res.idle["supervisord"]
    w = f"{res.window:.0f} s"
    probes = n / HEALTH_INTERVAL
    out = [
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
