"""The last 15 minutes of the system sampler's readings, for the dashboard's graphs: one
bounded ring for the machine and one per worker, fed each sample on the loop
(hive/observers/system.py), read by `GET /v1/history` and `GET /v1/workers/{name}/history`.

Samples are folded into one point per `step` seconds (10 s, or the sample interval when
that is longer): 90 points cover the window whatever the interval, so a ring's size does
not grow when sampling is made faster. A point holds the mean CPU % of its samples (a
graph of the mean shows load, not the jitter of 2 s readings), the highest memory, VRAM
and busy slots (a peak is what runs a machine out of memory) and the last throughput
(llama.cpp's own average). The point being filled is shown too, so a graph is never
empty after the first sample.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from hive.model.machine import SystemSample
from hive.model.units import MIB
from hive.model.workers import WorkerMetrics

#: The span a ring covers, in seconds.
WINDOW_S = 900.0
#: The shortest span one point stands for, in seconds.
STEP_S = 10.0
#: Rings kept for workers at most: a worker beyond them has no history (each ring holds
#: at most 91 points of 5 numbers, about 25 KB, so 1,000 rings stay under 25 MB).
MAX_WORKER_RINGS = 1000

Fold = Literal["mean", "max", "last"]
Value = float | None

#: (field, how samples fold into a point) of the machine's points and of a worker's.
HOST_FIELDS: tuple[tuple[str, Fold], ...] = (
    ("cpu_percent", "mean"),
    ("memory_used_bytes", "max"),
    ("memory_total_bytes", "last"),
    ("load_1m", "last"),
    ("gpu_vram_used_bytes", "max"),
    ("gpu_utilization_percent", "mean"),
)
WORKER_FIELDS: tuple[tuple[str, Fold], ...] = (
    ("cpu_percent", "mean"),
    ("rss_bytes", "max"),
    ("vram_bytes", "max"),
    ("tokens_per_second", "last"),
    ("busy_slots", "max"),
)


@dataclass(frozen=True, slots=True)
class Point:
    """One point of a ring: when its last sample was taken, and its folded values."""

    t: float
    values: tuple[Value, ...]


class _Open:
    """The point being filled: the bucket it belongs to and what it folded so far."""

    __slots__ = ("bucket", "count", "t", "values")

    def __init__(self, bucket: int, t: float, values: tuple[Value, ...]) -> None:
        self.bucket = bucket
        self.t = t
        self.count = 1
        self.values = list(values)

    def fold(self, t: float, values: tuple[Value, ...], folds: tuple[Fold, ...]) -> None:
        self.count += 1
        self.t = t
        for i, (new, how) in enumerate(zip(values, folds, strict=True)):
            old = self.values[i]
            if new is None:
                continue
            if old is None or how == "last":
                self.values[i] = new
            elif how == "max":
                self.values[i] = max(old, new)
            else:  # a running mean over the samples that had a value
                self.values[i] = old + (new - old) / self.count

    def point(self) -> Point:
        return Point(self.t, tuple(self.values))


class Ring:
    """Points of `step` seconds over `window` seconds, oldest first; the memory it holds
    is bounded by `window / step` points, whatever the rate of `add`."""

    def __init__(self, *, fields: tuple[tuple[str, Fold], ...], step: float, window: float):
        self.fields = tuple(name for name, _ in fields)
        self._folds = tuple(how for _, how in fields)
        self._step = step
        self._window = window
        self._points: deque[Point] = deque(maxlen=math.ceil(window / step))
        self._open: _Open | None = None

    def add(self, t: float, values: tuple[Value, ...]) -> None:
        """Fold one sample taken at `t` (seconds since the epoch)."""
        bucket = math.floor(t / self._step)
        current = self._open
        if current is not None and bucket == current.bucket:
            current.fold(t, values, self._folds)
            return
        if current is not None:
            self._points.append(current.point())
        self._open = _Open(bucket, t, values)
        while self._points and self._points[0].t < t - self._window:
            self._points.popleft()

    def points(self, *, now: float) -> list[Point]:
        """The points of the last `window` seconds before `now`, the open one included."""
        out = list(self._points)
        if self._open is not None:
            out.append(self._open.point())
        return [p for p in out if p.t >= now - self._window]


class ResourceHistory:
    """The machine's ring and one ring per worker hive keeps (declared or running); a
    worker no longer kept loses its ring at the next sample."""

    def __init__(
        self,
        *,
        interval: float,
        window: float = WINDOW_S,
        max_workers: int = MAX_WORKER_RINGS,
    ) -> None:
        self.step = max(STEP_S, interval)
        self.window = window
        self._max_workers = max_workers
        self.host = Ring(fields=HOST_FIELDS, step=self.step, window=window)
        self._workers: dict[str, Ring] = {}

    def worker(self, name: str) -> Ring | None:
        return self._workers.get(name)

    def worker_names(self) -> set[str]:
        return set(self._workers)

    def record(
        self,
        sample: SystemSample,
        *,
        workers: Mapping[str, tuple[int, WorkerMetrics | None]],
        keep: Iterable[str],
    ) -> None:
        """Fold `sample`: the machine, and each worker of `workers` (name → pid and the
        performance last scraped from it) whose process the sample read. Rings of
        workers not in `keep` are dropped."""
        t = sample.taken_at.timestamp()
        gpus = sample.gpus
        utilizations = [g.utilization_percent for g in gpus if g.utilization_percent is not None]
        self.host.add(
            t,
            (
                sample.cpu_percent,
                float(sample.memory_used_bytes),
                float(sample.memory_total_bytes),
                sample.load_average[0],
                float(sum(g.vram_total_bytes - g.vram_free_bytes for g in gpus)) if gpus else None,
                sum(utilizations) / len(utilizations) if utilizations else None,
            ),
        )
        kept = set(keep)
        for name in [n for n in self._workers if n not in kept]:
            del self._workers[name]
        for name, (pid, metrics) in workers.items():
            process = sample.processes.get(pid)
            if process is None or name not in kept:
                continue
            ring = self._workers.get(name)
            if ring is None:
                if len(self._workers) >= self._max_workers:
                    continue
                ring = self._workers[name] = Ring(
                    fields=WORKER_FIELDS, step=self.step, window=self.window
                )
            ring.add(
                t,
                (
                    process.cpu_pct,
                    float(process.rss_mb * MIB),
                    float(process.vram_mb * MIB) if gpus else None,
                    metrics.avg_tokens_per_sec if metrics else None,
                    metrics.busy_slots if metrics else None,
                ),
            )


def as_json(ring: Ring | None, *, now: datetime, step: float, window: float) -> dict[str, Any]:
    """`{"interval_s", "window_s", "samples": [{"t", field: value, ...}]}`, oldest first; a
    byte count as an integer, `t` as ISO 8601 (UTC)."""
    samples: list[dict[str, Any]] = []
    if ring is not None:
        for p in ring.points(now=now.timestamp()):
            item: dict[str, Any] = {"t": datetime.fromtimestamp(p.t, UTC).isoformat()}
            for name, value in zip(ring.fields, p.values, strict=True):
                if value is not None and name.endswith("_bytes"):
                    item[name] = int(value)
                else:
                    item[name] = None if value is None else round(value, 3)
            samples.append(item)
    return {"interval_s": step, "window_s": window, "samples": samples}
