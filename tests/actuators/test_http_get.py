"""The downloader's blocking GET (hive.actuators.http_get) against real loopback servers:
redirects and the token, proxies from the environment, and an abort from another thread."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from hive.actuators import http_get
from hive.actuators.http_get import HttpGet, TooManyRedirects
from testkit.hub import serving

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serve(handler: Handler, *, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handler)
    async with serving(app, tls=tls) as base:
        yield base


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ssl.SSLContext]:
    """A server context for 127.0.0.1 signed by a test CA that the client trusts through
    SSL_CERT_FILE, as an operator would point hive at a private CA."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    http_get._tls.cache_clear()
    yield server
    http_get._tls.cache_clear()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, str]:
    request = HttpGet(url, headers or {}, connect_timeout=5, read_timeout=5)
    try:
        request.open()
        body = bytearray()
        buffer = memoryview(bytearray(1 << 16))
        while n := request.readinto(buffer):
            body += buffer[:n]
        return request.status, bytes(body), request.url
    finally:
        request.close()


@pytest.fixture(autouse=True)
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


async def test_redirects_keep_the_token_for_the_same_origin_only() -> None:
    seen: list[tuple[str, str | None]] = []

    async def cdn(request: web.Request) -> web.StreamResponse:
        seen.append((request.path, request.headers.get("Authorization")))
        return web.Response(body=b"bytes of the file")

    async with serve(cdn) as cdn_url:

        async def hub(request: web.Request) -> web.StreamResponse:
            seen.append((request.path, request.headers.get("Authorization")))
            if request.path == "/resolve":
                raise web.HTTPFound("/resolved")  # same origin: the token goes along
            raise web.HTTPTemporaryRedirect(f"{cdn_url}/blob?x=1")  # another origin

        async with serve(hub) as hub_url:
            status, body, final = await asyncio.to_thread(
                get, f"{hub_url}/resolve", {"Authorization": "Bearer secret"}
            )
    assert (status, body, final) == (200, b"bytes of the file", f"{cdn_url}/blob?x=1")
    assert seen == [
        ("/resolve", "Bearer secret"),
        ("/resolved", "Bearer secret"),
        ("/blob", None),
    ]


async def test_user_info_goes_as_basic_auth_to_its_origin_only() -> None:
    seen: list[tuple[str, str | None]] = []

    async def cdn(request: web.Request) -> web.StreamResponse:
        seen.append((request.path_qs, request.headers.get("Authorization")))
        return web.Response(body=b"bytes of the file")

    async with serve(cdn) as cdn_url:

        async def site(request: web.Request) -> web.StreamResponse:
            seen.append((request.path_qs, request.headers.get("Authorization")))
            if request.path == "/m.gguf":
                raise web.HTTPFound("/moved?token=T")
            raise web.HTTPTemporaryRedirect(f"{cdn_url}/blob")  # another origin

        async with serve(site) as url:
            authority = url.removeprefix("http://")
            status, body, final = await asyncio.to_thread(
                get, f"http://alice:S3CR%40T@{authority}/m.gguf?token=T"
            )
    assert (status, body, final) == (200, b"bytes of the file", f"{cdn_url}/blob")
    basic = "Basic " + base64.b64encode(b"alice:S3CR@T").decode()
    assert seen == [("/m.gguf?token=T", basic), ("/moved?token=T", basic), ("/blob", None)]


def test_split_credentials() -> None:
    assert http_get.split_credentials("https://h/m.gguf?token=T") == (
        "https://h/m.gguf?token=T",
        {},
    )
    bare, auth = http_get.split_credentials("https://TOKEN@h:8443/m.gguf")
    assert bare == "https://h:8443/m.gguf"
    assert auth == {"Authorization": "Basic " + base64.b64encode(b"TOKEN:").decode()}


async def test_a_redirect_loop_ends() -> None:
    async def loop(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/again")

    async with serve(loop) as url:
        with pytest.raises(TooManyRedirects):
            await asyncio.to_thread(get, f"{url}/start")


@asynccontextmanager
async def fake_proxy() -> AsyncIterator[tuple[str, list[str]]]:
    """A forward proxy that records each request line and Proxy-Authorization; it tunnels
    CONNECT (https) to the target, and answers a plain-HTTP request itself."""
    lines: list[str] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        request_line, *fields = head.split("\r\n")
        lines.append(request_line)
        lines.extend(
            f for f in fields if f.lower().startswith(("proxy-authorization", "authorization"))
        )
        if request_line.startswith("CONNECT "):
            host, _, port = request_line.split()[1].rpartition(":")
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
            return
        body = b"via the proxy"
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (len(body), body)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://user:p%40ss@127.0.0.1:{port}", lines
    finally:
        server.close()
        await server.wait_closed()


async def test_http_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    async with fake_proxy() as (proxy, lines):
        monkeypatch.setenv("HTTP_PROXY", proxy)
        status, body, _ = await asyncio.to_thread(get, "http://files.example:8080/m.gguf?a=b")
    assert (status, body) == (200, b"via the proxy")
    assert lines[0] == "GET http://files.example:8080/m.gguf?a=b HTTP/1.1"
    assert lines[1] == "Proxy-Authorization: Basic dXNlcjpwQHNz"  # user:p@ss


async def test_user_info_never_reaches_a_proxy_as_part_of_the_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with fake_proxy() as (proxy, lines):
        monkeypatch.setenv("HTTP_PROXY", proxy)
        status, _, _ = await asyncio.to_thread(get, "http://bob:pw@files.example:8080/m.gguf")
    assert status == 200
    assert lines[0] == "GET http://files.example:8080/m.gguf HTTP/1.1"
    assert "Authorization: Basic Ym9iOnB3" in lines  # bob:pw, for the server, as a header


async def test_https_with_the_system_trust_store(tls: ssl.SSLContext) -> None:
    async def secret(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"over TLS")

    async with serve(secret, tls=tls) as url:
        status, body, _ = await asyncio.to_thread(get, f"{url}/m.gguf")
    assert (status, body) == (200, b"over TLS")


async def test_https_refuses_a_certificate_it_does_not_trust(
    tls: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "other.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "other.pem"))
    http_get._tls.cache_clear()

    async def secret(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"over TLS")

    async with serve(secret, tls=tls) as url:
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.to_thread(get, f"{url}/m.gguf")


async def test_https_through_a_proxy_tunnel(
    tls: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def secret(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"tunnelled")

    async with fake_proxy() as (proxy, lines), serve(secret, tls=tls) as url:
        monkeypatch.setenv("HTTPS_PROXY", proxy)
        status, body, _ = await asyncio.to_thread(get, f"{url}/m.gguf")
    assert (status, body) == (200, b"tunnelled")
    assert lines[0] == f"CONNECT {url.removeprefix('https://')} HTTP/1.0"
    assert lines[1] == "Proxy-Authorization: Basic dXNlcjpwQHNz"


async def test_no_proxy_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    async def direct(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"direct")

    async with fake_proxy() as (proxy, lines), serve(direct) as url:
        monkeypatch.setenv("HTTP_PROXY", proxy)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        status, body, _ = await asyncio.to_thread(get, f"{url}/m.gguf")
    assert (status, body, lines) == (200, b"direct", [])


async def test_abort_ends_a_read_blocked_in_another_thread() -> None:
    release = asyncio.Event()

    async def stall(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 10_000_000
        await response.prepare(request)
        await response.write(b"x" * 1000)
        await release.wait()  # and nothing more until the test ends: the client's read blocks
        return response

    async with serve(stall) as url:
        request = HttpGet(f"{url}/slow", {}, connect_timeout=5, read_timeout=30)
        await asyncio.to_thread(request.open)
        got: list[int | BaseException] = []

        def read() -> None:
            buffer = memoryview(bytearray(1000))  # the first read returns what was sent
            try:
                while n := request.readinto(buffer):
                    got.append(n)
                got.append(0)
            except OSError as exc:
                got.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        deadline = time.monotonic() + 5
        while sum(n for n in got if isinstance(n, int)) < 1000:
            assert time.monotonic() < deadline, "the first bytes never arrived"
            await asyncio.sleep(0.01)
        # The reader is now in (or about to enter) a read that nothing will answer.
        started = time.monotonic()
        request.abort()
        await asyncio.to_thread(reader.join, 5)
        assert not reader.is_alive()
        assert time.monotonic() - started < 1.0
        request.close()
        release.set()
    assert got[0] == 1000
    assert got[-1] == 0 or isinstance(got[-1], OSError)
