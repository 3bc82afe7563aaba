"""Worker health and metrics over real loopback HTTP: `/health` probed with a time limit,
and llama.cpp's own `/metrics` page (from a real llama.cpp server) read into WorkerMetrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given
from hypothesis import strategies as st

from hive.model.workers import WorkerMetrics
from hive.observers.health import HealthProbe, parse_metrics, scrape
from tests.conftest import ROOT, answers_health, apoll, free_port, poll

NOW = datetime(2025, 1, 1, tzinfo=UTC)
EMPTY = WorkerMetrics(scraped_at=NOW)
METRICS_PAGE = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 12
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total 34
# TYPE llamacpp:predicted_tokens_seconds gauge
llamacpp:predicted_tokens_seconds 56.5
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 1
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 2
# TYPE llamacpp:n_decode_total counter
llamacpp:n_decode_total 7
# TYPE llamacpp:kv_cache_usage_ratio gauge
llamacpp:kv_cache_usage_ratio 0.5
"""


# -- a loopback server --------------------------------------------------------------------
class Loopback:
    def __init__(self, server: TestServer, release: asyncio.Event, peers: set[object]) -> None:
        self.server = server
        self.release = release
        #: The client (address, port) of every connection the server saw.
        self.peers = peers
        self.transports: list[asyncio.BaseTransport] = []
        #: The `Connection` header of each request to /ok.
        self.asked: list[str] = []

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))


@pytest.fixture
async def loopback() -> AsyncIterator[Loopback]:
    release = asyncio.Event()
    peers: set[object] = set()
    transports: list[asyncio.BaseTransport] = []
    asked: list[str] = []

    async def ok(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.add(request.transport.get_extra_info("peername"))
        transports.append(request.transport)
        asked.append(request.headers.get("Connection", ""))
        return web.json_response({"status": "ok"})

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b'{"status":')
        await response.write(b' "ok"}')
        await response.write_eof()
        return response

    async def no_content(_: web.Request) -> web.Response:
        return web.Response(status=204)

    async def sick(_: web.Request) -> web.Response:
        return web.json_response({"status": "loading model"}, status=503)

    async def moved(_: web.Request) -> web.Response:
        raise web.HTTPFound("/ok")

    async def hang(_: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="too late")

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=METRICS_PAGE, content_type="text/plain")

    async def broken(_: web.Request) -> web.Response:
        return web.Response(status=500, text=METRICS_PAGE)

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/empty", no_content)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/sick", sick)
    app.router.add_get("/moved", moved)
    app.router.add_get("/hang", hang)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/broken", broken)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        loopback = Loopback(server, release, peers)
        loopback.transports = transports
        loopback.asked = asked
        yield loopback
    finally:
        release.set()
        await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


# -- HealthProbe -----------------------------------------------------------------------------
def health_probe(loopback: Loopback, path: str) -> HealthProbe:
    url = loopback.server.make_url(path)
    assert url.host is not None and url.port is not None
    return HealthProbe(host=url.host, port=url.port, path=path)


@pytest.mark.parametrize("path", ["/ok", "/empty", "/chunked"])
async def test_a_2xx_answer_is_healthy(loopback: Loopback, path: str) -> None:
    probe = health_probe(loopback, path)
    assert await probe.check(limit=5) is None
    assert await probe.check(limit=5) is None  # and again


@pytest.mark.parametrize(("path", "status"), [("/sick", 503), ("/nowhere", 404), ("/moved", 302)])
async def test_another_answer_says_its_status(loopback: Loopback, path: str, status: int) -> None:
    probe = health_probe(loopback, path)
    assert await probe.check(limit=5) == f"{loopback.url(path)} answered {status}"


async def test_each_probe_has_a_connection_of_its_own_closed_after_the_answer(
    loopback: Loopback,
) -> None:
    """As kubelet probes: an idle connection would hold one of the worker's HTTP threads."""
    probe = health_probe(loopback, "/ok")
    for _ in range(3):
        assert await probe.check(limit=5) is None
    assert len(loopback.peers) == 3
    assert loopback.asked == ["close"] * 3
    await apoll(
        lambda: all(t.is_closing() for t in loopback.transports), what="every connection closed"
    )


async def test_a_closed_port_says_it_cannot_connect() -> None:
    port = free_port()
    probe = HealthProbe(host="127.0.0.1", port=port, path="/health")
    problem = await probe.check(limit=5)
    assert problem is not None
    assert problem.startswith(f"http://127.0.0.1:{port}/health: ConnectionRefusedError")


async def test_a_worker_that_hangs_times_out_at_the_limit(loopback: Loopback) -> None:
    probe = health_probe(loopback, "/hang")
    # A limit that did not work would hang here, and wait_for fail the test.
    problem = await asyncio.wait_for(probe.check(limit=0.3), 30)
    assert problem == f"{loopback.url('/hang')} did not answer within 0.3s"


# -- scrape ------------------------------------------------------------------------------------
async def test_scrape_reads_the_metrics_page(
    loopback: Loopback, session: aiohttp.ClientSession
) -> None:
    got = await scrape(session, loopback.url("/metrics"), limit=5, now=NOW)
    assert got == parse_metrics(METRICS_PAGE, now=NOW)


@pytest.mark.parametrize("path", ["/broken", "/nowhere", "/hang"])
async def test_scrape_gives_none_when_there_is_no_page(
    loopback: Loopback, session: aiohttp.ClientSession, path: str
) -> None:
    began = time.monotonic()
    assert await scrape(session, loopback.url(path), limit=0.3, now=NOW) is None
    assert time.monotonic() - began < 2.0


async def test_scrape_of_a_closed_port_is_none(session: aiohttp.ClientSession) -> None:
    url = f"http://127.0.0.1:{free_port()}/metrics"
    assert await scrape(session, url, limit=5, now=NOW) is None


# -- parse_metrics -----------------------------------------------------------------------------
def test_the_llama_cpp_samples_map_to_fields() -> None:
    assert parse_metrics(METRICS_PAGE, now=NOW) == WorkerMetrics(
        scraped_at=NOW,
        prompt_tokens=12,
        tokens_generated=34,
        avg_tokens_per_sec=56.5,
        busy_slots=1,
        deferred_requests=2,
        decode_calls=7,
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "<html><body><h1>502 Bad Gateway</h1></body></html>",
        '{"status": "ok"}',
        "llamacpp:tokens_predicted_total abc",
        "llamacpp:tokens_predicted_total{ 3",
        "# TYPE llamacpp:tokens_predicted_total counter\nllamacpp:tokens_predicted_total x",
        "\x00\xff\ufffd",
        "garbage {\nllamacpp:tokens_predicted_total 5\n",
    ],
)
def test_garbage_gives_empty_metrics(text: str) -> None:
    assert parse_metrics(text, now=NOW) == EMPTY


@given(st.text())
def test_parse_metrics_never_raises(text: str) -> None:
    assert parse_metrics(text, now=NOW).scraped_at == NOW


# -- a real llama.cpp server ------------------------------------------------------------------
class Llama:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, err: Path) -> None:
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"
        self.err = err

    def healthy(self) -> bool:
        return answers_health(self.proc, self.url, log=self.err, what="llama.cpp")

    def complete(self, prompt: str, max_tokens: int) -> dict[str, Any]:
        request = urllib.request.Request(
            self.url + "/v1/completions",
            data=json.dumps(
                {"prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True}
            ).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            usage: dict[str, Any] = json.load(r)["usage"]
            return usage

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as r:
            return str(r.read().decode())


@pytest.fixture
def llama(tiny_model: Path, tmp_path: Path) -> Iterator[Llama]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("HIVE_QUEEN_URL", "HIVE_WORKER_ID")}
    err = tmp_path / "llama.err"
    argv = [
        sys.executable,
        "-m",
        "hive.launchers.llama_cpp",
        "--model",
        str(tiny_model),
        "--port",
        str(port),
        "--alias",
        "tiny",
        "--ctx-size",
        "256",
    ]
    with err.open("wb") as e:
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=e,
            start_new_session=True,
        )
    try:
        server = Llama(proc, port, err)
        poll(server.healthy, timeout=20, what=f"llama.cpp /health on {server.url}")
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


async def test_real_llama_cpp_metrics_count_a_completion(
    llama: Llama, session: aiohttp.ClientSession
) -> None:
    before = await scrape(session, llama.url + "/metrics", limit=5, now=NOW)
    assert before is not None
    assert before.tokens_generated == 0
    assert before.prompt_tokens == 0
    assert before.busy_slots == 0
    assert before.deferred_requests == 0

    usage = await asyncio.to_thread(llama.complete, "hello", 8)
    after = await scrape(session, llama.url + "/metrics", limit=5, now=NOW)
    assert after is not None
    assert after.tokens_generated == usage["completion_tokens"] >= 1
    assert after.prompt_tokens == usage["prompt_tokens"] >= 1
    assert after.avg_tokens_per_sec is not None and after.avg_tokens_per_sec > 0
    assert after.busy_slots == 0
    assert after.deferred_requests == 0


def test_the_real_page_parses_the_same_as_its_samples(llama: Llama) -> None:
    llama.complete("the", 3)
    text = llama.metrics_text()
    metrics = parse_metrics(text, now=NOW)
    samples = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("llamacpp:")
    }
    assert metrics.tokens_generated == samples["llamacpp:tokens_predicted_total"] == 3
    assert metrics.prompt_tokens == samples["llamacpp:prompt_tokens_total"]
    assert metrics.avg_tokens_per_sec == samples["llamacpp:predicted_tokens_seconds"]


def test_decode_calls_are_not_reported_as_requests(llama: Llama) -> None:
    """llama.cpp counts llama_decode() calls, not requests: hive reports them as such."""
    usage = llama.complete("hello", 8)
    assert usage["completion_tokens"] == 8
    metrics = parse_metrics(llama.metrics_text(), now=NOW)
    assert metrics.decode_calls is not None
    assert metrics.decode_calls >= 8
    assert "requests_handled" not in WorkerMetrics.model_fields


async def test_a_host_name_is_resolved_and_its_addresses_tried(loopback: Loopback) -> None:
    """`localhost` may resolve to ::1 first; the server listens on 127.0.0.1 only."""
    url = loopback.server.make_url("/ok")
    assert url.port is not None
    probe = HealthProbe(host="localhost", port=url.port, path="/ok")
    assert await probe.check(limit=5) is None


_TOO_LARGE = b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n" + b"x" * 2_000_000


@pytest.mark.parametrize(
    ("reply", "says"),
    [
        (b"", "connection closed with no answer"),
        (b"SSH-2.0-OpenSSH_9.2\r\n", "connection closed with not an HTTP answer: b'SSH-2.0"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "connection closed with not an HTTP answer"),
        (_TOO_LARGE, "answer larger than 1048576 bytes"),
    ],
)
async def test_what_is_not_an_http_answer_says_so(reply: bytes, says: str) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            writer.write(reply)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        problem = await HealthProbe(host="127.0.0.1", port=port, path="/health").check(limit=5)
        assert problem is not None
        assert problem.startswith(f"http://127.0.0.1:{port}/health: {says}"), problem
    finally:
        server.close()
        await server.wait_closed()
