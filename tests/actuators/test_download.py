"""The downloader against small real servers on loopback: servers that say no size, send
no HEAD, or answer 416 for a partial that is already whole."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from hive.actuators.download import Throttle, download_model
from hive.actuators.provision import Progress
from hive.model.actions import ProvisionModel
from hive.model.observed import PartialState


@pytest.fixture
async def sizeless(tiny_model: Path) -> AsyncIterator[tuple[str, bytes]]:
    """A server without HEAD (405) that streams the model chunked (no Content-Length) and
    honours Range."""
    body = await asyncio.to_thread(tiny_model.read_bytes) + bytes(3_000_000)

    async def get(request: web.Request) -> web.StreamResponse:
        if request.method == "HEAD":
            raise web.HTTPMethodNotAllowed("HEAD", ["GET"])
        start = 0
        if (rng := request.headers.get("Range")) is not None:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            if start >= len(body):
                raise web.HTTPRequestRangeNotSatisfiable(
                    headers={"Content-Range": f"bytes */{len(body)}"}
                )
        response = web.StreamResponse(status=206 if start else 200)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(start, len(body), 256 * 1024):
            await response.write(body[i : i + 256 * 1024])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_route("*", "/m.gguf", get)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/m.gguf", body
    finally:
        await runner.cleanup()


async def fetch(url: str, directory: Path, progress: list[Progress]) -> str:
    action = ProvisionModel(name="m", reason="test", source=url, resolved_source=url)
    async with aiohttp.ClientSession() as session:
        outcome = await download_model(
            action,
            directory=directory,
            session=session,
            now=datetime.now(UTC),
            cancel=threading.Event(),
            throttle=Throttle(shared=None, rate=None),
            progress=progress.append,
            narrate=lambda *a, **k: None,
        )
    assert outcome.metadata.sha256 is not None
    return outcome.metadata.sha256


async def test_a_server_without_head_or_size(sizeless: tuple[str, bytes], tmp_path: Path) -> None:
    url, body = sizeless
    progress: list[Progress] = []
    sha = await fetch(url, tmp_path / "m", progress)
    assert sha == hashlib.sha256(body).hexdigest()
    assert (tmp_path / "m" / "model.gguf").read_bytes() == body
    assert progress[-1].done == len(body)


async def test_a_whole_partial_answered_416_is_complete(
    sizeless: tuple[str, bytes], tmp_path: Path
) -> None:
    """hive died after the last byte but before publishing: the resume asks for the bytes
    after the end, the server says 416, and the download is complete, not failed."""
    url, body = sizeless
    directory = tmp_path / "m"
    directory.mkdir()
    (directory / "model.gguf.partial").write_bytes(body)
    state = PartialState(url=url, etag=None, size=None, started_at=datetime.now(UTC))
    (directory / "model.gguf.partial.json").write_text(state.model_dump_json())
    sha = await fetch(url, directory, [])
    assert sha == hashlib.sha256(body).hexdigest()
    assert (directory / "model.gguf").stat().st_size == len(body)
