"""The HTTP API on a real loopback server: errors as JSON, status, SSE semantics (ids,
Last-Event-ID resume, object filter, keep-alive comments, gap markers), the worker routes
without a process, and /metrics. Workers with processes: tests/e2e/test_workers.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hive.model.ids import ObjectKey
from hive.model.status import ConditionType
from tests.api.conftest import Serve
from tests.conftest import apoll, install_scripted_runtime, model_yaml, worker_yaml

TOKEN = "s3cret-s3cret-s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def read_frames(
    response: aiohttp.ClientResponse, *, count: int, limit: float = 5.0
) -> list[dict[str, Any] | str]:
    """Parse SSE frames: a dict per data frame (with its id), a string per comment."""
    frames: list[dict[str, Any] | str] = []
    event: dict[str, Any] = {}

    async def pump() -> None:
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith(":"):
                frames.append(line)
            elif line.startswith("id: "):
                event["sse_id"] = int(line[4:])
            elif line.startswith("data: "):
                frames.append({**json.loads(line[6:]), **event})
                event.clear()
            if len([f for f in frames if isinstance(f, dict)]) >= count:
                return

    await asyncio.wait_for(pump(), limit)
    return frames


def data(frames: list[dict[str, Any] | str]) -> list[dict[str, Any]]:
    return [f for f in frames if isinstance(f, dict)]


async def test_health_and_json_errors(serve: Serve) -> None:
    async with serve() as (_, url), aiohttp.ClientSession() as http:
        async with http.get(url + "/health") as r:
            assert r.status == 200
            assert (await r.json())["status"] == "ok"
        async with http.get(url + "/v1/models/nope") as r:
            assert r.status == 404
            body = await r.json()
            assert body["error"]["code"] == "NotFound"
            assert "nope" in body["error"]["message"]
        async with http.get(url + "/v1/models/Bad_Name") as r:
            assert r.status == 422
            assert "not a valid name" in (await r.json())["error"]["message"]
        async with http.get(url + "/v1/nothing-here") as r:
            assert r.status == 404
            assert (await r.json())["error"]["message"] == "GET /v1/nothing-here: Not Found"
        async with http.get(url + "/v1/events", headers={"Last-Event-ID": "x"}) as r:
            assert r.status == 422
        async with http.get(url + "/v1/events?since=-5") as r:
            assert r.status == 422
            assert "an integer from 0 to" in (await r.json())["error"]["message"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/health", {"GET", "HEAD"}),
        ("POST", "/v1/models/m", {"GET", "HEAD", "DELETE"}),
        ("DELETE", "/v1/workers/w/restart", {"POST"}),
        ("TRACE", "/v1/events", {"GET", "HEAD"}),
        ("OPTIONS", "/metrics", {"GET", "HEAD"}),
    ],
)
async def test_a_405_names_the_methods_the_route_serves(
    serve: Serve, method: str, path: str, allow: set[str]
) -> None:
    # RFC 9110 15.5.6: a 405 must carry Allow; the JSON error body is kept.
    async with (
        serve(token=TOKEN) as (_, url),
        aiohttp.ClientSession() as http,
        http.request(method, url + path, headers=AUTH) as r,
    ):
        assert r.status == 405
        assert set(r.headers["Allow"].split(",")) == allow
        assert (await r.json())["error"]["code"] == "MethodNotAllowed"


async def test_a_401_names_a_long_path_bounded(serve: Serve) -> None:
    name = "w" * 5000
    async with (
        serve(token=TOKEN) as (_, url),
        aiohttp.ClientSession() as http,
        http.post(f"{url}/v1/workers/{name}/restart") as r,
    ):
        assert r.status == 401
        message = (await r.json())["error"]["message"]
        assert message.startswith("POST /v1/workers/www")
        assert "…" in message and len(message) < 400, len(message)


@pytest.mark.parametrize(
    ("query", "last_event_id", "bad"),
    [
        ("since=-1", "0", "since"),  # the header wins, but a bad since is still refused
        ("since=abc", "3", "since"),
        ("since=0", "-1", "Last-Event-ID"),
        ("since=0", "x", "Last-Event-ID"),
        ("", "", "Last-Event-ID"),  # empty is not an integer (absent is)
        ("since=", None, "since"),
        ("", "+1", "Last-Event-ID"),  # int() would take these three
        ("", "1_0", "Last-Event-ID"),
        ("", "\u0661", "Last-Event-ID"),
        ("", "9223372036854775808", "Last-Event-ID"),  # past int64
        ("", "9" * 5000, "Last-Event-ID"),  # past int()'s digit limit: still one short line
        ("since=9223372036854775808", None, "since"),
    ],
)
async def test_since_and_last_event_id_are_both_checked(
    serve: Serve, query: str, last_event_id: str | None, bad: str
) -> None:
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    async with (
        serve() as (_, url),
        aiohttp.ClientSession() as http,
        http.get(f"{url}/v1/events?{query}", headers=headers) as r,
    ):
        assert r.status == 422
        message = (await r.json())["error"]["message"]
    assert message.startswith(bad)
    assert len(message) < 400


async def test_the_largest_event_id_is_a_cursor_from_an_earlier_run(serve: Serve) -> None:
    async with serve() as (manager, url), aiohttp.ClientSession() as http:
        manager.bus.emit("test_step", "kept", object="Model/a")
        headers = {"Last-Event-ID": str(2**63 - 1)}
        async with http.get(url + "/v1/events?object=Model/a", headers=headers) as r:
            assert r.status == 200
            frames = data(await read_frames(r, count=1))
        assert frames[0]["message"] == "kept"  # started over, as a cursor from an earlier run


async def test_status_reports_sources_and_counts(serve: Serve) -> None:
    async with serve() as (manager, url), aiohttp.ClientSession() as http:
        async with http.get(url + "/v1/status") as r:
            body = await r.json()
        assert body["synced"] is True
        source, api, queen = body["sources"]
        assert (api["name"], api["kind"], api["location"]) == ("api", "http", "/v1/desired/api")
        assert (queen["name"], queen["synced"], queen["records"]) == ("queen", True, 0)
        assert source["name"] == f"dir:{manager.settings.desired[0]}"
        assert source["synced"] is True
        assert source["last_sync_time"] is not None
        assert source["errors"] == []
        assert body["objects"] == {"Model": {}, "Worker": {}}
        assert body["workers"] == {
            "workers_running": 0,
            "workers_starting": 0,
            "workers_stopping": 0,
            "workers_total": 0,
        }


async def test_events_have_ids_and_resume_after_last_event_id(serve: Serve) -> None:
    async with serve() as (manager, url), aiohttp.ClientSession() as http:
        base = manager.bus.last_id
        for i in range(5):
            manager.bus.emit("test_step", f"step {i}", object="Model/a")
        headers = {"Last-Event-ID": str(base + 2)}
        async with http.get(url + "/v1/events", headers=headers) as r:
            assert r.headers["Content-Type"] == "text/event-stream"
            frames = data(await read_frames(r, count=3))
        assert [f["sse_id"] for f in frames] == [base + 3, base + 4, base + 5]
        assert [f["message"] for f in frames] == ["step 2", "step 3", "step 4"]
        assert all(f["id"] == f["sse_id"] for f in frames)


async def test_events_filter_by_object(serve: Serve) -> None:
    async with serve() as (manager, url), aiohttp.ClientSession() as http:
        for name in ("a", "b", "a", "b"):
            manager.bus.emit("test_step", name, object=f"Model/{name}")
        async with http.get(url + "/v1/events?since=0&object=Model/b") as r:
            frames = data(await read_frames(r, count=2))
        assert [f["object"] for f in frames] == ["Model/b", "Model/b"]


async def test_live_events_and_keepalive_comments(serve: Serve) -> None:
    async with serve(sse_keepalive=0.05) as (manager, url), aiohttp.ClientSession() as http:
        async with http.get(url + "/v1/events") as r:
            manager.bus.emit("later", "emitted after the client connected")
            frames = await read_frames(r, count=1)
            more = await r.content.readuntil(b"\n\n")
            more += await r.content.readuntil(b"\n\n")
        assert data(frames)[0]["action"] == "later"
        assert b": keep-alive" in more


async def test_a_slow_client_gets_a_gap_marker_not_a_stalled_loop(serve: Serve) -> None:
    async with serve(sse_max_lag=5) as (manager, url), aiohttp.ClientSession() as http:
        start = manager.bus.last_id
        for i in range(50):
            manager.bus.emit("flood", f"event {i}")
        async with http.get(url + f"/v1/events?since={start}") as r:
            frames = data(await read_frames(r, count=6))
        gap, *rest = frames
        assert gap["action"] == "events_dropped"
        assert "sse_id" not in gap  # resuming must continue after the last real event
        assert gap["data"]["missed"] == 45
        assert [f["message"] for f in rest] == [f"event {i}" for i in range(45, 50)]


async def test_delete_refuses_a_declared_model_and_needs_the_token(
    serve: Serve, tiny_model: Path
) -> None:
    async with serve(token=TOKEN) as (manager, url), aiohttp.ClientSession() as http:
        desired = manager.settings.desired[0]
        (desired / "m.yaml").write_text(
            "apiVersion: hive/v1\nkind: Model\nmetadata: {name: m}\n"
            f"spec: {{source: 'file:{tiny_model}'}}\n"
        )
        key = ObjectKey.parse("Model/m")
        await apoll(
            lambda: (s := manager.statuses.get(key)) is not None and s.phase == "Available",
            what="Model/m to be Available",
        )

        async with http.delete(url + "/v1/models/m") as r:
            assert r.status == 401
            assert "Bearer" in (await r.json())["error"]["message"]
        auth = AUTH
        async with http.delete(url + "/v1/models/m", headers=auth) as r:
            assert r.status == 409
            assert "state: absent" in (await r.json())["error"]["message"]
        async with http.delete(url + "/v1/models/ghost", headers=auth) as r:
            assert r.status == 404
        assert (manager.catalog.root / "m" / "model.gguf").exists()
        async with http.get(url + "/v1/models/m") as r:  # reads need it too
            assert r.status == 401
        async with http.get(url + "/v1/models/m", headers=auth) as r:
            assert r.status == 200


async def test_delete_of_a_model_a_worker_serves_is_refused_unless_forced(
    serve: Serve, tiny_model: Path, worker_ports: range
) -> None:
    """409 naming the workers; `?force=true` deletes, and the worker is stopped at once
    (not at the resync, 10 minutes away), told why, and starts again when it is back."""
    settings = {
        "token": TOKEN,
        "worker_ports": f"{worker_ports.start}-{worker_ports.stop - 1}",
        "gpu_probe": "none",
        "health_start_interval": 0.05,
        "resync_interval": 600,
        "stop_workers_on_exit": True,
    }
    async with serve(**settings) as (manager, url), aiohttp.ClientSession() as http:
        install_scripted_runtime(manager.settings.home)
        desired = manager.settings.desired[0]
        (desired / "m.yaml").write_text(model_yaml("m", f"file:{tiny_model}"))
        (desired / "w.yaml").write_text(worker_yaml("w", "m"))
        worker = ObjectKey.parse("Worker/w")

        def phase_of(key: ObjectKey) -> str | None:
            status = manager.statuses.get(key)
            return status.phase if status else None

        await apoll(lambda: phase_of(worker) == "Running", what="Worker/w to run")
        pid = manager.workers.instances["w"].state.pid
        (desired / "m.yaml").unlink()  # no record wants the model: its files stay
        await apoll(
            lambda: manager.store.desired(ObjectKey.parse("Model/m")) is None,
            what="the Model record to go",
        )
        auth = {"Authorization": f"Bearer {TOKEN}"}

        async with http.delete(url + "/v1/models/m", headers=auth) as r:
            assert r.status == 409
            error = (await r.json())["error"]
        assert error["code"] == "ModelInUse"
        assert error["workers"] == ["w"]
        assert "remove or stop workers w first, or DELETE with ?force=true" in error["message"]
        assert (manager.catalog.root / "m" / "model.gguf").exists()
        async with http.delete(url + "/v1/models/m?force=maybe", headers=auth) as r:
            assert r.status == 422
        assert manager.workers.instances["w"].state.pid == pid  # untouched
        assert phase_of(worker) == "Running"

        async with http.delete(url + "/v1/models/m?force=true", headers=auth) as r:
            assert r.status == 200
            body = await r.json()
        assert body["deleted"] == "m"
        assert body["workers"] == ["w"]
        assert not (manager.catalog.root / "m").exists()
        await apoll(lambda: "w" not in manager.workers.instances, what="the worker to stop")
        status = manager.statuses[worker]
        assert status.phase == "Pending"
        ready = status.condition(ConditionType.READY)
        assert ready is not None
        assert ready.reason == "ModelGone"
        assert "model m is gone: deleted by API request" in ready.message
        events, _ = manager.bus.read(0, limit=10_000)
        (gone,) = [e for e in events if e.action == "model_gone"]
        assert gone.object == "Model/m"
        assert gone.message.startswith("Model m is gone: deleted by API request")
        stopped = [e.message for e in events if e.object == worker and "gone" in e.message]
        assert any("model m is gone: deleted by API request" in m for m in stopped), stopped
        assert not any("record changed" in e.message for e in events if e.object == worker)

        # The model is back: the worker starts again.
        (desired / "m.yaml").write_text(model_yaml("m", f"file:{tiny_model}"))
        await apoll(lambda: phase_of(worker) == "Running", what="Worker/w to run again")
        assert manager.workers.instances["w"].state.pid != pid


async def test_worker_routes_for_a_worker_without_a_process(serve: Serve) -> None:
    # A declared Worker whose Model does not exist stays Pending: no process is started.
    async with serve(token=TOKEN) as (manager, url), aiohttp.ClientSession(headers=AUTH) as http:
        desired = manager.settings.desired[0]
        (desired / "w.yaml").write_text(worker_yaml("w", "no-such-model", runtime="llama-cpp"))
        key = ObjectKey.parse("Worker/w")
        await apoll(
            lambda: (s := manager.statuses.get(key)) is not None and s.phase == "Pending",
            what="Worker/w to be Pending",
        )
        async with http.get(url + "/v1/workers") as r:
            assert r.status == 200
            (item,) = (await r.json())["items"]
        assert item["name"] == "w"
        assert item["spec"]["model"] == "no-such-model"
        assert item["observed"]["status"] == "starting"  # rbee's word for Pending
        assert "pid" not in item["observed"]
        assert "ModelNotReady" in item["status"]["message"]
        async with http.get(url + "/v1/workers/w") as r:
            assert r.status == 200
            assert (await r.json())["observed"]["log_tail"] == []  # nothing ran yet
        async with http.get(url + "/metrics") as r:
            # A Pending worker has its series too, as it had before issue 14's split.
            assert 'hive_worker_restarts_total{worker="w"} 0.0' in await r.text()
        async with http.get(url + "/v1/workers/w/logs") as r:
            assert r.status == 200
            assert await r.text() == ""
        auth = AUTH
        wrong = {"Authorization": "Bearer not-the-token-of-this-hive"}
        async with http.post(url + "/v1/workers/w/restart", headers=wrong) as r:
            assert r.status == 401  # the token is checked first
        async with http.post(url + "/v1/workers/w/restart", headers=auth) as r:
            assert r.status == 409
            assert "no running process" in (await r.json())["error"]["message"]
        async with http.post(url + "/v1/workers/ghost/restart", headers=auth) as r:
            assert r.status == 404
        async with http.get(url + "/v1/workers/ghost/logs") as r:
            assert r.status == 404
            assert "neither declared nor running" in (await r.json())["error"]["message"]
        async with http.get(url + "/v1/workers/w/logs?tail=-1") as r:
            assert r.status == 422


async def test_runtimes_lists_the_built_ins_and_the_broken_entries(serve: Serve) -> None:
    async with serve() as (manager, url), aiohttp.ClientSession() as http:
        broken = manager.settings.home / "workers" / "broken"
        broken.mkdir(parents=True)
        (broken / "metadata.json").write_text('{"id": "broken", "argv": ["{nope}"]}')
        async with http.get(url + "/v1/runtimes") as r:
            assert r.status == 200
            body = await r.json()
        assert [e["id"] for e in body["items"]][:2] == ["llama-cpp", "llama-server"]
        assert all(e["origin"] == "built-in" for e in body["items"])
        (error,) = body["errors"]
        assert error["path"] == str(broken / "metadata.json")
        assert "{nope}" in error["message"]


async def test_metrics_are_prometheus_text(serve: Serve) -> None:
    async with serve() as (manager, url), aiohttp.ClientSession() as http:
        manager.bus.emit("test_step", "one more event")
        emitted = manager.bus.last_id
        async with http.get(url + "/metrics") as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await r.text()
        assert "# TYPE hive_objects gauge" in text
        assert "hive_queue_depth " in text
        samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line[:1] != "#")
        assert float(samples["hive_events_total"]) >= emitted
