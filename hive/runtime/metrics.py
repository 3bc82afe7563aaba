"""The counters hive keeps as it works (reconciles, open streams, download bytes, and what
other parts add), plain numbers in memory that `GET /metrics` reads at scrape time
(hive/api/metrics.py turns each family into Prometheus text). No global registry: one
`Metrics` per manager, handed to whoever counts.

A part of hive that counts something declares its family once and counts with one call:

    jobs = manager.metrics.counter(  # manager.metrics: a HiveMetrics
        "hive_jobs", "Jobs by operation and outcome.", labels=("operation", "outcome")
    )
    jobs.inc("model_get", "done")

Counters are exported with `_total` appended; label values must come from a bounded set
(an operation, a kind, a route template), never from a request's free text. Every method
is safe to call from any thread (a download counts its bytes from its own).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable, Sequence

Labels = tuple[str, ...]

_NAME = re.compile(r"hive_[a-z0-9_]+")
#: Seconds, from a reconcile that only looks (a millisecond) to one that downloads (an hour).
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0)


class _Family:
    """A named family of samples, one per tuple of label values."""

    kind = "untyped"

    def __init__(self, name: str, help: str, labels: Sequence[str]) -> None:
        if not _NAME.fullmatch(name) or name.endswith("_total"):
            raise ValueError(f"metric name {name!r}: hive_ and [a-z0-9_], without _total")
        self.name = name
        self.help = help
        self.labels: Labels = tuple(labels)
        self._lock = threading.Lock()

    def _key(self, values: Sequence[str]) -> Labels:
        if len(values) != len(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, got {tuple(values)}")
        return tuple(str(v) for v in values)


class Counter(_Family):
    """Counts that only go up (exported as `<name>_total`)."""

    kind = "counter"

    def __init__(self, name: str, help: str, labels: Sequence[str]) -> None:
        super().__init__(name, help, labels)
        self._values: dict[Labels, float] = {} if labels else {(): 0.0}

    def inc(self, *values: str, by: float = 1.0) -> None:
        if by < 0:
            raise ValueError(f"{self.name}: a counter only goes up (by={by})")
        key = self._key(values)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + by

    def declare(self, *values: str) -> None:
        """Export 0 for these label values before the first count (a known kind)."""
        self.inc(*values, by=0.0)

    def value(self, *values: str) -> float:
        with self._lock:
            return self._values.get(self._key(values), 0.0)

    def samples(self) -> list[tuple[Labels, float]]:
        with self._lock:
            return sorted(self._values.items())


class Gauge(_Family):
    """A value that goes up and down (open streams)."""

    kind = "gauge"

    def __init__(self, name: str, help: str, labels: Sequence[str]) -> None:
        super().__init__(name, help, labels)
        self._values: dict[Labels, float] = {} if labels else {(): 0.0}

    def add(self, *values: str, by: float = 1.0) -> None:
        key = self._key(values)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + by

    def set(self, *values: str, to: float) -> None:
        key = self._key(values)
        with self._lock:
            self._values[key] = to

    def value(self, *values: str) -> float:
        with self._lock:
            return self._values.get(self._key(values), 0.0)

    def samples(self) -> list[tuple[Labels, float]]:
        with self._lock:
            return sorted(self._values.items())


class HistogramSample:
    """One series of a histogram: the count per bucket (not cumulative), the sum."""

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * (buckets + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def cumulative(self, bounds: Sequence[float]) -> list[tuple[str, float]]:
        """Prometheus' buckets: (`le`, observations at or below it), +Inf last."""
        out, running = [], 0
        for bound, count in zip([*bounds, math.inf], self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == math.inf else repr(float(bound)), float(running)))
        return out


class Histogram(_Family):
    """Observations (durations) counted into fixed buckets, with their sum."""

    kind = "histogram"

    def __init__(
        self, name: str, help: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> None:
        super().__init__(name, help, labels)
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError(f"{name}: buckets must be increasing, got {buckets}")
        self.buckets = tuple(float(b) for b in buckets)
        self._series: dict[Labels, HistogramSample] = {}

    def observe(self, *values: str, value: float) -> None:
        key = self._key(values)
        slot = next((i for i, b in enumerate(self.buckets) if value <= b), len(self.buckets))
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = HistogramSample(len(self.buckets))
            series.counts[slot] += 1
            series.sum += value

    def declare(self, *values: str) -> None:
        key = self._key(values)
        with self._lock:
            self._series.setdefault(key, HistogramSample(len(self.buckets)))

    def count(self, *values: str) -> int:
        with self._lock:
            series = self._series.get(self._key(values))
            return sum(series.counts) if series else 0

    def samples(self) -> list[tuple[Labels, list[tuple[str, float]], float]]:
        """Per series: its label values, its cumulative buckets, its sum."""
        with self._lock:
            return [
                (key, s.cumulative(self.buckets), s.sum) for key, s in sorted(self._series.items())
            ]


Family = Counter | Gauge | Histogram


class Metrics:
    """The families of one hive, in the order they were declared."""

    def __init__(self) -> None:
        self._families: dict[str, Family] = {}
        self._lock = threading.Lock()

    def _add(self, family: Family) -> None:
        with self._lock:
            if family.name in self._families:
                raise ValueError(f"metric {family.name} is declared twice")
            self._families[family.name] = family

    def counter(self, name: str, help: str, *, labels: Sequence[str] = ()) -> Counter:
        family = Counter(name, help, labels)
        self._add(family)
        return family

    def gauge(self, name: str, help: str, *, labels: Sequence[str] = ()) -> Gauge:
        family = Gauge(name, help, labels)
        self._add(family)
        return family

    def histogram(
        self,
        name: str,
        help: str,
        *,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = DURATION_BUCKETS,
    ) -> Histogram:
        family = Histogram(name, help, labels, buckets)
        self._add(family)
        return family

    def families(self) -> Iterable[Family]:
        with self._lock:
            return list(self._families.values())


class ReconcileMetrics:
    """What the controller counts: reconciles, their failures and durations, by kind."""

    def __init__(self, metrics: Metrics) -> None:
        self.reconciles = metrics.counter(
            "hive_reconciles", "Reconciles carried out, by kind.", labels=("kind",)
        )
        self.errors = metrics.counter(
            "hive_reconcile_errors",
            "Reconciles that failed, by kind and reason (the condition's reason).",
            labels=("kind", "reason"),
        )
        self.duration = metrics.histogram(
            "hive_reconcile_duration_seconds",
            "Time a reconcile took, by kind (a batch's time is shared by its keys).",
            labels=("kind",),
        )

    def declare(self, kind: str) -> None:
        self.reconciles.declare(kind)
        self.duration.declare(kind)

    def observe(self, kind: str, seconds: float, *, error: str | None) -> None:
        self.reconciles.inc(kind)
        self.duration.observe(kind, value=max(seconds, 0.0))
        if error is not None:
            self.errors.inc(kind, error)


class HiveMetrics(Metrics):
    """The families of one hive, with hive's own declared at once: the reconciles (the
    controller counts them), the open event streams (the API counts them, by route
    template) and the bytes that downloads wrote (each download's thread counts them).
    Other parts add theirs with `counter`, `gauge` or `histogram`."""

    def __init__(self) -> None:
        super().__init__()
        self.reconcile = ReconcileMetrics(self)
        self.streams = self.gauge(
            "hive_sse_subscribers",
            "Server-Sent Event streams open now, by route.",
            labels=("route",),
        )
        self.download_bytes = self.counter(
            "hive_download_bytes", "Bytes written by network downloads of models."
        )
