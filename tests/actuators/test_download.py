"""The downloader against small real servers on loopback: servers that say no size, send
no HEAD, or answer 416 for a partial that is already whole; a source URL with credentials."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import stat
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from hive.actuators.download import RetryableHttp, Throttle, download_model
from hive.actuators.provision import Progress
from hive.errors import HiveError
from hive.model.actions import ProvisionModel
from hive.model.observed import PartialState
from tests.hub import Hub


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


SECRETS = (b"S3CR3T-XYZ", b"T0K3N-QQQ", base64.b64encode(b"alice:S3CR3T-XYZ"))


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    async with Hub() as h:
        yield h


def _download(url: str, directory: Path, session: aiohttp.ClientSession) -> Any:
    action = ProvisionModel(name="m", reason="test", source=url, resolved_source=url)
    return download_model(
        action,
        directory=directory,
        session=session,
        now=datetime.now(UTC),
        cancel=threading.Event(),
        throttle=Throttle(shared=None, rate=None),
        progress=lambda p: None,
        narrate=lambda *a, **k: None,
        attempts=1,
    )


async def test_credentials_in_the_url_go_as_a_header_and_are_stored_nowhere(
    hub: Hub, tiny_model: Path, tmp_path: Path
) -> None:
    hub.add_plain_file("m.gguf", tiny_model, basic=("alice", "S3CR3T-XYZ"), token="T0K3N-QQQ")
    url = f"http://alice:S3CR3T-XYZ@127.0.0.1:{hub.port}/m.gguf?token=T0K3N-QQQ"
    async with aiohttp.ClientSession() as session:
        outcome = await _download(url, tmp_path / "m", session)
    basic = "Basic " + base64.b64encode(b"alice:S3CR3T-XYZ").decode()
    served = hub.requests_to("plain")
    assert [(r.method, r.status) for r in served] == [("HEAD", 200), ("GET", 200)]
    assert all(r.headers.get("Authorization") == basic for r in served)
    assert outcome.metadata.source == f"http://alice:***@127.0.0.1:{hub.port}/m.gguf?token=***"
    assert outcome.metadata.url == f"http://127.0.0.1:{hub.port}/m.gguf?token=***"
    metadata = tmp_path / "m" / "metadata.json"
    assert stat.S_IMODE(metadata.stat().st_mode) == 0o600
    assert not [s for s in SECRETS if s in metadata.read_bytes()]


async def test_a_failed_download_names_its_url_redacted_in_its_error_and_sidecar(
    hub: Hub, tiny_model: Path, tmp_path: Path
) -> None:
    hub.add_plain_file("m.gguf", tiny_model, basic=("alice", "S3CR3T-XYZ"), token="T0K3N-QQQ")
    hub.drop_after(1000)
    url = f"http://alice:S3CR3T-XYZ@127.0.0.1:{hub.port}/m.gguf?token=T0K3N-QQQ"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(RetryableHttp) as failed:
            await _download(url, tmp_path / "m", session)
    assert f"http://127.0.0.1:{hub.port}/m.gguf?token=***: the connection ended" in str(
        failed.value
    )
    sidecar = tmp_path / "m" / "model.gguf.partial.json"
    state = PartialState.model_validate_json(sidecar.read_bytes())
    assert state.url == f"http://127.0.0.1:{hub.port}/m.gguf?token=***"
    assert state.last_error is not None and "token=***" in state.last_error
    assert stat.S_IMODE(sidecar.stat().st_mode) == 0o600
    assert not [s for s in SECRETS if s in sidecar.read_bytes()]

    # The partial resumes: its sidecar's redacted URL matches the source's.
    async with aiohttp.ClientSession() as session:
        await _download(url, tmp_path / "m", session)
    gets = [r for r in hub.requests_to("plain", "GET") if r.status in (200, 206)]
    assert gets[-1].range_start == 1000


async def test_an_unreachable_source_is_named_redacted(tmp_path: Path) -> None:
    url = "http://alice:S3CR3T-XYZ@127.0.0.1:1/m.gguf?token=T0K3N-QQQ"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(HiveError) as failed:
            await _download(url, tmp_path / "m", session)
    assert failed.value.message.startswith("http://alice:***@127.0.0.1:1/m.gguf?token=***: ")
    assert not [s for s in SECRETS if s.decode() in failed.value.message]
