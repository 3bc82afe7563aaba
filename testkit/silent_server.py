"""A loopback file server that goes silent at one stage of a download and stays so, for the
tests of cancellation: it holds the request open, sending nothing more, until the client
lets go of the connection (or the server stops), and counts both.

Stages: ``"head"`` (the HEAD is never answered), ``"headers"`` (HEAD answered; the GET's
response never starts), ``"body"`` (the GET sends its headers and the first `sent` bytes,
then nothing), ``"retry"`` (every GET is answered 503 with ``Retry-After: 300``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from testkit.hub import serving

Stage = Literal["head", "headers", "body", "retry"]


@dataclass
class Silent:
    """What the server saw; `url` is the file's."""

    url: str = ""
    #: Requests held open now.
    holding: int = 0
    #: Held requests whose client closed the connection.
    gone: int = 0
    #: GET requests received.
    gets: int = 0
    stopping: bool = False


@contextlib.asynccontextmanager
async def silent_server(
    body: bytes, *, stage: Stage, sent: int = 64 * 1024
) -> AsyncIterator[Silent]:
    """Serve `body` as `/m.gguf` (HEAD: its size, no ETag), silent from `stage` on."""
    seen = Silent()

    async def hold(request: web.Request) -> web.StreamResponse:
        seen.holding += 1
        try:
            while not seen.stopping:
                transport = request.transport
                if transport is None or transport.is_closing():
                    seen.gone += 1
                    break
                await asyncio.sleep(0.01)  # the server watching its socket, not a test wait
        finally:
            seen.holding -= 1
        raise asyncio.CancelledError  # end quietly: there is no one left to answer

    async def get(request: web.Request) -> web.StreamResponse:
        if request.method == "HEAD":
            if stage == "head":
                return await hold(request)
            return web.Response(headers={"Content-Length": str(len(body))})
        seen.gets += 1
        if stage == "headers":
            return await hold(request)
        if stage == "retry":
            return web.Response(status=503, headers={"Retry-After": "300"})
        response = web.StreamResponse()
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body[:sent])
        return await hold(request)

    app = web.Application()
    app.router.add_route("*", "/m.gguf", get)
    async with serving(app) as base:
        seen.url = f"{base}/m.gguf"
        try:
            yield seen
        finally:
            seen.stopping = True
