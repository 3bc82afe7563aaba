"""The dashboard's files (hive/api/dashboard.py) on a real loopback server: served at `/`
and `/ui/...` with their content types and caching headers, open without the token (GET and
HEAD only) while every API route still needs it."""

from __future__ import annotations

import aiohttp
import pytest

from tests.api.conftest import Serve

TOKEN = "s3cret-s3cret-s3cret"


async def test_the_page_and_its_files_are_served_with_types_and_caching(serve: Serve) -> None:
    async with serve() as (_, url), aiohttp.ClientSession() as http:
        async with http.get(url + "/") as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "text/html; charset=utf-8"
            assert r.headers["Cache-Control"] == "no-cache"
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
            page = await r.text()
            etag = r.headers["ETag"]
        assert '<script type="module" src="/ui/js/app.js">' in page
        async with http.get(url + "/", headers={"If-None-Match": etag}) as r:
            assert r.status == 304
        for path, kind in [("js/app.js", "text/javascript"), ("app.css", "text/css")]:
            async with http.get(f"{url}/ui/{path}") as r:
                assert r.status == 200, path
                assert r.headers["Content-Type"].startswith(kind)
                assert r.headers["X-Content-Type-Options"] == "nosniff"
        async with http.get(url + "/ui/nothing.js") as r:
            assert r.status == 404
            assert (await r.json())["error"]["code"] == "NotFound"
        async with http.get(url + "/ui/../pyproject.toml") as r:
            assert r.status == 404


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_with_a_token_the_files_are_open_and_the_api_is_not(
    serve: Serve, method: str
) -> None:
    async with serve(token=TOKEN) as (_, url), aiohttp.ClientSession() as http:
        for path in ("/", "/ui/js/app.js", "/ui/app.css"):
            async with http.request(method, url + path) as r:
                assert r.status == 200, path
        async with http.request(method, url + "/v1/status") as r:
            assert r.status == 401
        async with http.request(method, url + "/ui/missing.js") as r:
            assert r.status == 404  # nothing secret: no token needed to learn it is not there


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_only_reads_of_the_files_are_served(serve: Serve, method: str) -> None:
    # Another method gets its 405 (as /health's do): no handler runs, nothing is told.
    async with serve(token=TOKEN) as (_, url), aiohttp.ClientSession() as http:
        for path in ("/", "/ui/js/app.js"):
            async with http.request(method, url + path) as r:
                assert r.status == 405, (method, path)
                assert r.headers["Allow"] == "GET,HEAD"
        async with http.request(method, url + "/v1/status") as r:
            assert r.status == 401
