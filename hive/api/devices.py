"""The routes of the machine and the Queen: `/v1/devices` (+ `/{id}`), rbee's capabilities
(`/capabilities`, `/v1/capabilities`, whose `?queen_url=` is the discovery that starts the
heartbeats) and rbee's telemetry stream (`/v1/heartbeats/stream`). The views are in
machine.py; the job API (hive/jobs/hive_views.py) reads `device_list`, `device_get` and
`hive_status` from here."""

from __future__ import annotations

import json

from aiohttp import web

from hive.api.machine import capabilities, device_get, device_list, devices_view, telemetry_frame
from hive.api.responses import json_response as _json
from hive.api.views import observe_models, status_view
from hive.model.views import HiveStatus
from hive.narration.sse import NextFrames, stream_frames
from hive.queen import discovery
from hive.runtime.manager import Manager

__all__ = ["add_routes", "device_get", "device_list", "hive_status"]


async def hive_status(manager: Manager) -> HiveStatus:
    """`GET /v1/status` as its type (the job API's `hive_status`): the catalog is read in a
    thread, the rest from memory."""
    return HiveStatus.model_validate(status_view(manager, await observe_models(manager)))


def add_routes(app: web.Application, manager: Manager) -> None:
    """Register the routes of this module on `app`, serving `manager`."""

    async def list_devices(request: web.Request) -> web.Response:
        return _json(devices_view(manager).model_dump(mode="json"))

    async def get_device(request: web.Request) -> web.Response:
        return _json(device_get(manager, request.match_info["id"]).model_dump(mode="json"))

    async def get_capabilities(request: web.Request) -> web.Response:
        raw = request.query.get("queen_url")
        if raw is not None:  # with a token set, the guard has checked it (guard.py)
            await manager.queen.discover(discovery.check(raw))
        return _json(capabilities(manager).model_dump(mode="json"))

    async def heartbeats(request: web.Request) -> web.StreamResponse:
        return await _telemetry_stream(request, manager)

    app.router.add_get("/v1/devices", list_devices)
    app.router.add_get("/v1/devices/{id}", get_device)
    app.router.add_get("/capabilities", get_capabilities)
    app.router.add_get("/v1/capabilities", get_capabilities)
    app.router.add_get("/v1/heartbeats/stream", heartbeats)


def telemetry_frames(manager: Manager) -> NextFrames:
    """rbee's telemetry: `event: heartbeat` with a `Telemetry` frame now and every
    `within` seconds (the stream's keep-alive is `queen_telemetry_interval`); once hive
    stops, a last frame (it says `stopping`, so the Queen knows why the stream ends).
    A frame counts as sent (`frames_sent`) once written: when the writer asks again."""
    link, bus = manager.queen, manager.bus
    first, over, given = True, False, False

    async def next_frames(within: float) -> bytes | None:
        nonlocal first, over, given
        if given:
            link.frames_sent += 1
            given = False
        if over:
            return None
        if not first:
            await bus.until_closed(within)  # at once when hive stops: no polling
        first, over, given = False, bus.closed, True
        frame = json.dumps(telemetry_frame(manager).wire(), separators=(",", ":"))
        return f"event: heartbeat\ndata: {frame}\n\n".encode()

    return next_frames


async def _telemetry_stream(request: web.Request, manager: Manager) -> web.StreamResponse:
    """The telemetry stream (`telemetry_frames`), until the client goes away or hive stops;
    the link counts its subscribers."""
    link = manager.queen
    link.subscribers += 1
    try:
        return await stream_frames(
            request,
            telemetry_frames(manager),
            keepalive=manager.settings.queen_telemetry_interval,
        )
    finally:
        link.subscribers -= 1
