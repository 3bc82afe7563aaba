"""`GET /v1/history` and `GET /v1/workers/{name}/history`: the last 15 minutes of the
machine's and a worker's resource use, from the rings the system sampler feeds
(hive/observers/history.py)."""

from __future__ import annotations

from aiohttp import web

from hive.api.responses import json_response
from hive.api.views import known_worker
from hive.observers.history import Ring, as_json
from hive.runtime.manager import Manager


def add_routes(app: web.Application, manager: Manager) -> None:
    def answer(ring: Ring | None) -> web.Response:
        history = manager.history
        return json_response(
            as_json(ring, now=manager.clock.now(), step=history.step, window=history.window)
        )

    async def host_history(request: web.Request) -> web.Response:
        return answer(manager.history.host)

    async def worker_history(request: web.Request) -> web.Response:
        name = known_worker(manager, request.match_info["name"])
        return answer(manager.history.worker(name))

    app.router.add_get("/v1/history", host_history)
    app.router.add_get("/v1/workers/{name}/history", worker_history)
