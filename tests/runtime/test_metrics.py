"""hive's own metric families in the manager's registry: declared at once, each kind of
reconcile exported from 0, a family declared twice refused, and one registry per hive (two
managers in one process count apart)."""

from __future__ import annotations

import pytest
from prometheus_client import Counter, generate_latest

from hive.runtime.metrics import HiveMetrics


def test_hives_families_are_declared_at_once() -> None:
    metrics = HiveMetrics()
    metrics.reconcile.declare("Model")
    text = generate_latest(metrics.registry).decode()
    assert 'hive_reconciles_total{kind="Model"} 0.0' in text
    assert 'hive_reconcile_duration_seconds_count{kind="Model"} 0.0' in text
    assert "hive_download_bytes_total 0.0" in text
    assert "# TYPE hive_sse_subscribers gauge" in text


def test_reconciles_errors_and_durations_by_kind() -> None:
    metrics = HiveMetrics()
    metrics.reconcile.observe("Worker", 0.02, error=None)
    metrics.reconcile.observe("Worker", 0.7, error="Transient")
    value = metrics.registry.get_sample_value
    assert value("hive_reconciles_total", {"kind": "Worker"}) == 2
    assert value("hive_reconcile_errors_total", {"kind": "Worker", "reason": "Transient"}) == 1
    bucket = {"kind": "Worker", "le": "0.05"}
    assert value("hive_reconcile_duration_seconds_bucket", bucket) == 1
    assert value("hive_reconcile_duration_seconds_sum", {"kind": "Worker"}) == pytest.approx(0.72)


def test_a_family_is_declared_once_and_each_hive_counts_apart() -> None:
    one, two = HiveMetrics(), HiveMetrics()
    with pytest.raises(ValueError, match="Duplicated"):
        Counter("hive_download_bytes", "again", registry=one.registry)
    one.download_bytes.inc(5)
    assert one.registry.get_sample_value("hive_download_bytes_total") == 5
    assert two.registry.get_sample_value("hive_download_bytes_total") == 0
