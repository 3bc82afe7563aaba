"""`hive job` against rbee's job contract, on a stand-in job API on loopback (a real aiohttp
server that records what it is sent and streams scripted narration): the body POSTed, each
line printed, the exit codes of [DONE], [ERROR] and [CANCELLED], Ctrl-C cancelling the job.
The same command against a real hive: tests/e2e once the job API is there."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from hive.cli.job import parse_fields
from tests.conftest import ROOT, free_port, run_hive

#: What each operation's stream says (the last line is its end marker; None: never ends).
SCRIPTS: dict[str, list[str | None]] = {
    "model_list": [
        json.dumps({"action": "model_list_entry", "message": "tiny | 0.00 GB | available"}),
        "[DONE]",
    ],
    "model_download": [
        json.dumps({"action": "model_download_start", "message": "📥 Downloading tiny"}),
        json.dumps(
            {
                "action": "model_download_progress",
                "message": "Downloaded 5 MB / 10 MB (50%)",
                "data": {"bytes_downloaded": 5_000_000, "total_bytes": 10_000_000},
            }
        ),
        json.dumps({"action": "model_download_complete", "message": "✅ Download complete"}),
        "[DONE]",
    ],
    "worker_spawn": ["[ERROR] no runtime 'cuda' on this hive"],
    "model_unload": ["[CANCELLED]"],
    "slow": [json.dumps({"action": "slow_start", "message": "started"}), None],
}


class JobApi:
    """`POST /v1/jobs`, `GET /v1/jobs/{id}/stream`, `DELETE /v1/jobs/{id}` on 127.0.0.1, in a
    thread of its own."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.posted: list[dict[str, Any]] = []
        self.cancelled: list[str] = []
        self._cancel_events: dict[str, asyncio.Event] = {}
        self._jobs: dict[str, str] = {}
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> JobApi:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_get("/v1/status", self._status)
        app.router.add_post("/v1/jobs", self._submit)
        app.router.add_get("/v1/jobs/{id}/stream", self._stream)
        app.router.add_delete("/v1/jobs/{id}", self._cancel)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "hive_id": "fake-hive",
                "status": "running",
                "started_at": "2026-01-01T00:00:00Z",
                "uptime_seconds": 1,
                "home": "/nowhere",
                "synced": True,
                "sources": [],
                "objects": {},
                "queue": {},
                "workers": {},
                "last_event_id": 0,
            }
        )

    async def _submit(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.posted.append(body)
        if body["operation"] == "bogus":
            return web.json_response(
                {"error": {"code": "Invalid", "message": "operation: 'bogus' is not one"}},
                status=400,
            )
        job_id = f"job-{len(self.posted)}"
        self._jobs[job_id] = body["operation"]
        return web.json_response({"job_id": job_id, "sse_url": f"/v1/jobs/{job_id}/stream"})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        job_id = request.match_info["id"]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for line in SCRIPTS[self._jobs[job_id]]:
            if line is None:
                await self._cancel_events.setdefault(job_id, asyncio.Event()).wait()
                line = "[CANCELLED]"
            await response.write(f"data: {line}\n\n".encode())
        return response

    async def _cancel(self, request: web.Request) -> web.Response:
        self.cancelled.append(request.match_info["id"])
        self._cancel_events.setdefault(request.match_info["id"], asyncio.Event()).set()
        return web.json_response({"job_id": request.match_info["id"], "status": "cancelled"})


@pytest.fixture
def job_api() -> Iterator[JobApi]:
    with JobApi() as api:
        yield api


def test_fields_take_integers_lists_and_json() -> None:
    assert parse_fields(["model=tiny", "device=0", "worker=cuda:0"]) == {
        "model": "tiny",
        "device": 0,
        "worker": "cuda:0",
    }
    assert parse_fields(["pid=41,42", "names=a,b", "model=a,b"]) == {
        "pid": [41, 42],
        "names": ["a", "b"],
        "model": "a,b",
    }
    assert parse_fields(['id:="123"', "count:=2", 'extra:={"a": [1]}']) == {
        "id": "123",
        "count": 2,
        "extra": {"a": [1]},
    }
    for bad in ("novalue", "=x", "k:=nojson"):
        with pytest.raises(ValueError, match=r"key=value|takes JSON"):
            parse_fields([bad])


def test_job_prints_the_narration_and_exits_by_its_end_marker(job_api: JobApi) -> None:
    listed = run_hive("job", "model_list", "--url", job_api.url)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == "tiny | 0.00 GB | available\n"
    assert job_api.posted[-1] == {"operation": "model_list", "hive_id": "fake-hive"}

    download = run_hive("job", "model_download", "model=tiny", "hive_id=h1", "--url", job_api.url)
    assert download.returncode == 0, download.stderr
    # Not a terminal: the progress is printed as the line hive narrated.
    assert download.stdout.splitlines() == [
        "📥 Downloading tiny",
        "Downloaded 5 MB / 10 MB (50%)",
        "✅ Download complete",
    ]
    assert job_api.posted[-1] == {"operation": "model_download", "hive_id": "h1", "model": "tiny"}

    failed = run_hive(
        "job", "worker_spawn", "model=tiny", "worker=cuda", "device=0", "--url", job_api.url
    )
    assert failed.returncode == 1
    assert failed.stderr == "hive: job job-3 failed: no runtime 'cuda' on this hive\n"
    assert job_api.posted[-1]["device"] == 0

    cancelled = run_hive("job", "model_unload", "id=tiny", "--url", job_api.url)
    assert cancelled.returncode == 1
    assert cancelled.stderr == "hive: job job-4 was cancelled\n"

    refused = run_hive("job", "bogus", "--url", job_api.url)
    assert refused.returncode == 2
    assert refused.stderr == "hive: operation: 'bogus' is not one\n"
    bad = run_hive("job", "model_get", "id", "--url", job_api.url)
    assert bad.returncode == 2
    assert bad.stderr == "hive: 'id' is not key=value (or key:=JSON)\n"


def test_ctrl_c_cancels_the_job_and_exits_130(job_api: JobApi) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hive", "job", "slow", "--url", job_api.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "started\n"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert job_api.cancelled == ["job-1"]
    assert err == "hive: job job-1 cancelled (Ctrl-C)\n"
