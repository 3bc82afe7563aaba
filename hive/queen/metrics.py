"""The Queen link's part of `/metrics`: heartbeats by protocol and outcome, and the
telemetry stream's subscribers, read from the link at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hive.queen.link import QueenLink


class QueenCollector(Collector):
    def __init__(self, link: QueenLink) -> None:
        self._link = link

    def collect(self) -> Iterator[Metric]:
        link = self._link
        beats = CounterMetricFamily(
            "hive_queen_heartbeats",
            "Heartbeats to the Queen by protocol (push: POST /v1/hive-heartbeat; ready: POST "
            "/v1/hive/ready; telemetry: frames of /v1/heartbeats/stream) and outcome.",
            labels=["protocol", "outcome"],
        )
        for protocol, tracker in (("push", link.push), ("ready", link.ready)):
            beats.add_metric([protocol, "success"], tracker.successes)
            beats.add_metric([protocol, "failure"], tracker.failures)
        beats.add_metric(["telemetry", "success"], link.frames_sent)
        yield beats
        yield GaugeMetricFamily(
            "hive_queen_telemetry_subscribers",
            "Open subscriptions to /v1/heartbeats/stream.",
            value=link.subscribers,
        )
