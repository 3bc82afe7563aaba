"""The HTTP API (aiohttp): routes, and the manager's start and stop. What every request
passes first (the token, CORS, the body limit, errors as JSON) is hive/api/guard.py.

Routes read the manager (what they read from the disk, /proc or NVML, in a thread: see
views.py; only the worker catalog of `/v1/runtimes`, a few small files re-read when they
change, is read on the loop). None changes the world itself: a deletion or a restart
records the intent and enqueues the key, and the key's reconcile carries it out (one action
per key at a time); `DELETE /v1/models/{name}` awaits that reconcile to answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from hive import __version__
from hive.actuators.workers import log_path, tail_lines
from hive.api import dashboard, desired
from hive.api.badhttp import one_line_bad_http
from hive.api.devices import add_routes as add_device_routes
from hive.api.guard import MAX_BODY, guard
from hive.api.history import add_routes as add_history_routes
from hive.api.hub import add_routes as add_hub_routes
from hive.api.jobs import add_routes as add_job_routes
from hive.api.metrics import CONTENT_TYPE, count_streams, registry_for, render
from hive.api.params import bool_param, int_param
from hive.api.recent_events import add_routes as add_recent_event_routes
from hive.api.responses import error_response
from hive.api.responses import json_response as _json
from hive.api.sources import add_routes as add_source_routes
from hive.api.views import (
    known_worker,
    models_view,
    object_view,
    observe_model,
    observe_models,
    sample_workers,
    status_view,
    worker_names,
    worker_view,
)
from hive.errors import Conflict, NotFound, ValidationFailed
from hive.model.ids import Kind, ObjectKey, name_problem
from hive.model.text import clip
from hive.narration.bus import Subscription
from hive.narration.sse import (
    stream_file_lines,
    stream_frames,
    stream_subscription,
    subscription_frames,
)
from hive.runtime.manager import Manager
from hive.runtime.sample_feed import with_samples

MANAGER = web.AppKey("manager", Manager)
REGISTRY = web.AppKey("registry", CollectorRegistry)


async def health(request: web.Request) -> web.Response:
    return _json({"status": "ok", "version": __version__})


async def status(request: web.Request) -> web.Response:
    manager = request.app[MANAGER]
    return _json(status_view(manager, await observe_models(manager)))


async def list_models(request: web.Request) -> web.Response:
    manager = request.app[MANAGER]
    return _json({"items": models_view(manager, await observe_models(manager))})


def _model_key(request: web.Request) -> tuple[Manager, str, ObjectKey]:
    """The manager, and the model named in the path, validated."""
    name = request.match_info["name"]
    problem = name_problem(name)
    if problem:
        raise ValidationFailed(f"model name {problem}")
    return request.app[MANAGER], name, ObjectKey.of(Kind.MODEL, name)


async def get_model(request: web.Request) -> web.Response:
    manager, name, key = _model_key(request)
    observed = await observe_model(manager, name)
    if observed is None and manager.store.desired(key) is None:
        raise NotFound(f"model {name!r} is neither declared nor on disk (see GET /v1/models)")
    return _json(object_view(manager, key, observed))


async def delete_model_files(request: web.Request) -> web.Response:
    """`hive delete model NAME`: remove a model's files (and any partial download) that no
    record wants present. A declared model is changed through its record, not here. A
    model that Workers use is refused (409, naming them) unless `?force=true`: then they
    are stopped, and told that the model was deleted by API request."""
    manager, name, key = _model_key(request)
    force = bool_param(request.query.get("force"), "force")
    record = manager.store.desired(key)
    if record is not None and getattr(record.manifest.spec, "state", None) == "present":
        raise Conflict(
            f"{key} is declared present by {record.origin.described()}; "
            "set `state: absent` there to delete it"
        )
    observed = await observe_model(manager, name)
    if observed is None:
        raise NotFound(f"model {name!r} is not on disk")
    users = manager.workers_of(name, running=True)
    if users and not force:
        listed = clip(", ".join(users))
        return error_response(
            409,
            "ModelInUse",
            f"model {name} is used by worker(s) {listed}: remove or stop workers {listed} "
            "first, or DELETE with ?force=true (it stops them)",
            workers=users,
        )
    # The deletion is recorded and queued, carried out by the Model's reconcile (never
    # beside another action on it), and awaited here.
    await asyncio.shield(manager.delete_model(name, users=users))
    partial = observed.download.bytes_on_disk if observed.download else 0
    return _json({"deleted": name, "partial_bytes_removed": partial, "workers": users})


def _worker_name(request: web.Request) -> tuple[Manager, str]:
    """The manager, and the worker named in the path, which must be declared or running."""
    manager = request.app[MANAGER]
    return manager, known_worker(manager, request.match_info["name"])


async def list_workers(request: web.Request) -> web.Response:
    manager = request.app[MANAGER]
    names = worker_names(manager)
    sample = await sample_workers(manager, names)
    return _json({"items": [worker_view(manager, n, sample) for n in names]})


async def get_worker(request: web.Request) -> web.Response:
    manager, name = _worker_name(request)
    sample = await sample_workers(manager, [name], log_lines=20)
    return _json(worker_view(manager, name, sample))


MAX_TAIL = 10_000


async def worker_logs(request: web.Request) -> web.StreamResponse:
    """The worker's log: the last `tail` lines (default 100) as text, or with `follow=1`
    those and every new line as SSE (`data: {"line": ...}`)."""
    manager, name = _worker_name(request)
    tail = int_param(request.query.get("tail"), "tail", kind="a number of lines")
    tail = min(100 if tail is None else tail, MAX_TAIL)
    path = log_path(manager.settings.home, name)
    if request.query.get("follow", "") in {"1", "true", "yes"}:
        # The tail up to a size taken first, and every byte after it: no line lost or
        # sent twice, whatever the worker writes meanwhile.
        size = await asyncio.to_thread(_size_of, path)
        return await stream_file_lines(
            request,
            path=path,
            start=size,
            initial=await asyncio.to_thread(tail_lines, path, tail, end=size),
            stopped=manager.bus.until_closed,
            keepalive=manager.settings.sse_keepalive,
        )
    lines = await asyncio.to_thread(tail_lines, path, tail)
    return web.Response(text="".join(f"{line}\n" for line in lines), content_type="text/plain")


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


async def restart_worker(request: web.Request) -> web.Response:
    """An explicit restart, like `kubectl rollout restart`: stopped, then started at once."""
    manager, name = _worker_name(request)
    try:
        instance = manager.workers.request_restart(name)
    except LookupError:
        raise Conflict(
            f"worker {name!r} has no running process to restart (it is stopped or stopping)"
        ) from None
    return _json(
        {
            "restarting": name,
            "pid": instance.state.pid,
            "events": f"/v1/events?object=Worker/{name}",
        },
        status=202,
    )


async def list_runtimes(request: web.Request) -> web.Response:
    manager = request.app[MANAGER]
    entries = manager.runtimes.entries()
    errors = [{"path": str(e.path), "message": e.message} for e in manager.runtimes.errors]
    return _json({"items": [e.model_dump(mode="json") for e in entries], "errors": errors})


async def metrics(request: web.Request) -> web.Response:
    body = render(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def events(request: web.Request) -> web.StreamResponse:
    manager = request.app[MANAGER]
    # Both are checked, whichever wins: a bad `since` is refused with or without the header.
    resume = int_param(request.headers.get("Last-Event-ID"), "Last-Event-ID header")
    since = int_param(request.query.get("since"), "since")
    after = since if resume is None else resume
    object_filter = request.query.get("object")
    if object_filter is not None:
        try:
            object_filter = ObjectKey.parse(object_filter)
        except ValueError as exc:
            raise ValidationFailed(f"object: {exc}") from None
    samples = bool_param(request.query.get("samples"), "samples")
    subscription = Subscription(
        manager.bus, after=after, object=object_filter, max_lag=manager.settings.sse_max_lag
    )
    if not samples:
        return await stream_subscription(
            request,
            subscription,
            keepalive=manager.settings.sse_keepalive,
            flush_interval=manager.settings.sse_flush_interval,
        )
    # With the machine's readings (the dashboard): the latest at once, then each new one.
    frames = subscription_frames(
        request, subscription, flush_interval=manager.settings.sse_flush_interval
    )
    return await stream_frames(
        request,
        with_samples(frames, manager.samples),
        keepalive=manager.settings.sse_keepalive,
        first=b": connected\n\n" + manager.samples.frame,
    )


def create_app(manager: Manager) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    settings = manager.settings
    guard(app, token=settings.token, cors_origins=settings.cors_origins)
    count_streams(app, manager.metrics.streams)
    app[MANAGER] = manager
    app[REGISTRY] = registry_for(manager)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await manager.start()
        yield
        await manager.stop()

    async def end_streams(app: web.Application) -> None:
        # Before the server waits for open handlers: SSE streams end now, not at a timeout.
        manager.bus.close()

    app.cleanup_ctx.append(one_line_bad_http)
    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(end_streams)
    app.router.add_get("/health", health)
    app.router.add_get("/v1/status", status)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{name}", get_model)
    app.router.add_delete("/v1/models/{name}", delete_model_files)
    app.router.add_get("/v1/workers", list_workers)
    app.router.add_get("/v1/workers/{name}", get_worker)
    app.router.add_get("/v1/workers/{name}/logs", worker_logs)
    app.router.add_post("/v1/workers/{name}/restart", restart_worker)
    app.router.add_get("/v1/runtimes", list_runtimes)
    app.router.add_get("/v1/events", events)
    app.router.add_get("/metrics", metrics)
    desired.add_routes(app, manager)
    add_job_routes(app, manager, metrics=app[REGISTRY])
    add_device_routes(app, manager)
    add_source_routes(app, manager)
    add_history_routes(app, manager)
    add_hub_routes(app)
    add_recent_event_routes(app, manager)
    dashboard.add_routes(app)
    return app
