"""The resource history's rings: samples folded into 10 s points (mean CPU, peak memory,
last throughput), bounded to 15 minutes whatever the sample rate, a removed worker's ring
dropped, and the number of rings capped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hive.model.devices import GpuInfo
from hive.model.machine import ProcessSample, SystemSample
from hive.model.units import MIB
from hive.model.workers import WorkerMetrics
from hive.observers.history import ResourceHistory, as_json

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def sample(
    at: float,
    *,
    cpu: float = 10.0,
    procs: dict[int, tuple[float, int]] | None = None,
    gpu: bool = False,
) -> SystemSample:
    return SystemSample(
        taken_at=T0 + timedelta(seconds=at),
        hostname="h",
        ip_address="127.0.0.1",
        cpu_name="CPU",
        cpu_vendor="x",
        cpu_cores=4,
        cpu_percent=cpu,
        memory_total_bytes=8 * 1024 * MIB,
        memory_available_bytes=4 * 1024 * MIB,
        memory_used_bytes=4 * 1024 * MIB,
        disk_total_bytes=1,
        disk_free_bytes=1,
        load_average=(0.5, 0.4, 0.3),
        system_uptime_seconds=1,
        gpus=(
            GpuInfo(
                index=0,
                uuid="u",
                name="g",
                vram_total_bytes=1000 * MIB,
                vram_free_bytes=600 * MIB,
                utilization_percent=50.0,
            ),
        )
        if gpu
        else (),
        processes={
            pid: ProcessSample(
                pid=pid,
                cpu_pct=c,
                rss_mb=rss,
                io_r_mb_s=0,
                io_w_mb_s=0,
                uptime_s=1,
                vram_mb=100,
            )
            for pid, (c, rss) in (procs or {}).items()
        },
    )


def test_samples_fold_into_ten_second_points() -> None:
    history = ResourceHistory(interval=2.0)
    metrics = WorkerMetrics(scraped_at=T0, avg_tokens_per_sec=40.0, busy_slots=2)
    # Five samples per 10 s bucket: CPU 0, 10, 20, 30, 40 (mean 20), RSS peaks at 500 MiB.
    for i in range(10):
        at = float(2 * i)
        rss = 500 if i == 2 else 100
        history.record(
            sample(at, cpu=i * 10.0, procs={7: ((i % 5) * 10.0, rss)}),
            workers={"w": (7, metrics)},
            keep={"w"},
        )
    body = as_json(
        history.worker("w"), now=T0 + timedelta(seconds=18), step=history.step, window=900
    )
    assert body["interval_s"] == 10.0
    first, second = body["samples"]
    assert first == {
        "t": (T0 + timedelta(seconds=8)).isoformat(),
        "cpu_percent": 20.0,
        "rss_bytes": 500 * MIB,
        "vram_bytes": None,  # no GPU probe: unknown, not 0
        "tokens_per_second": 40.0,
        "busy_slots": 2.0,
    }
    assert second["rss_bytes"] == 100 * MIB  # the open point, shown before it closes
    host = as_json(history.host, now=T0 + timedelta(seconds=18), step=10, window=900)
    assert host["samples"][0]["cpu_percent"] == 20.0
    assert host["samples"][0]["gpu_vram_used_bytes"] is None


def test_rings_are_bounded_to_the_window_whatever_the_rate() -> None:
    history = ResourceHistory(interval=0.5)
    for i in range(4000):  # 2,000 s of samples every 0.5 s
        history.record(
            sample(i * 0.5, gpu=True, procs={7: (1.0, 1)}), workers={"w": (7, None)}, keep={"w"}
        )
    now = T0 + timedelta(seconds=2000)
    ring = history.worker("w")
    assert ring is not None
    points = ring.points(now=now.timestamp())
    assert 89 <= len(points) <= 91
    assert min(p.t for p in points) >= now.timestamp() - 900
    assert len(history.host._points) <= 90
    host = as_json(history.host, now=now, step=history.step, window=900)["samples"]
    assert host[-1]["gpu_vram_used_bytes"] == 400 * MIB
    assert host[-1]["gpu_utilization_percent"] == 50.0
    # Read later, with no sample since: only what is still in the window.
    later = T0 + timedelta(seconds=2000 + 890)
    assert len(ring.points(now=later.timestamp())) <= 2


def test_a_slow_interval_is_its_own_step() -> None:
    assert ResourceHistory(interval=30.0).step == 30.0


def test_removed_workers_lose_their_ring_and_rings_are_capped() -> None:
    history = ResourceHistory(interval=2.0, max_workers=2)
    procs = {1: (1.0, 1), 2: (1.0, 1), 3: (1.0, 1)}
    workers = {"a": (1, None), "b": (2, None), "c": (3, None)}
    history.record(sample(0, procs=procs), workers=workers, keep={"a", "b", "c"})
    assert history.worker_names() == {"a", "b"}  # the cap: "c" gets none
    history.record(sample(2, procs=procs), workers=workers, keep={"b", "c"})
    assert history.worker_names() == {"b", "c"}  # "a" was removed: its ring is dropped
    # A declared worker whose process is gone keeps its ring (a crash loop's history).
    history.record(sample(4, procs={}), workers={}, keep={"b", "c"})
    assert history.worker_names() == {"b", "c"}
