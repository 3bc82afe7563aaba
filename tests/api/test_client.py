"""`hive.client`: the SSE grammar as a table, and the client against a real loopback hive
(typed events, Last-Event-ID resume, reconnect, errors mapped to `hive.errors`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from hive.client import HiveClient, SseMessage, event_of, parse_sse
from hive.errors import ApiError, HiveUnreachable
from hive.model.events import Event, EventsDropped
from hive.model.ids import ObjectKey
from hive.model.status import ObjectStatus
from hive.model.views import HiveStatus, WorkerInfo
from testkit.hub import serving
from tests.api.conftest import Serve
from tests.conftest import apoll, free_port, model_yaml, worker_yaml

TOKEN = "s3cret-s3cret-s3cret"


@pytest.mark.parametrize(
    ("lines", "messages"),
    [
        (["data: a", ""], [SseMessage("a")]),
        (["id: 7", "data: {}", ""], [SseMessage("{}", "7")]),
        (["data:no-space", ""], [SseMessage("no-space")]),
        (["data:  two spaces", ""], [SseMessage(" two spaces")]),
        (["data: a", "data: b", ""], [SseMessage("a\nb")]),
        ([": connected", "", ": keep-alive", ""], []),
        (["data: a", ": comment inside", "id: 2", ""], [SseMessage("a", "2")]),
        (["id: 1", "data: a", "", "data: b", ""], [SseMessage("a", "1"), SseMessage("b")]),
        (["event: x", "retry: 10", "data: a", ""], [SseMessage("a")]),
        (["id: bad\0id", "data: a", ""], [SseMessage("a")]),
        (["data", ""], [SseMessage("")]),
        (["data: unfinished"], []),
        (["", "", "data: a", "", ""], [SseMessage("a")]),
    ],
)
def test_the_sse_grammar(lines: list[str], messages: list[SseMessage]) -> None:
    assert parse_sse(lines) == messages


def test_event_messages_become_typed() -> None:
    event = event_of(
        SseMessage('{"id":3,"time":"2026-01-01T00:00:00Z","action":"a","message":"m"}', "3")
    )
    assert isinstance(event, Event) and event.id == 3 and event.action == "a"
    gap = event_of(
        SseMessage(
            '{"action":"events_dropped","level":"warning","message":"m",'
            '"data":{"missed":45,"after_id":9}}'
        )
    )
    assert gap == EventsDropped(missed=45, after_id=9, message="m")
    assert event_of(SseMessage('{"line":"x"}')) is None


async def test_events_are_typed_and_resume_after_last_event_id(serve: Serve) -> None:
    async with serve() as (manager, url), HiveClient(url) as hive:
        base = manager.bus.last_id
        for i in range(5):
            manager.bus.emit("test_step", f"step {i}", object="Model/a")
        stream = hive.events(since=0, last_event_id=base + 2)
        got = [await asyncio.wait_for(anext(stream), 5) for _ in range(3)]
        await stream.aclose()
        assert all(isinstance(e, Event) for e in got)
        assert [(e.id, e.message) for e in got if isinstance(e, Event)] == [
            (base + 3, "step 2"),
            (base + 4, "step 3"),
            (base + 5, "step 4"),
        ]


async def test_on_open_is_called_once_subscribed(serve: Serve) -> None:
    """An event narrated from `on_open` on (nothing replayed: no since) reaches the reader:
    the benchmarks start their clocks there."""
    async with serve() as (manager, url), HiveClient(url) as hive:
        manager.bus.emit("before_open", "not replayed", object="Model/a")
        opened: list[int] = []

        def on_open() -> None:
            opened.append(manager.bus.last_id)
            manager.bus.emit("after_open", "seen", object="Model/a")

        stream = hive.events(on_open=on_open)
        first = await asyncio.wait_for(anext(stream), 5)
        await stream.aclose()
        assert len(opened) == 1
        assert isinstance(first, Event) and first.action == "after_open"
        assert first.id == opened[0] + 1


async def test_a_gap_is_reported_as_events_dropped(serve: Serve) -> None:
    async with serve(sse_max_lag=5) as (manager, url), HiveClient(url) as hive:
        start = manager.bus.last_id
        for i in range(50):
            manager.bus.emit("flood", f"event {i}")
        stream = hive.events(since=start)
        first = await asyncio.wait_for(anext(stream), 5)
        await stream.aclose()
        assert isinstance(first, EventsDropped) and first.missed == 45


@pytest.fixture
async def ending_stream() -> AsyncIterator[tuple[str, list[str | None]]]:
    """A stream that sends one event per connection and ends; the third request is a 404.
    Yields its URL and the Last-Event-ID header of each request."""
    seen: list[str | None] = []

    async def events(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Last-Event-ID"))
        if len(seen) > 2:
            return web.json_response({"error": {"code": "NotFound", "message": "gone"}}, status=404)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        n = len(seen) + 10
        body = f'{{"id":{n},"time":"2026-01-01T00:00:00Z","action":"a","message":"{n}"}}'
        await response.write(f": connected\n\nid: {n}\ndata: {body}\n\n".encode())
        return response

    app = web.Application()
    app.router.add_get("/v1/events", events)
    async with serving(app) as url:
        yield url, seen


async def test_reconnect_resumes_after_the_last_event_received(
    ending_stream: tuple[str, list[str | None]],
) -> None:
    url, seen = ending_stream
    got: list[int] = []
    opened: list[int] = []

    async def read(hive: HiveClient) -> None:
        stream = hive.events(
            last_event_id=5, reconnect=True, on_open=lambda: opened.append(len(got))
        )
        async for event in stream:
            assert isinstance(event, Event)
            got.append(event.id)

    async with HiveClient(url, reconnect_delay=0) as hive:
        with pytest.raises(ApiError) as raised:
            await read(hive)
    assert got == [11, 12]
    assert opened == [0, 1]  # each stream that opened, before its event
    assert seen == ["5", "11", "12"]
    assert raised.value.status == 404 and raised.value.message.endswith(": 404 gone")


async def test_without_reconnect_the_stream_ends_with_hives(
    ending_stream: tuple[str, list[str | None]],
) -> None:
    url, seen = ending_stream
    async with HiveClient(url) as hive:
        got = [e async for e in hive.events()]
    assert [e.id for e in got if isinstance(e, Event)] == [11]
    assert seen == [None]


async def test_errors_map_to_hives_errors(serve: Serve) -> None:
    async with serve(token=TOKEN) as (_manager, url):
        async with HiveClient(url) as hive:
            with pytest.raises(ApiError) as unauthorized:
                await hive.delete_model("nope")
            assert unauthorized.value.status == 401
            with pytest.raises(ApiError) as unauthorized:
                await hive.model("nope")  # reads need the token too
            assert unauthorized.value.status == 401
            assert unauthorized.value.reason == "Unauthorized"
            assert (await hive.health())["status"] == "ok"  # but /health
        async with HiveClient(url, token=TOKEN) as hive:
            with pytest.raises(ApiError) as missing:
                await hive.model("nope")
            assert missing.value.status == 404 and missing.value.reason == "NotFound"
            assert missing.value.message.startswith(f"{url}/v1/models/nope: 404 ")
            with pytest.raises(ApiError) as refused:
                await hive.restart_worker("nope")
            assert refused.value.status == 404  # past the token check
            assert (await hive.health())["status"] == "ok"
    port = free_port()
    async with HiveClient(f"http://127.0.0.1:{port}") as hive:
        with pytest.raises(HiveUnreachable) as unreachable:
            await hive.status()
    assert unreachable.value.message == (
        f"cannot reach hive at http://127.0.0.1:{port}: [Errno 111] Connection refused "
        "(is `hive serve` running?)"
    )


async def test_views_come_back_typed(serve: Serve, tiny_model: Path) -> None:
    """Each view is read into hive/model/views.py's types, hive's own types inside."""
    async with serve() as (manager, url):
        desired = manager.settings.desired[0]
        (desired / "m.yaml").write_text(
            model_yaml("m", f"file:{tiny_model}")
            + "---\n"
            + worker_yaml("w", "no-such-model", runtime="llama-cpp")
        )
        model_key, worker_key = ObjectKey.parse("Model/m"), ObjectKey.parse("Worker/w")
        await apoll(
            lambda: (
                (s := manager.statuses.get(model_key)) is not None
                and s.phase == "Available"
                and manager.statuses.get(worker_key) is not None
            ),
            what="the model Available and the worker looked at",
        )
        async with HiveClient(url) as hive:
            status = await hive.status()
            assert isinstance(status, HiveStatus) and status.synced
            assert status.objects["Model"] == {"Available": 1}
            (model,) = await hive.models()
            assert model == await hive.model("m")
            assert isinstance(model.status, ObjectStatus) and model.status.phase == "Available"
            assert model.observed is not None and model.observed.metadata is not None
            assert model.observed.metadata.architecture == "llama"
            assert model.source is not None and model.source.file == str(desired / "m.yaml")
            (worker,) = await hive.workers()
            assert isinstance(worker, WorkerInfo) and worker.status.phase == "Pending"
            assert worker.observed is not None and worker.observed.pid is None
            assert (await hive.worker("w")).observed.log_tail == []  # type: ignore[union-attr]
            runtimes = await hive.runtimes()
            assert [e["id"] for e in runtimes.items][:1] == ["llama-cpp"]
