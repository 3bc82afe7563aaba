"""The `/v1/events` stream over a real loopback connection: what a client that went away
costs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
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


@dataclass
class Writer:
    """A stream served by `stream_frames` from a source the test feeds."""

    url: str
    #: What the source answers next: bytes, or None (the stream is over).
    feed: asyncio.Queue[bytes | None]
    stopping: list[bool]
    ended: asyncio.Event
    transports: list[asyncio.BaseTransport]


@pytest.fixture
async def writer() -> AsyncIterator[Writer]:
    feed: asyncio.Queue[bytes | None] = asyncio.Queue()
    stopping: list[bool] = []
    ended = asyncio.Event()
    transports: list[asyncio.BaseTransport] = []

    async def next_frames(within: float) -> bytes | None:
        try:
            return await asyncio.wait_for(feed.get(), within)
        except TimeoutError:
            return b""

    async def handler(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        transports.append(request.transport)
        try:
            return await sse.stream_frames(
                request,
                next_frames,
                keepalive=0.05,
                stopped=lambda: bool(stopping),
                first=b": hello\n\n",
            )
        finally:
            ended.set()

    app = web.Application()
    app.router.add_get("/s", handler)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Writer(f"http://127.0.0.1:{port}/s", feed, stopping, ended, transports)
    finally:
        await runner.cleanup()


async def test_the_writer_sends_keepalives_while_idle_and_ends_with_its_source(
    writer: Writer,
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(writer.url) as response,
    ):
        assert response.headers["Content-Type"] == "text/event-stream"
        assert await response.content.readline() == b": hello\n"
        assert await response.content.readline() == b"\n"
        # Nothing came within the keep-alive: a comment keeps the connection open.
        assert await response.content.readline() == b": keep-alive\n"
        assert await response.content.readline() == b"\n"
        writer.feed.put_nowait(b"data: one\n\n")
        while (line := await response.content.readline()) != b"data: one\n":
            assert line in {b": keep-alive\n", b"\n"}
        writer.feed.put_nowait(None)  # the source is over: the answer ends
        rest = await asyncio.wait_for(response.content.read(), 10)
        assert set(rest.split(b"\n")) <= {b": keep-alive", b""}
    await asyncio.wait_for(writer.ended.wait(), 10)


async def test_the_writer_ends_when_stopped_after_its_source_wakes(writer: Writer) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(writer.url) as response,
    ):
        assert await response.content.readline() == b": hello\n"
        writer.stopping.append(True)  # the source wakes at its keep-alive: the answer ends
        rest = await asyncio.wait_for(response.content.read(), 10)
        assert set(rest.split(b"\n")) <= {b": keep-alive", b""}
    await asyncio.wait_for(writer.ended.wait(), 10)


async def test_the_writer_ends_quietly_when_the_client_went_away(
    writer: Writer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with (
        aiohttp.ClientSession() as session,
        session.get(writer.url) as response,
    ):
        assert await response.content.readline() == b": hello\n"
    (transport,) = writer.transports
    await apoll(transport.is_closing, what="the server to see the disconnect")
    writer.feed.put_nowait(b"data: lost\n\n")
    await asyncio.wait_for(writer.ended.wait(), 10)  # without writing to a closed socket
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == []


async def test_a_followed_file_ends_when_hive_stops_not_at_its_next_poll(
    tmp_path: Path,
) -> None:
    bus = Bus(clock=SystemClock())
    log = tmp_path / "worker.log"
    log.write_bytes(b"old\n")
    ended = asyncio.Event()

    async def follow(request: web.Request) -> web.StreamResponse:
        try:
            return await sse.stream_file_lines(
                request,
                path=log,
                start=log.stat().st_size,
                initial=["old"],
                stopped=bus.until_closed,
                interval=3600,  # a poll an hour apart: only the close can end it in time
                keepalive=3600,
            )
        finally:
            ended.set()

    app = web.Application()
    app.router.add_get("/logs", follow)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/logs") as response,
        ):
            assert await response.content.readline() == b'data: {"line":"old"}\n'
            bus.close()
            await asyncio.wait_for(ended.wait(), 10)
            assert await asyncio.wait_for(response.content.read(), 10) == b"\n"
    finally:
        await runner.cleanup()
