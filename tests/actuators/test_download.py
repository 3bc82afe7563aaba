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

import aiohttp
import pytest

from hive.actuators.download import RetryableHttp, Throttle, download_model
from hive.actuators.provision import Progress, ProvisionOutcome
from hive.errors import HiveError
from hive.model.actions import ProvisionModel
from hive.model.observed import PartialState
from tests.hub import Hub, sizeless_server


@pytest.fixture
async def sizeless(tiny_model: Path) -> AsyncIterator[tuple[str, bytes]]:
    """A server without HEAD (405) that streams the model chunked (no Content-Length) and
    honours Range."""
    body = await asyncio.to_thread(tiny_model.read_bytes) + bytes(3_000_000)
    async with sizeless_server(body) as url:
        yield url, body


async def download(
    url: str, directory: Path, *, progress: list[Progress] | None = None, attempts: int = 5
) -> ProvisionOutcome:
    """`download_model` of `url` into `directory`, in a session of its own."""
    action = ProvisionModel(name="m", reason="test", source=url, resolved_source=url)
    async with aiohttp.ClientSession() as session:
        return await download_model(
            action,
            directory=directory,
            session=session,
            now=datetime.now(UTC),
            cancel=threading.Event(),
            throttle=Throttle(shared=None, rate=None),
            progress=(lambda p: None) if progress is None else progress.append,
            narrate=lambda *a, **k: None,
            attempts=attempts,
        )


async def test_a_server_without_head_or_size(sizeless: tuple[str, bytes], tmp_path: Path) -> None:
    url, body = sizeless
    progress: list[Progress] = []
    sha = (await download(url, tmp_path / "m", progress=progress)).metadata.sha256
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
    sha = (await download(url, directory)).metadata.sha256
    assert sha == hashlib.sha256(body).hexdigest()
    assert (directory / "model.gguf").stat().st_size == len(body)


SECRETS = (b"S3CR3T-XYZ", b"T0K3N-QQQ", base64.b64encode(b"alice:S3CR3T-XYZ"))


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    async with Hub() as h:
        yield h


async def test_credentials_in_the_url_go_as_a_header_and_are_stored_nowhere(
    hub: Hub, tiny_model: Path, tmp_path: Path
) -> None:
    hub.add_plain_file("m.gguf", tiny_model, basic=("alice", "S3CR3T-XYZ"), token="T0K3N-QQQ")
    url = f"http://alice:S3CR3T-XYZ@127.0.0.1:{hub.port}/m.gguf?token=T0K3N-QQQ"
    outcome = await download(url, tmp_path / "m", attempts=1)
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
    with pytest.raises(RetryableHttp) as failed:
        await download(url, tmp_path / "m", attempts=1)
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
    await download(url, tmp_path / "m", attempts=1)
    gets = [r for r in hub.requests_to("plain", "GET") if r.status in (200, 206)]
    assert gets[-1].range_start == 1000


async def test_an_unreachable_source_is_named_redacted(tmp_path: Path) -> None:
    url = "http://alice:S3CR3T-XYZ@127.0.0.1:1/m.gguf?token=T0K3N-QQQ"
    with pytest.raises(HiveError) as failed:
        await download(url, tmp_path / "m", attempts=1)
    assert failed.value.message.startswith("http://alice:***@127.0.0.1:1/m.gguf?token=***: ")
    assert not [s for s in SECRETS if s.decode() in failed.value.message]
