"""hive's plain metric families: counters that only go up, gauges, histograms with
cumulative buckets, names checked, no family declared twice, counts from many threads."""

from __future__ import annotations

import threading

import pytest

from hive.runtime.metrics import HiveMetrics, Metrics


def test_a_counter_counts_by_label_values() -> None:
    jobs = Metrics().counter("hive_jobs", "Jobs.", labels=("operation", "outcome"))
    jobs.inc("model_get", "done")
    jobs.inc("model_get", "done")
    jobs.declare("model_list", "failed")
    assert jobs.samples() == [(("model_get", "done"), 2.0), (("model_list", "failed"), 0.0)]
    with pytest.raises(ValueError, match="only goes up"):
        jobs.inc("model_get", "done", by=-1)
    with pytest.raises(ValueError, match="takes labels"):
        jobs.inc("model_get")


def test_an_unlabelled_counter_is_exported_from_zero() -> None:
    assert Metrics().counter("hive_things", "Things.").samples() == [((), 0.0)]


def test_a_gauge_goes_up_and_down() -> None:
    streams = Metrics().gauge("hive_streams", "Open.", labels=("route",))
    streams.add("/v1/events")
    streams.add("/v1/events")
    streams.add("/v1/events", by=-1)
    streams.set("/logs", to=5)
    assert streams.samples() == [(("/logs",), 5.0), (("/v1/events",), 1.0)]


def test_a_histogram_has_cumulative_buckets_and_a_sum() -> None:
    durations = Metrics().histogram("hive_d_seconds", "D.", labels=("kind",), buckets=(0.1, 1))
    for value in (0.05, 0.1, 0.5, 3.0):
        durations.observe("Model", value=value)
    ((labels, buckets, total),) = durations.samples()
    assert labels == ("Model",)
    assert buckets == [("0.1", 2.0), ("1.0", 3.0), ("+Inf", 4.0)]
    assert total == pytest.approx(3.65)
    assert durations.count("Model") == 4 and durations.count("Worker") == 0


@pytest.mark.parametrize("name", ["jobs", "hive_Jobs", "hive_jobs_total", "hive-jobs", "hive_"])
def test_names_are_checked(name: str) -> None:
    with pytest.raises(ValueError, match="metric name"):
        Metrics().counter(name, "x")


def test_a_family_is_declared_once() -> None:
    metrics = HiveMetrics()
    with pytest.raises(ValueError, match="declared twice"):
        metrics.counter("hive_download_bytes", "again")
    names = [f.name for f in metrics.families()]
    assert names[:3] == [
        "hive_reconciles",
        "hive_reconcile_errors",
        "hive_reconcile_duration_seconds",
    ]


def test_counts_from_many_threads_are_all_kept() -> None:
    written = Metrics().counter("hive_bytes", "Bytes.")

    def count() -> None:
        for _ in range(10_000):
            written.inc(by=3)

    threads = [threading.Thread(target=count) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert written.value() == 8 * 10_000 * 3
