"""What every request passes before its route (hive/api/guard.py), on a real loopback
server: the token on every route but `/health` (reads, writes, `/metrics`, streams, unknown
routes), CORS only for the origins named, the 1 MiB body limit (chunked bodies too), JSON
404/405, and a bug's 500 without a traceback."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from hive.api.app import create_app
from hive.api.guard import MAX_BODY
from hive.runtime.manager import Manager
from hive.settings import Settings
from tests.api.conftest import Serve

TOKEN = "s3cret-s3cret-s3cret"
WRONG = "not-the-token-0000"
RIGHT = {"Authorization": f"Bearer {TOKEN}"}
ORIGIN = "https://dash.example:8443"

#: One of each: a read, a write, /metrics, a stream (the events, a worker's log) and /health.
READ = ("GET", "/v1/status")
WRITE = ("POST", "/v1/workers/ghost/restart")
METRICS = ("GET", "/metrics")
EVENTS = ("GET", "/v1/events")
LOGS = ("GET", "/v1/workers/ghost/logs?follow=1")
HEALTH = ("GET", "/health")


async def status_of(
    http: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and (for a stream, the first bytes of) the body."""
    async with http.request(method, url, headers=headers or {}) as r:
        if r.content_type == "text/event-stream":
            body = await asyncio.wait_for(r.content.readuntil(b"\n\n"), 5)
        else:
            body = await r.read()
        return r.status, dict(r.headers), body


@pytest.mark.parametrize("route", [READ, WRITE, METRICS, EVENTS, LOGS, HEALTH])
async def test_without_a_token_every_route_is_open(serve: Serve, route: tuple[str, str]) -> None:
    method, path = route
    async with serve() as (_, url), aiohttp.ClientSession() as http:
        status, _, _ = await status_of(http, method, url + path)
    assert status != 401
    assert status == {WRITE: 404, LOGS: 404}.get(route, 200)


@pytest.mark.parametrize("route", [READ, WRITE, METRICS, EVENTS, LOGS])
@pytest.mark.parametrize(
    ("sent", "why"),
    [
        (None, "no Authorization header was sent"),
        (f"Bearer {WRONG}", "does not hold this hive's token"),
        (f"Basic {TOKEN}", "does not hold this hive's token"),  # the token, wrong scheme
        (f"Bearer {TOKEN}x", "does not hold this hive's token"),
        (f"Bearer {TOKEN[:-1]}", "does not hold this hive's token"),
    ],
)
async def test_with_a_token_every_route_but_health_needs_it(
    serve: Serve, route: tuple[str, str], sent: str | None, why: str
) -> None:
    method, path = route
    headers = {} if sent is None else {"Authorization": sent}
    async with serve(token=TOKEN) as (_, url), aiohttp.ClientSession() as http:
        status, answer, body = await status_of(http, method, url + path, headers)
    assert status == 401
    assert answer["WWW-Authenticate"] == 'Bearer realm="hive"'
    assert answer["Content-Type"].startswith("application/json")
    text = body.decode()
    assert "Authorization: Bearer <token>" in text and why in text
    assert TOKEN not in text and WRONG not in text  # neither the token nor what came


@pytest.mark.parametrize("route", [READ, WRITE, METRICS, EVENTS, LOGS, HEALTH])
async def test_with_the_right_token_every_route_answers(
    serve: Serve, route: tuple[str, str]
) -> None:
    method, path = route
    async with serve(token=TOKEN) as (_, url), aiohttp.ClientSession() as http:
        status, _, body = await status_of(http, method, url + path, RIGHT)
    assert status == {WRITE: 404, LOGS: 404}.get(route, 200), body
    if route == EVENTS:
        assert body == b": connected\n\n"


async def test_health_needs_no_token_and_only_health(serve: Serve) -> None:
    async with serve(token=TOKEN) as (_, url), aiohttp.ClientSession() as http:
        assert (await status_of(http, "GET", url + "/health"))[0] == 200
        assert (await status_of(http, "HEAD", url + "/health"))[0] == 200
        assert (await status_of(http, "GET", url + "/health", {"Authorization": "x"}))[0] == 200
        # Another method there is its 405 (with Allow), token or not: nothing is secret.
        assert (await status_of(http, "TRACE", url + "/health"))[0] == 405
        assert (await status_of(http, "PUT", url + "/health", RIGHT))[0] == 405
        # Paths that only look like it.
        assert (await status_of(http, "GET", url + "/health/"))[0] == 401
        assert (await status_of(http, "GET", url + "/healthz"))[0] == 401
        assert (await status_of(http, "GET", url + "/v1/health"))[0] == 401


async def test_every_route_of_the_app_is_guarded_by_default(tmp_path: Path) -> None:
    """Deny by default: each route the app registers (whoever added it) and an unknown one
    answer 401 without the token; only GET/HEAD /health and the dashboard's files do not."""
    (tmp_path / "desired").mkdir()
    manager = Manager(
        Settings(home=tmp_path / "home", desired=(tmp_path / "desired",), console=False,
                 token=TOKEN)
    )  # fmt: skip
    app = create_app(manager)  # the app served: its routes are read, not a second app's
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        url = str(server.make_url("")).rstrip("/")
        routes = {
            (route.method, re.sub(r"\{[^}]+\}", "x", route.resource.canonical))
            for route in app.router.routes()
            if route.resource is not None
        }
        assert len(routes) >= 12
        open_ = set()
        more = {("GET", "/v1/nothing-here"), ("GET", "/"), ("POST", "/v1/status")}
        async with aiohttp.ClientSession() as http:
            for method, path in sorted(routes | more):
                status, _, _ = await status_of(http, method, url + path)
                if status != 401:
                    open_.add((method, path))
    finally:
        await server.close()
    dashboard = {(m, p) for m in ("GET", "HEAD") for p in ("/", "/ui/x")}
    assert open_ == {("GET", "/health"), ("HEAD", "/health"), *dashboard}


# -- CORS -------------------------------------------------------------------------------
CORS_HEADERS = {
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Headers",
    "Access-Control-Max-Age",
}


async def test_no_cors_header_unless_origins_are_named(serve: Serve) -> None:
    async with serve() as (_, url), aiohttp.ClientSession() as http:
        _, headers, _ = await status_of(http, "GET", url + "/v1/status", {"Origin": ORIGIN})
        preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
        status, pre, _ = await status_of(http, "OPTIONS", url + "/v1/status", preflight)
    assert not CORS_HEADERS & set(headers) and "Vary" not in headers
    assert status == 405 and not CORS_HEADERS & set(pre)


async def test_a_named_origin_gets_cors_headers_and_a_preflight_without_the_token(
    serve: Serve,
) -> None:
    async with (
        serve(token=TOKEN, cors_origins=(ORIGIN, "http://localhost:3000")) as (_, url),
        aiohttp.ClientSession() as http,
    ):
        preflight = {
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "DELETE",
            "Access-Control-Request-Headers": "authorization",
        }
        status, pre, _ = await status_of(http, "OPTIONS", url + "/v1/models/m", preflight)
        assert status == 204
        assert pre["Access-Control-Allow-Origin"] == ORIGIN
        assert set(pre["Access-Control-Allow-Methods"].split(", ")) == {"GET", "HEAD", "DELETE"}
        allowed = {h.strip().lower() for h in pre["Access-Control-Allow-Headers"].split(",")}
        assert allowed == {"authorization", "content-type", "last-event-id"}
        assert pre["Vary"] == "Origin"

        # The real request: with the token, and the header on its answer (an error too).
        origin = {"Origin": ORIGIN}
        _, ok, _ = await status_of(http, "GET", url + "/v1/status", {**origin, **RIGHT})
        assert ok["Access-Control-Allow-Origin"] == ORIGIN and ok["Vary"] == "Origin"
        status, denied, _ = await status_of(http, "GET", url + "/v1/status", origin)
        assert status == 401 and denied["Access-Control-Allow-Origin"] == ORIGIN
        # A stream (its headers are sent by the route itself) carries it too.
        _, stream, _ = await status_of(http, "GET", url + "/v1/events", {**origin, **RIGHT})
        assert stream["Access-Control-Allow-Origin"] == ORIGIN

        # Another origin gets nothing: no CORS header, its preflight needs the token.
        other = {"Origin": "https://evil.example"}
        _, answer, _ = await status_of(http, "GET", url + "/v1/status", {**other, **RIGHT})
        assert not CORS_HEADERS & set(answer)
        status, pre, _ = await status_of(
            http, "OPTIONS", url + "/v1/status", {**preflight, **other}
        )
        assert status == 401 and not CORS_HEADERS & set(pre)
        # A preflight to a route that does not exist is not answered as one.
        status, pre, _ = await status_of(http, "OPTIONS", url + "/v1/nope", preflight)
        assert status == 401 and "Access-Control-Allow-Methods" not in pre


def test_a_cors_origin_must_be_an_origin() -> None:
    assert Settings(cors_origins=("https://A.example:8443/",)).cors_origins == (
        "https://a.example:8443",
    )
    for bad in ("*", "a.example", "https://a.example/path", "ftp://a.example"):
        with pytest.raises(ValueError, match="is not an origin"):
            Settings(cors_origins=(bad,))


def test_cors_origins_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIVE_CORS_ORIGINS", "https://a.example, http://localhost:3000")
    assert Settings.from_env().cors_origins == ("https://a.example", "http://localhost:3000")


# -- limits and errors --------------------------------------------------------------------
async def test_a_body_over_1_mib_is_refused_with_413(serve: Serve) -> None:
    async with serve(token=TOKEN) as (_, url), aiohttp.ClientSession(headers=RIGHT) as http:
        target = url + "/v1/workers/ghost/restart"
        async with http.post(target, data=b"x" * MAX_BODY) as r:
            assert r.status == 404  # exactly 1 MiB is taken: the route answers
        async with http.post(target, data=b"x" * (MAX_BODY + 1)) as r:
            assert r.status == 413
            error = (await r.json())["error"]
        assert error["code"] == "ContentTooLarge" and error["limit"] == MAX_BODY
        assert "POST /v1/workers/ghost/restart" in error["message"]

        async def chunked(size: int) -> AsyncIterator[bytes]:
            # No Content-Length: the limit holds on what arrives.
            for _ in range(size // 65536):
                yield b"y" * 65536
            yield b"y" * (size % 65536)

        async with http.post(target, data=chunked(MAX_BODY + 1)) as r:
            assert r.request_info.headers.get("Transfer-Encoding") == "chunked"
            assert r.status == 413
            assert (await r.json())["error"]["code"] == "ContentTooLarge"
        async with http.post(target, data=chunked(MAX_BODY)) as r:
            assert r.status == 404
        # A large body is refused before the token is asked for? No: the token first.
        async with http.post(
            target, data=b"x" * (MAX_BODY + 1), headers={"Authorization": ""}
        ) as r:
            assert r.status == 401


async def test_unknown_routes_and_methods_are_json(serve: Serve) -> None:
    async with serve() as (_, url), aiohttp.ClientSession() as http:
        async with http.get(url + "/v2/nothing") as r:
            assert r.status == 404
            assert (await r.json())["error"]["code"] == "NotFound"
        async with http.patch(url + "/v1/status") as r:
            assert r.status == 405
            assert set(r.headers["Allow"].split(",")) == {"GET", "HEAD"}
            assert (await r.json())["error"]["code"] == "MethodNotAllowed"


@pytest.fixture
async def buggy(tmp_path: Path) -> AsyncIterator[str]:
    """A hive whose app has one more route that fails as a bug would, before and after it
    started a stream."""

    async def boom(request: web.Request) -> web.StreamResponse:
        raise KeyError("the secret word is " + TOKEN)

    async def stream_boom(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b": connected\n\n")
        raise ValueError("mid-stream")

    manager = Manager(Settings(home=tmp_path / "home", console=False))
    app = create_app(manager)
    app.router.add_get("/v1/boom", boom)
    app.router.add_get("/v1/boom-stream", stream_boom)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url(""))
    finally:
        await server.close()


async def test_a_bug_is_a_500_with_a_reference_and_the_traceback_only_in_the_log(
    buggy: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="hive.api.guard")
    async with aiohttp.ClientSession() as http:
        for accept in ("application/json", "text/html"):
            async with http.get(buggy + "/v1/boom", headers={"Accept": accept}) as r:
                assert r.status == 500
                assert r.content_type == "application/json"
                body = await r.text()
                error = (await r.json())["error"]
            assert error["code"] == "InternalError"
            assert "Traceback" not in body and "KeyError" not in body and TOKEN not in body
            reference = error["reference"]
            assert re.fullmatch(r"[0-9a-f]{12}", reference)
            assert f"reference {reference}" in error["message"]
            logged = [r for r in caplog.records if reference in r.getMessage()]
            assert logged and logged[0].exc_info is not None  # the traceback, in the log
        async with http.get(buggy + "/v1/boom-stream") as r:
            assert r.status == 200
            assert await r.read() == b": connected\n\n"  # the stream ends, nothing else
    assert any("GET /v1/boom-stream failed" in r.getMessage() for r in caplog.records)


# -- cross-site requests and media types ------------------------------------------------
EVIL = "https://evil.example"
JOB = b'{"operation":"hive_check"}'
AS_JSON = {"Content-Type": "application/json"}


async def answer(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes | None = None,
) -> tuple[int, dict[str, object]]:
    async with http.request(method, url, data=body, headers=headers) as r:
        assert r.content_type == "application/json"
        return r.status, await r.json()


async def test_a_web_page_of_another_site_cannot_change_hives_state(serve: Serve) -> None:
    """Without a token (the loopback default), a page the user opens could POST a job
    (text/plain needs no preflight) or discover a Queen with an <img>: refused with 403
    saying why and what to do; reads, and clients that are no browser, are not affected."""
    async with (
        serve(cors_origins=(ORIGIN,)) as (manager, url),
        aiohttp.ClientSession() as http,
    ):
        queen = f"{url}/v1/capabilities?queen_url=http://127.0.0.1:9"
        refused = [
            ("POST", url + "/v1/jobs", {**AS_JSON, "Origin": EVIL}, JOB),
            ("POST", url + "/v1/jobs", {**AS_JSON, "Origin": "null"}, JOB),
            ("POST", url + "/v1/jobs", {**AS_JSON, "Sec-Fetch-Site": "cross-site"}, JOB),
            ("POST", url + "/v1/jobs", {**AS_JSON, "Sec-Fetch-Site": "same-site"}, JOB),
            ("DELETE", url + "/v1/jobs/job-x", {"Origin": EVIL}, None),
            ("DELETE", url + "/v1/desired/queen", {"Sec-Fetch-Site": "cross-site"}, None),
            ("POST", url + "/v1/workers/ghost/restart", {"Origin": EVIL}, None),
            ("GET", queen, {"Sec-Fetch-Site": "cross-site"}, None),
            ("GET", queen.replace("/v1/capabilities", "/capabilities"), {"Origin": EVIL}, None),
        ]
        for method, target, headers, body in refused:
            status, error = await answer(http, method, target, headers, body)
            assert status == 403, (method, target, headers, error)
            message = error["error"]["message"]  # type: ignore[index]
            assert error["error"]["code"] == "CrossSiteRequest"  # type: ignore[index]
            assert "--cors-origin" in message, message
        assert manager.queen.url is None  # no discovery happened
        assert manager.http_sources.api.records() == ()

        allowed = [  # a read from anywhere; a trusted origin; hive's own; no browser at all
            ("GET", url + "/v1/capabilities", {"Sec-Fetch-Site": "cross-site"}, None, 200),
            ("GET", url + "/v1/status", {"Origin": EVIL}, None, 200),
            ("POST", url + "/v1/jobs", {**AS_JSON, "Origin": ORIGIN}, JOB, 200),
            ("POST", url + "/v1/jobs", {**AS_JSON, "Origin": url}, JOB, 200),
            ("POST", url + "/v1/jobs", {**AS_JSON, "Sec-Fetch-Site": "same-origin"}, JOB, 200),
            ("POST", url + "/v1/jobs", {**AS_JSON, "Sec-Fetch-Site": "none"}, JOB, 200),
            ("POST", url + "/v1/jobs", AS_JSON, JOB, 200),
        ]
        for method, target, headers, body, expected in allowed:
            status, _ = await answer(http, method, target, headers, body)
            assert status == expected, (method, target, headers)


@pytest.mark.parametrize(
    ("method", "path", "content_type", "expected"),
    [
        ("POST", "/v1/jobs", None, 415),
        ("POST", "/v1/jobs", "text/plain", 415),
        ("POST", "/v1/jobs", "application/x-www-form-urlencoded", 415),
        ("POST", "/v1/jobs", "multipart/form-data; boundary=x", 415),
        ("POST", "/v1/jobs", "application/yaml", 415),
        ("POST", "/v1/jobs", "application/json", 200),
        ("POST", "/v1/jobs", "application/json; charset=utf-8", 200),
        ("POST", "/v1/jobs", "application/vnd.rbee+json", 200),
        ("PUT", "/v1/desired/team", "text/plain", 415),
        ("PUT", "/v1/desired/team", None, 415),
        ("PATCH", "/v1/desired/team", "application/x-www-form-urlencoded", 415),
        ("PUT", "/v1/desired/team", "application/json", 200),
        ("PUT", "/v1/desired/team", "application/yaml", 200),
        ("PATCH", "/v1/desired/team", "text/yaml", 200),
    ],
)
async def test_writes_take_only_the_media_types_they_read(
    serve: Serve, method: str, path: str, content_type: str | None, expected: int
) -> None:
    body = JOB if path == "/v1/jobs" else b"[]"
    async with serve() as (manager, url), aiohttp.ClientSession() as http:
        # aiohttp names bytes application/octet-stream unless told; None: no header at all.
        headers = {"Content-Type": content_type} if content_type else {}
        async with http.request(
            method, url + path, data=body, headers=headers, skip_auto_headers=["Content-Type"]
        ) as r:
            assert r.status == expected, await r.text()
            if expected == 415:
                error = (await r.json())["error"]
                assert error["code"] == "UnsupportedMediaType"
                assert "Content-Type" in error["message"] and error["accepted"]
                assert "team" not in manager.http_sources.names()
