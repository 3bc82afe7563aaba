"""The counters hive keeps as it works (reconciles, open streams, download bytes, and what
other parts add): prometheus_client's `Counter`, `Gauge` and `Histogram`, registered in one
`CollectorRegistry` per manager (no global registry), which `GET /metrics` reads at scrape
time with the collectors of hive/api/metrics.py.

A part of hive that counts something declares its family once, in the manager's registry,
and counts with one call:

    done = Counter("hive_widgets", "Widgets by outcome.", ["outcome"],
                   registry=manager.metrics.registry)
    done.labels("ok").inc()

Label values must come from a bounded set (an operation, a kind, a route template), never
from a request's free text. prometheus_client's metrics are safe to count from any thread
(a download counts its bytes from its own).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: Seconds, from a reconcile that only looks (a millisecond) to one that downloads (an hour).
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0)


class ReconcileMetrics:
    """What the controller counts: reconciles, their failures and durations, by kind."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.reconciles = Counter(
            "hive_reconciles", "Reconciles carried out, by kind.", ["kind"], registry=registry
        )
        self.errors = Counter(
            "hive_reconcile_errors",
            "Reconciles that failed, by kind and reason (the condition's reason).",
            ["kind", "reason"],
            registry=registry,
        )
        self.duration = Histogram(
            "hive_reconcile_duration_seconds",
            "Time a reconcile took, by kind (a batch's time is shared by its keys).",
            ["kind"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )

    def declare(self, kind: str) -> None:
        """Export 0 for `kind` before its first reconcile."""
        self.reconciles.labels(kind)
        self.duration.labels(kind)

    def observe(self, kind: str, seconds: float, *, error: str | None) -> None:
        self.reconciles.labels(kind).inc()
        self.duration.labels(kind).observe(max(seconds, 0.0))
        if error is not None:
            self.errors.labels(kind, error).inc()


class HiveMetrics:
    """The registry of one hive, with hive's own families declared at once: the reconciles
    (the controller counts them), the open event streams (the API counts them, by route
    template) and the bytes that downloads wrote (each download's thread counts them)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconcile = ReconcileMetrics(self.registry)
        self.streams = Gauge(
            "hive_sse_subscribers",
            "Server-Sent Event streams open now, by route.",
            ["route"],
            registry=self.registry,
        )
        self.download_bytes = Counter(
            "hive_download_bytes",
            "Bytes written by network downloads of models.",
            registry=self.registry,
        )
