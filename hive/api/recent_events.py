"""`GET /v1/events/recent`: the newest events the ring holds, of one object or of all, as
one JSON answer (the object views' "last events"; `/v1/events` streams what comes next)."""

from __future__ import annotations

from aiohttp import web

from hive.api.params import int_param
from hive.api.responses import json_response
from hive.errors import ValidationFailed
from hive.model.ids import ObjectKey
from hive.runtime.manager import Manager

#: Events one answer holds at most, and by default.
MAX_LIMIT = 1000
DEFAULT_LIMIT = 20


def add_routes(app: web.Application, manager: Manager) -> None:
    async def recent_events(request: web.Request) -> web.Response:
        limit = int_param(request.query.get("limit"), "limit", kind="a number of events")
        limit = DEFAULT_LIMIT if limit is None else min(limit, MAX_LIMIT)
        raw = request.query.get("object")
        key = None
        if raw is not None:
            try:
                key = str(ObjectKey.parse(raw))
            except ValueError as exc:
                raise ValidationFailed(f"object: {exc}") from None
        events = manager.bus.recent(object=key, limit=limit)
        return json_response(
            {
                "items": [e.model_dump(mode="json") for e in events],
                "last_id": manager.bus.last_id,
            }
        )

    app.router.add_get("/v1/events/recent", recent_events)
