"""`GET /metrics`: Prometheus text for the objects hive manages, read from the manager at
scrape time (a collector), including the performance it scraped from each worker's own
`/metrics`, and every family in the manager's registry (hive/runtime/metrics.py:
reconciles, open streams, download bytes, and what other parts declare there).

Open Server-Sent Event streams count themselves: any answer prepared as
`text/event-stream` inside its handler adds one to `hive_sse_subscribers{route}` (the
route's template) until the handler returns (`count_streams`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from hive.api.guard import Handler
from hive.model.ids import Kind
from hive.model.status import WorkerPhase
from hive.queen.metrics import QueenCollector
from hive.runtime.manager import Manager

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HiveCollector(Collector):
    def __init__(self, manager: Manager) -> None:
        self._manager = manager

    def collect(self) -> Iterator[Metric]:
        manager = self._manager
        phases = GaugeMetricFamily(
            "hive_objects", "Objects by kind and phase.", labels=["kind", "phase"]
        )
        counts = Counter((k.kind.value, s.phase) for k, s in manager.statuses.items())
        for (kind, phase), n in sorted(counts.items()):
            phases.add_metric([kind, phase], n)
        yield phases
        yield GaugeMetricFamily(
            "hive_queue_depth", "Keys waiting to be reconciled.", value=len(manager.queue)
        )
        yield CounterMetricFamily(
            "hive_events", "Events narrated since hive started.", value=manager.bus.last_id
        )
        up = GaugeMetricFamily(
            "hive_worker_up",
            "1 when the worker is Running (its health check answers).",
            labels=["worker", "model", "device"],
        )
        restarts = CounterMetricFamily(
            "hive_worker_restarts", "Restarts of the worker.", labels=["worker"]
        )
        scraped: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            "tokens_generated": CounterMetricFamily(
                "hive_worker_tokens_generated",
                "Tokens generated (worker's own metrics).",
                labels=["worker"],
            ),
            "prompt_tokens": CounterMetricFamily(
                "hive_worker_prompt_tokens",
                "Prompt tokens processed (worker's own metrics).",
                labels=["worker"],
            ),
            "avg_tokens_per_sec": GaugeMetricFamily(
                "hive_worker_tokens_per_second",
                "Generation throughput (worker's own metrics).",
                labels=["worker"],
            ),
            "busy_slots": GaugeMetricFamily(
                "hive_worker_busy_slots",
                "Requests being processed (worker's own metrics).",
                labels=["worker"],
            ),
        }
        workers = manager.workers
        for name, instance in sorted(workers.instances.items()):
            state = instance.state
            status = manager.statuses.get(instance.key)
            running = status is not None and status.phase == WorkerPhase.RUNNING
            up.add_metric([name, state.model, state.device], 1.0 if running else 0.0)
            metrics = instance.health.metrics
            if metrics is None:
                continue
            for field, family in scraped.items():
                value = getattr(metrics, field)
                if value is not None:
                    family.add_metric([name], float(value))
        # Every worker hive knows of (declared, running, or with a history), 0 for none.
        for name in sorted(workers.names() | set(declared_workers(manager))):
            history = workers.histories.get(name)
            restarts.add_metric([name], history.restarts if history else 0)
        yield up
        yield restarts
        yield from scraped.values()
        yield from manager.metrics.registry.collect()


#: The route of the event stream a request opened (set while its handler runs).
_STREAM = web.RequestKey("hive_stream_route", str)
_IN_HANDLER = web.RequestKey("hive_in_handler", bool)


def count_streams(app: web.Application, gauge: Gauge) -> None:
    """Count every open `text/event-stream` answer in `gauge`, by route template: one more
    when a handler prepares it, one less when that handler returns (however it ends)."""

    async def opened(request: web.Request, response: web.StreamResponse) -> None:
        if request.get(_IN_HANDLER) and response.content_type == "text/event-stream":
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "?"
            request[_STREAM] = route
            gauge.labels(route).inc()

    @web.middleware
    async def closed(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[_IN_HANDLER] = True
        try:
            return await handler(request)
        finally:
            request[_IN_HANDLER] = False
            route = request.get(_STREAM)
            if route is not None:
                gauge.labels(route).dec()

    app.on_response_prepare.append(opened)
    app.middlewares.append(closed)


def registry_for(manager: Manager) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HiveCollector(manager))
    registry.register(QueenCollector(manager.queen))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


def declared_workers(manager: Manager) -> list[str]:
    return [k.name for k in manager.store.declared_keys() if k.kind is Kind.WORKER]
