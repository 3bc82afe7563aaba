"""The link to the Queen, both generations, against fake Queens on loopback
(testkit/queen.py): discovery by `?queen_url=` (never a beat before), the seed's push and
its capability changes, rbee's ready callback retried until the Queen is up, the telemetry
stream it then subscribes to, a Queen that goes down and comes back, and what /v1/status
and /metrics show of it."""

from __future__ import annotations

import asyncio
import json
import shutil
import stat
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from aiohttp.test_utils import TestServer

from hive.api.app import create_app
from hive.observers.runtimes import built_in_entries
from hive.runtime.manager import Manager
from hive.settings import Settings
from testkit.queen import FakeQueen
from tests.conftest import apoll, free_port, install_scripted_runtime, model_yaml, worker_yaml

TOKEN = "s3cret-s3cret-s3cret"
#: The defaults' behaviour on a fast clock.
FAST: dict[str, Any] = {
    "queen_heartbeat_interval": 0.1,
    "queen_backoff_cap": 0.2,
    "queen_ready_delays": "0,0.1,0.1,0.1,0.1",
    "queen_telemetry_interval": 0.05,
    "system_sample_interval": 0.05,
    "queen_timeout": 2.0,
}

Serve = Callable[..., AbstractAsyncContextManager[tuple[Manager, str]]]


@pytest.fixture
def hive(tmp_path: Path) -> Serve:
    """`async with hive(**settings) as (manager, url)`: an in-process hive served on a port
    its settings know (the ready callback advertises it), with FAST settings."""

    @asynccontextmanager
    async def run(**settings: Any) -> AsyncIterator[tuple[Manager, str]]:
        desired = tmp_path / "desired"
        desired.mkdir(exist_ok=True)
        port = free_port()
        manager = Manager(
            Settings(
                home=tmp_path / "home",
                desired=(desired,),
                console=False,
                port=port,
                gpu_probe="none",
                stop_workers_on_exit=True,
                **{**FAST, **settings},
            )
        )
        server = TestServer(create_app(manager), host="127.0.0.1", port=port)
        await server.start_server()
        try:
            yield manager, f"http://127.0.0.1:{port}"
        finally:
            await server.close()

    return run


def link_tasks() -> list[str]:
    """The Queen link's running tasks, by name."""
    names = {"queen-push", "queen-ready"}
    return sorted(t.get_name() for t in asyncio.all_tasks() if t.get_name() in names)


def size_gb(path: Path) -> float:
    return round(path.stat().st_size / 1e9, 2)


async def discover(
    url: str, queen_url: str, *, token: str | None = None, path: str = "/v1/capabilities"
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as http,
        http.get(url + path, params={"queen_url": queen_url}, headers=headers) as r,
    ):
        return r.status, await r.json()


def actions(manager: Manager, prefix: str = "queen_") -> list[str]:
    events, _ = manager.bus.read(0, limit=10_000)
    return [e.action for e in events if e.action.startswith(prefix)]


async def test_no_beat_before_discovery_then_the_seed_push_with_its_payload(
    hive: Serve, tmp_path: Path
) -> None:
    async with FakeQueen("seed") as queen, hive() as (manager, url):
        # A hive left alone for several heartbeat intervals never calls a Queen on its own.
        def running_for(seconds: float) -> bool:
            sample = manager.system.latest
            return (
                sample is not None
                and (sample.taken_at - manager.started_at).total_seconds() > seconds
            )

        await apoll(lambda: running_for(5 * FAST["queen_heartbeat_interval"]), what="hive to run")
        assert link_tasks() == []  # no beat is even tried (the port is unknown to hive anyway)
        assert manager.queen.push.view().state == "idle"
        assert manager.queen.ready.view().state == "idle"
        assert manager.queen.view().url is None
        assert (await status_queen(url))["push"] == {
            "state": "idle",
            "successes": 0,
            "failures": 0,
            "last_success": None,
            "last_failure": None,
            "last_failure_reason": None,
        }

        code, caps = await discover(url, queen.url)
        assert code == 200
        assert [d["id"] for d in caps["devices"]] == ["CPU-0"]
        await apoll(lambda: len(queen.beats) >= 2, what="two push beats")
        beat = queen.beats[0]
        assert list(beat) == ["hive_id", "timestamp", "monitor_data", "capability_changes"]
        assert beat["hive_id"] == manager.settings.hive_id
        assert beat["timestamp"].endswith("Z")
        monitor = beat["monitor_data"]
        assert list(monitor) == [
            "cpu_usage_percent",
            "ram_used_gb",
            "ram_total_gb",
            "uptime_seconds",
            "devices",
        ]
        assert 0 < monitor["ram_used_gb"] < monitor["ram_total_gb"]
        assert monitor["devices"] == []  # gpu_probe none
        assert beat["capability_changes"] is None  # nothing to offer yet
        # The seed Queen has no /v1/hive/ready: that protocol is marked unsupported, once.
        await apoll(lambda: manager.queen.ready.state == "unsupported", what="ready unsupported")
        assert actions(manager).count("queen_protocol_unsupported") == 1
        assert "queen_discovered" in actions(manager)
        saved = json.loads((tmp_path / "home" / "state" / "queen.json").read_text())
        assert saved["queen_url"] == queen.url
        mode = (tmp_path / "home" / "state" / "queen.json").stat().st_mode
        assert stat.S_IMODE(mode) == 0o600


async def test_capability_changes_follow_models_and_workers_since_the_acknowledged_beat(
    hive: Serve, tmp_path: Path, tiny_model: Path, worker_ports: range
) -> None:
    install_scripted_runtime(tmp_path / "home")
    desired = tmp_path / "desired"
    desired.mkdir()
    size = size_gb(tiny_model)
    async with (
        FakeQueen("seed") as queen,
        hive(worker_ports=f"{worker_ports.start}-{worker_ports.stop - 1}") as (_, url),
    ):
        await discover(url, queen.url)
        await apoll(lambda: queen.beats, what="a first beat")
        (desired / "model.yaml").write_text(model_yaml("tiny", f"file:{tiny_model}"))

        def with_changes() -> list[dict[str, Any]]:
            return [b["capability_changes"] for b in queen.beats if b["capability_changes"]]

        changes = await apoll(with_changes, within=20, what="a beat with the model added")
        assert changes[0] == {
            "models": [{"action": "added", "model_id": "tiny", "size_gb": size}],
            "workers": [],
        }
        # Once acknowledged, the next beats carry no change.
        seen = len(queen.beats)
        await apoll(lambda: len(queen.beats) >= seen + 2, what="two more beats")
        assert all(b["capability_changes"] is None for b in queen.beats[seen:])

        (desired / "worker.yaml").write_text(worker_yaml("w", "tiny"))
        await apoll(lambda: len(with_changes()) >= 2, within=20, what="the worker added")
        assert with_changes()[1]["workers"] == [
            {"action": "added", "model_id": "tiny", "size_gb": size}
        ]
        (desired / ".hive-allow-empty").touch()
        (desired / "worker.yaml").unlink()
        (desired / "model.yaml").write_text(
            model_yaml("tiny", f"file:{tiny_model}", state="absent")
        )

        def removed() -> bool:
            return any(
                c["models"] == [{"action": "removed", "model_id": "tiny", "size_gb": size}]
                for c in with_changes()
            ) and any(
                c["workers"] and c["workers"][0]["action"] == "removed" for c in with_changes()
            )

        await apoll(removed, within=20, what="the model and the worker removed")


async def test_a_queen_that_goes_down_costs_one_event_and_beats_resume(hive: Serve) -> None:
    async with FakeQueen("seed") as queen, hive() as (manager, url):
        await discover(url, queen.url)
        await apoll(lambda: len(queen.beats) >= 1, what="a first beat")
        await queen.down()
        await apoll(lambda: manager.queen.push.failures >= 3, what="three failed beats")
        assert actions(manager).count("queen_heartbeat_failed") == 1
        link = await status_queen(url)
        assert link["push"]["state"] == "failing"
        assert "Connection refused" in link["push"]["last_failure_reason"]
        assert link["push"]["last_failure"] is not None

        await queen.up()  # the same port
        seen = len(queen.beats)
        await apoll(lambda: len(queen.beats) >= seen + 2, within=10, what="beats to resume")
        assert actions(manager).count("queen_heartbeat_restored") == 1
        assert actions(manager).count("queen_heartbeat_failed") == 1
        link = await status_queen(url)
        assert link["push"]["state"] == "ok"
        assert link["push"]["last_success"] > link["push"]["last_failure"]

        queen.answer = 503  # answering, but failing
        await apoll(lambda: manager.queen.push.state == "failing", what="a 503 to count")
        assert actions(manager).count("queen_heartbeat_failed") == 2
        event = [
            e for e in manager.bus.read(0, limit=10_000)[0] if e.action == "queen_heartbeat_failed"
        ]
        assert "503" in event[-1].message


async def status_queen(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(url + "/v1/status") as r:
        body = await r.json()
    queen: dict[str, Any] = body["queen"]
    return queen


async def test_ready_is_retried_until_the_queen_is_up_then_it_subscribes(hive: Serve) -> None:
    queen = FakeQueen("current")
    await queen.up()
    await queen.down()  # a port that refuses, then serves
    try:
        async with hive(queen_ready_delays="0,0.3,0.3,0.3,0.3") as (manager, url):
            await discover(url, queen.url)
            await apoll(lambda: manager.queen.ready.failures >= 1, what="a refused ready")
            await queen.up()
            await apoll(lambda: queen.readies, what="a ready call")
            assert queen.readies[0] == {"hive_id": manager.settings.hive_id, "hive_url": url}
            assert "queen_ready_failed" in actions(manager)
            # The Queen has the call before hive has its answer: the event follows that.
            await apoll(lambda: "queen_ready_sent" in actions(manager), what="queen_ready_sent")
            await apoll(lambda: len(queen.telemetry) >= 3, what="3 telemetry frames")
            event, frame = queen.telemetry[0]
            assert event == "heartbeat"
            assert list(frame) == ["type", "hive_id", "hive_info", "timestamp", "workers"]
            assert frame["type"] == "telemetry"
            assert frame["hive_info"] == {
                "id": manager.settings.hive_id,
                "hostname": "127.0.0.1",
                "port": manager.settings.port,
                "operational_status": "ready",
                "health_status": {"status": "healthy"},
                "version": "0.1.0",
            }
            assert frame["workers"] == []
            link = await status_queen(url)
            assert link["telemetry"]["subscribers"] == 1
            assert link["ready"]["state"] == "ok"
            # The current Queen has no /v1/hive-heartbeat: unsupported (said once), not failing.
            await apoll(lambda: manager.queen.push.state == "unsupported", what="push unsupported")
            assert actions(manager).count("queen_protocol_unsupported") == 1
    finally:
        await queen.close()


async def test_all_ready_attempts_failing_wait_for_a_new_discovery(hive: Serve) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    async with hive(queen_ready_delays="0,0.05") as (manager, url):
        await discover(url, closed)
        await apoll(
            lambda: "queen_ready_gave_up" in actions(manager), what="the ready round to end"
        )
        assert manager.queen.ready.failures == 2
        assert actions(manager).count("queen_ready_failed") == 1
        await discover(url, closed)  # the same Queen again: a new round
        await apoll(lambda: manager.queen.ready.failures == 4, what="a second round")


async def test_the_telemetry_stream_reports_workers_as_rbee_does(
    hive: Serve, tmp_path: Path, tiny_model: Path, worker_ports: range
) -> None:
    install_scripted_runtime(tmp_path / "home")
    desired = tmp_path / "desired"
    desired.mkdir()
    (desired / "model.yaml").write_text(model_yaml("tiny", f"file:{tiny_model}"))
    (desired / "worker.yaml").write_text(worker_yaml("w", "tiny"))
    async with (
        hive(worker_ports=f"{worker_ports.start}-{worker_ports.stop - 1}") as (manager, url),
        aiohttp.ClientSession() as http,
    ):
        await apoll(lambda: "w" in manager.workers.instances, within=20, what="the worker")
        pid = manager.workers.instances["w"].state.pid
        port = manager.workers.instances["w"].state.port
        async with http.get(url + "/v1/heartbeats/stream") as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "text/event-stream"
            frames: list[dict[str, Any]] = []
            async for raw in r.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("data: "):
                    frames.append(json.loads(line[6:]))
                    workers = frames[-1]["workers"]
                    if workers and workers[0]["rss_mb"] > 0:
                        break
                else:
                    assert line in ("event: heartbeat", "")
        worker = frames[-1]["workers"][0]
        assert list(worker) == [
            "pid",
            "group",
            "instance",
            "cpu_pct",
            "rss_mb",
            "io_r_mb_s",
            "io_w_mb_s",
            "uptime_s",
            "gpu_util_pct",
            "vram_mb",
            "total_vram_mb",
            "model",
        ]
        assert worker["pid"] == pid
        assert worker["group"] == "llm"
        assert worker["instance"] == str(port)
        assert worker["model"] == "tiny"
        assert worker["vram_mb"] == 0 and worker["total_vram_mb"] == 0


async def test_a_bad_queen_url_is_refused_and_never_echoed(hive: Serve) -> None:
    async with hive() as (manager, url):
        for bad, says in [
            ("ftp://queen:7833", "http:// or https://"),
            ("http://user:hunter2-secret@", "names no host"),
            ("http://queen:7833/?token=hunter2-secret", "query"),
            ("http://queen:99999", "not a URL"),
            ("http://" + "q" * 3000, "at most 2048"),
            ("javascript:alert(1)", "http:// or https://"),
        ]:
            for path in ("/capabilities", "/v1/capabilities"):
                code, body = await discover(url, bad, path=path)
                assert code == 400, (bad, body)
                assert body["error"]["code"] == "BadRequest"
                assert says in body["error"]["message"]
                assert "hunter2" not in json.dumps(body)
        assert manager.queen.url is None
        assert "queen_discovered" not in actions(manager)


async def test_credentials_in_the_queen_url_are_used_but_never_shown(hive: Serve) -> None:
    async with FakeQueen("seed") as queen, hive() as (manager, url):
        secret_url = queen.url.replace("http://", "http://hive:hunter2-secret@")
        code, _ = await discover(url, secret_url)
        assert code == 200
        await apoll(lambda: queen.beats, what="a beat")
        link = await status_queen(url)
        assert link["url"] == queen.url.replace("http://", "http://hive:***@")
        events = manager.bus.read(0, limit=10_000)[0]
        assert not any("hunter2" in e.model_dump_json() for e in events)
        async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as r:
            assert "hunter2" not in await r.text()


async def test_a_token_guards_discovery_on_both_paths(hive: Serve) -> None:
    async with FakeQueen("seed") as queen, hive(token=TOKEN) as (manager, url):
        for path in ("/capabilities", "/v1/capabilities"):
            code, body = await discover(url, queen.url, path=path)
            assert code == 401, body
        assert manager.queen.url is None
        async with aiohttp.ClientSession() as http, http.get(url + "/capabilities") as r:
            assert r.status == 401  # every route but /health needs it (guard.py)
        code, _ = await discover(url, queen.url, token=TOKEN, path="/capabilities")
        assert code == 200
        await apoll(lambda: queen.beats, what="a beat")


async def test_a_discovery_after_stop_starts_nothing_and_a_dead_push_is_restarted(
    hive: Serve,
) -> None:
    async with FakeQueen("seed") as queen, hive() as (manager, url):
        code, _ = await discover(url, queen.url)
        assert code == 200
        await apoll(lambda: len(queen.beats) >= 1, what="a push beat")
        assert link_tasks() in (["queen-push"], ["queen-push", "queen-ready"])
        # The push task dies: the same Queen discovering again starts it again.
        push = next(t for t in asyncio.all_tasks() if t.get_name() == "queen-push")
        push.cancel()
        await asyncio.wait([push])
        code, _ = await discover(url, queen.url)
        assert code == 200
        assert "queen-push" in link_tasks()
        seen = len(queen.beats)
        await apoll(lambda: len(queen.beats) > seen, what="beats after the restart")
        # hive stops its link; a discovery still in flight then starts nothing.
        await manager.queen.stop()
        assert link_tasks() == []
        await manager.queen.discover(queen.url.replace("127.0.0.1", "localhost"))
        await manager.queen.discover(queen.url)
        assert link_tasks() == []


async def test_another_queen_replaces_the_link(hive: Serve, tmp_path: Path) -> None:
    async with (
        FakeQueen("seed") as first,
        FakeQueen("seed") as second,
        hive() as (manager, url),
    ):
        await discover(url, first.url)
        await apoll(lambda: first.beats, what="a beat to the first Queen")
        await discover(url, second.url)
        await apoll(lambda: second.beats, what="a beat to the second Queen")
        stopped_at = len(first.beats)
        await apoll(lambda: len(second.beats) >= 3, what="more beats to the second")
        assert len(first.beats) <= stopped_at + 1  # at most one in flight at the switch
        saved = json.loads((tmp_path / "home" / "state" / "queen.json").read_text())
        assert saved["queen_url"] == second.url
        # The new Queen's first beat reports the inventory afresh.
        assert actions(manager).count("queen_discovered") == 2


async def test_a_restarted_hive_resumes_with_the_persisted_queen(hive: Serve) -> None:
    async with FakeQueen("seed") as queen:
        async with hive() as (manager, url):
            await discover(url, queen.url)
            await apoll(lambda: queen.beats, what="a beat")
        seen = len(queen.beats)
        async with hive() as (manager, url):
            await apoll(lambda: len(queen.beats) > seen, what="a beat from the restarted hive")
            assert manager.queen.view().discovered_via == "persisted"


async def test_the_flag_wins_over_the_persisted_queen(hive: Serve) -> None:
    async with FakeQueen("seed") as persisted, FakeQueen("seed") as flagged:
        async with hive() as (_, url):
            await discover(url, persisted.url)
            await apoll(lambda: persisted.beats, what="a beat")
        seen = len(persisted.beats)
        async with hive(queen_url=flagged.url) as (manager, _):
            await apoll(lambda: flagged.beats, what="a beat to the flag's Queen")
            assert manager.queen.view().discovered_via == "flag"
        assert len(persisted.beats) == seen


async def test_metrics_count_heartbeats_by_protocol(hive: Serve) -> None:
    async with FakeQueen("seed") as queen, hive() as (manager, url):
        await discover(url, queen.url)
        await apoll(lambda: len(queen.beats) >= 2, what="two beats")
        async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as r:
            text = await r.text()
        success = manager.queen.push.successes
        assert success >= 2
        lines = {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("hive_queen_heartbeats_total{")
        }
        assert lines['hive_queen_heartbeats_total{outcome="success",protocol="push"}'] >= 2
        assert lines['hive_queen_heartbeats_total{outcome="failure",protocol="ready"}'] >= 1
        assert "hive_queen_telemetry_subscribers 0.0" in text
        promtool = shutil.which("promtool")
        if promtool is not None:  # Debian's prometheus package; .ci/run installs it
            checked = await asyncio.to_thread(
                subprocess.run,
                [promtool, "check", "metrics"],
                input=text,
                capture_output=True,
                text=True,
            )
            assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_the_telemetry_streams_last_frame_says_stopping(tmp_path: Path) -> None:
    (tmp_path / "desired").mkdir()
    manager = Manager(
        Settings(
            home=tmp_path / "home",
            desired=(tmp_path / "desired",),
            console=False,
            gpu_probe="none",
            **FAST,
        )
    )
    server = TestServer(create_app(manager), host="127.0.0.1")
    await server.start_server()
    statuses: list[str] = []
    closing: asyncio.Task[None] | None = None
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(str(server.make_url("/v1/heartbeats/stream"))) as r,
        ):
            async for raw in r.content:
                line = raw.decode()
                if not line.startswith("data: "):
                    continue
                statuses.append(json.loads(line[6:])["hive_info"]["operational_status"])
                if closing is None and statuses[-1] == "ready":
                    closing = asyncio.create_task(server.close())  # hive stops
    finally:
        if closing is None:
            await server.close()
        else:
            await closing
    assert "ready" in statuses
    assert statuses[-1] == "stopping", statuses


def test_the_built_in_llama_cpp_gets_the_queen_from_its_environment_only() -> None:
    entry = next(e for e in built_in_entries() if e.id == "llama-cpp")
    assert "{queen_url}" not in entry.argv and "--queen-url" not in entry.argv


async def test_the_queens_password_stays_off_a_workers_log_record_and_answers(
    hive: Serve, tmp_path: Path, tiny_model: Path, worker_ports: range
) -> None:
    # A third-party runtime that takes {queen_url} on its command line (the scripted
    # worker ignores what --model says).
    entry = install_scripted_runtime(tmp_path / "home")
    metadata = json.loads(entry.read_text())
    metadata["argv"][metadata["argv"].index("{model}")] = "{queen_url}"
    entry.write_text(json.dumps(metadata))
    desired = tmp_path / "desired"
    desired.mkdir()
    (desired / "model.yaml").write_text(model_yaml("tiny", f"file:{tiny_model}"))
    (desired / "worker.yaml").write_text(worker_yaml("w", "tiny"))
    secret = "pw-0f-the-queen"
    queen_url = f"http://hive:{secret}@127.0.0.1:{free_port()}"
    async with (
        hive(queen_url=queen_url, worker_ports=f"{worker_ports.start}-{worker_ports.stop - 1}") as (
            manager,
            url,
        ),
        aiohttp.ClientSession() as http,
    ):
        await apoll(lambda: "w" in manager.workers.instances, within=20, what="the worker")
        pid = manager.workers.instances["w"].state.pid
        assert psutil.Process(pid).environ()["HIVE_QUEEN_URL"] == queen_url
        for path in ("/v1/workers/w", "/v1/workers/w/logs", "/v1/workers", "/v1/status"):
            async with http.get(url + path) as r:
                text = await r.text()
                assert r.status == 200 and secret not in text, (path, text)
        async with http.get(url + "/v1/workers/w/logs") as r:
            assert "hive:***@127.0.0.1" in await r.text()
        for file in (tmp_path / "home").rglob("*"):
            if file.is_file() and file.name != "queen.json":
                assert secret.encode() not in file.read_bytes(), file
