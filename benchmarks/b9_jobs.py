"""B9 jobs: (1) a `model_get` job, POST to `[DONE]`, one after the other, p50 and p99; (2)
`GET /v1/status` from 100 concurrent clients, requests per second and p99.

The peer of each is its ceiling: a plain aiohttp server (one process, as hive is) that
answers the same requests with the same bytes, recorded from hive in this run (the job's
POST answer and its whole stream; the status document), and does nothing else: no
parsing, no lookup, no view to build. The client is the same for both: `hive.client` for
the jobs, one aiohttp session of 100 tasks for the status.

    python -m benchmarks --only B9 [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from benchmarks import (
    PYTHON,
    Row,
    Tree,
    child,
    free_port,
    get_json,
    hive_serve,
    log,
    make_tiny_model,
    model_manifest,
    percentile,
    write_atomic,
)
from benchmarks.fleet import wait_model_available
from hive.client import HiveClient
from hive.model.views import JobEnd

BENCH = "B9 jobs"
PEER = "plain aiohttp handler, same bytes"
CLIENTS = 100
MODEL_GET = {"operation": "model_get", "hive_id": "localhost", "id": "tiny"}


# -- the peer: the same bytes, nothing else -----------------------------------------------------
def peer_main(port: int, recorded: Path) -> None:
    data = json.loads(recorded.read_text())
    created, stream = data["created"].encode(), data["stream"].encode()
    status = data["status"].encode()

    async def post(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=created, content_type="application/json")

    async def get_stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        await response.write(stream)
        return response

    async def get_status(request: web.Request) -> web.Response:
        return web.Response(body=status, content_type="application/json")

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/v1/jobs", post)
    app.router.add_get("/v1/jobs/{job_id}/stream", get_stream)
    app.router.add_get("/v1/status", get_status)
    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# -- the clients ------------------------------------------------------------------------------
async def job_round_trips(url: str, count: int) -> list[float]:
    """`count` model_get jobs, one after the other: POST, then the stream to its end."""
    took: list[float] = []
    async with HiveClient(url) as client:
        for _ in range(count):
            began = time.perf_counter()
            created = await client.submit_job(MODEL_GET)
            async for item in client.job_stream(created.job_id):
                if isinstance(item, JobEnd):
                    if item.outcome != "done":
                        raise RuntimeError(f"B9: model_get ended {item}")
                    break
            took.append(time.perf_counter() - began)
    return took


async def status_load(url: str, seconds: float) -> tuple[float, list[float]]:
    """CLIENTS tasks GET /v1/status back to back for `seconds`: requests/s, latencies."""
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(connector=connector) as http:
        stop = time.perf_counter() + seconds

        async def one_client() -> None:
            while time.perf_counter() < stop:
                began = time.perf_counter()
                async with http.get(url + "/v1/status") as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"B9: /v1/status answered {r.status}")
                latencies.append(time.perf_counter() - began)

        began = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(CLIENTS)))
        elapsed = time.perf_counter() - began
    return len(latencies) / elapsed, latencies


async def record(url: str) -> dict[str, str]:
    """What the peer answers: hive's own bytes for the same requests."""
    async with aiohttp.ClientSession() as http:
        async with http.post(
            url + "/v1/jobs",
            data=json.dumps(MODEL_GET),
            headers={"Content-Type": "application/json"},
        ) as r:
            created = await r.text()
        job_id = json.loads(created)["job_id"]
        async with http.get(f"{url}/v1/jobs/{job_id}/stream") as r:
            stream = await r.text()
        async with http.get(url + "/v1/status") as r:
            status = await r.text()
    return {"created": created, "stream": stream, "status": status}


def measure(url: str, *, jobs: int, seconds: float) -> tuple[list[float], float, list[float]]:
    job_times = asyncio.run(job_round_trips(url, jobs))
    rate, latencies = asyncio.run(status_load(url, seconds))
    return job_times, rate, latencies


def run(*, quick: bool, tree: Tree) -> list[Row]:
    jobs = 100 if quick else 1000
    seconds = 2.0 if quick else 10.0
    ms = 1000.0
    with tempfile.TemporaryDirectory(prefix="hive-bench-b9-") as tmp:
        root = Path(tmp)
        desired, home = root / "desired", root / "home"
        desired.mkdir()
        model = make_tiny_model(root / "tiny.gguf")
        write_atomic(desired / "models.yaml", model_manifest("tiny", model))
        log(f"B9: hive serve ({tree.label}): {jobs} model_get jobs, then /v1/status x{CLIENTS}")
        env = {"HIVE_CONSOLE": "0"}
        with hive_serve(
            desired=desired, home=home, log_file=root / "hive.log", tree=tree, env=env
        ) as (_, url):
            wait_model_available(url, "tiny")
            recorded = root / "recorded.json"
            recorded.write_text(json.dumps(asyncio.run(record(url))))
            asyncio.run(job_round_trips(url, 20))  # warm-up, not counted
            hive_jobs, hive_rate, hive_lat = measure(url, jobs=jobs, seconds=seconds)
        port = free_port()
        peer_url = f"http://127.0.0.1:{port}"
        argv = [PYTHON, "-m", "benchmarks.b9_jobs", "--peer", str(port), str(recorded)]
        with child(argv, log_file=root / "peer.log"):
            deadline = time.monotonic() + 20
            while True:
                try:
                    get_json(peer_url + "/health", timeout=1.0)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("B9: the peer did not start") from None
                    time.sleep(0.05)
            asyncio.run(job_round_trips(peer_url, 20))
            peer_jobs, peer_rate, peer_lat = measure(peer_url, jobs=jobs, seconds=seconds)
    log(
        f"B9: model_get job p50 {percentile(hive_jobs, 50) * ms:.2f} ms (peer "
        f"{percentile(peer_jobs, 50) * ms:.2f}); /v1/status {hive_rate:.0f}/s (peer "
        f"{peer_rate:.0f}/s)"
    )
    what = f"model_get job, POST -> [DONE], sequential, {jobs}"
    status = f"GET /v1/status, {CLIENTS} concurrent clients, {seconds:g} s"
    # Throughput is the one row where more is better: there peer/hive > 1 means the
    # ceiling serves more than hive.
    return [
        Row(
            BENCH,
            f"{what}: p50",
            percentile(hive_jobs, 50) * ms,
            "ms",
            PEER,
            percentile(peer_jobs, 50) * ms,
            goal="hive p50 <= 10 ms",
        ),
        Row(
            BENCH,
            f"{what}: p99",
            percentile(hive_jobs, 99) * ms,
            "ms",
            PEER,
            percentile(peer_jobs, 99) * ms,
        ),
        Row(
            BENCH,
            f"{status}: throughput (more is better)",
            hive_rate,
            "req/s",
            PEER,
            peer_rate,
            goal="hive >= 1,000 req/s",
        ),
        Row(
            BENCH,
            f"{status}: p99",
            percentile(hive_lat, 99) * ms,
            "ms",
            PEER,
            percentile(peer_lat, 99) * ms,
        ),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--peer", nargs=2, metavar=("PORT", "RECORDED"), required=True)
    opts = parser.parse_args()
    peer_main(int(opts.peer[0]), Path(opts.peer[1]))
