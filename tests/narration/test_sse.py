"""The `/v1/events` stream over a real loopback connection: what a client that went away
costs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from hive.core.clock import SystemClock
from hive.narration import sse
from hive.narration.bus import Bus, Subscription
from tests.conftest import apoll


@dataclass
class Stream:
    url: str
    bus: Bus
    #: Set when the handler returns.
    ended: asyncio.Event
    #: The server side of each client's connection.
    transports: list[asyncio.BaseTransport]


@pytest.fixture
async def stream() -> AsyncIterator[Stream]:
    bus = Bus(clock=SystemClock())
    ended = asyncio.Event()
    transports: list[asyncio.BaseTransport] = []

    async def events(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        transports.append(request.transport)
        try:
            return await sse.stream_subscription(
                request, Subscription(bus, after=None), keepalive=30
            )
        finally:
            ended.set()

    app = web.Application()
    app.router.add_get("/v1/events", events)
    # As `hive serve` runs it (aiohttp's default: a handler is not cancelled when its client
    # goes away; aiohttp's TestServer would cancel it).
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Stream(f"http://127.0.0.1:{port}/v1/events", bus, ended, transports)
    finally:
        await runner.cleanup()


async def test_events_reach_a_connected_client(stream: Stream) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(stream.url) as response,
    ):
        assert await response.content.readline() == b": connected\n"
        await response.content.readline()
        stream.bus.emit("hello", "a first event")
        assert (await response.content.readline()).startswith(b"id: 1")
        assert b'"action":"hello"' in await response.content.readline()


async def test_nothing_is_serialized_for_a_client_that_went_away(
    stream: Stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    framed: list[Any] = []
    real = sse.event_frame

    def counting(item: Any) -> bytes:
        framed.append(item)
        return real(item)

    monkeypatch.setattr(sse, "event_frame", counting)
    async with (
        aiohttp.ClientSession() as session,
        session.get(stream.url) as response,
    ):
        assert await response.content.readline() == b": connected\n"
    # The client is gone; hive narrates a burst, as when 100 workers stop.
    (transport,) = stream.transports
    await apoll(transport.is_closing, what="the server to see the disconnect")
    assert not stream.ended.is_set()  # the handler waits for the next batch
    for i in range(300):
        stream.bus.emit("worker_proc_del_start", f"event {i}")
    await asyncio.wait_for(stream.ended.wait(), 10)
    assert framed == []
