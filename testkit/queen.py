"""Fake rbee Queens on 127.0.0.1, one per generation of rbee's protocol, for tests: real
aiohttp servers that record what a hive (and its workers) send, and can go down and come
back on the same port.

- ``generation="seed"``: the document's Queen. ``POST /v1/hive-heartbeat`` (answered
  ``204``) and ``POST /v1/worker-heartbeat``; nothing else (``/v1/hive/ready`` is a 404).
- ``generation="current"``: rbee's code today. ``POST /v1/hive/ready`` (answered
  ``{"status": "ok", "message": ...}``), after which it subscribes to the hive's
  ``GET /v1/heartbeats/stream`` and records each ``event: heartbeat`` frame, as rbee's
  Queen does; ``POST /v1/worker-heartbeat``. ``/v1/hive-heartbeat`` is a 404.

``async with FakeQueen(...) as queen:`` in async tests; ``with ThreadedQueen(...) as
queen:`` from sync code (a `hive serve` subprocess): the same server on its own loop in a
thread. ``answer`` sets the status every beat gets (a failing Queen); ``down()`` and
``up()`` stop and restart the server on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from types import TracebackType
from typing import Any, Literal, Self

import aiohttp
from aiohttp import web

Generation = Literal["seed", "current"]


class FakeQueen:
    def __init__(self, generation: Generation, *, subscribe: bool = True) -> None:
        self.generation = generation
        #: Subscribe to the hive's telemetry stream when it says it is ready.
        self.subscribe = subscribe
        #: Bodies of `/v1/hive-heartbeat`, `/v1/hive/ready`, `/v1/worker-heartbeat`.
        self.beats: list[dict[str, Any]] = []
        self.readies: list[dict[str, Any]] = []
        self.worker_beats: list[dict[str, Any]] = []
        #: `(event, data)` of each frame read from a hive's telemetry stream.
        self.telemetry: list[tuple[str, dict[str, Any]]] = []
        #: The HTTP status every beat and ready call gets (200/204 by default).
        self.answer: int | None = None
        #: Requests seen, by path, whatever they were answered.
        self.hits: dict[str, int] = {}
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._streams: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/worker-heartbeat", self._worker_beat)
        if self.generation == "seed":
            app.router.add_post("/v1/hive-heartbeat", self._hive_beat)
        else:
            app.router.add_post("/v1/hive/ready", self._ready)
        return app

    def _count(self, request: web.Request) -> web.Response | None:
        self.hits[request.path] = self.hits.get(request.path, 0) + 1
        if self.answer is not None and self.answer >= 300:
            return web.json_response({"error": "the Queen is failing"}, status=self.answer)
        return None

    async def _hive_beat(self, request: web.Request) -> web.Response:
        failing = self._count(request)
        if failing is not None:
            return failing
        self.beats.append(await request.json())
        return web.Response(status=204)

    async def _worker_beat(self, request: web.Request) -> web.Response:
        failing = self._count(request)
        if failing is not None:
            return failing
        self.worker_beats.append(await request.json())
        return web.json_response({"status": "ok", "message": "Heartbeat received"})

    async def _ready(self, request: web.Request) -> web.Response:
        failing = self._count(request)
        if failing is not None:
            return failing
        body = await request.json()
        self.readies.append(body)
        if self.subscribe:
            self._streams.append(asyncio.create_task(self._read_stream(body["hive_url"])))
        return web.json_response({"status": "ok", "message": "Hive registered"})

    async def _read_stream(self, hive_url: str) -> None:
        """As rbee's Queen: subscribe to the hive's telemetry and keep every frame."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with self._session.get(
                hive_url + "/v1/heartbeats/stream", timeout=aiohttp.ClientTimeout(total=None)
            ) as response:
                event, data = "message", ""
                async for raw in response.content:
                    line = raw.decode().rstrip("\r\n")
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data = line[5:].strip()
                    elif not line and data:
                        self.telemetry.append((event, json.loads(data)))
                        event, data = "message", ""

    # -- lifecycle ----------------------------------------------------------------------
    async def up(self) -> None:
        """Serve (again, on the same port once it had one)."""
        runner = web.AppRunner(self._app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]
        self._runner = runner

    async def down(self) -> None:
        """Stop answering: connections are refused until `up()`."""
        for task in self._streams:
            task.cancel()
        self._streams.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def close(self) -> None:
        await self.down()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        await self.up()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class ThreadedQueen:
    """A `FakeQueen` on its own event loop in a daemon thread, for sync tests. Its lists
    (`queen.q.beats`, ...) are appended on that thread; read them with `poll`."""

    def __init__(self, generation: Generation, *, subscribe: bool = True) -> None:
        self.q = FakeQueen(generation, subscribe=subscribe)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return self.q.url

    def _run(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def up(self) -> None:
        self._run(self.q.up())

    def down(self) -> None:
        self._run(self.q.down())

    def __enter__(self) -> Self:
        self._thread.start()
        self.up()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(Exception):
            self._run(self.q.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
