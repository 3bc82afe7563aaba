"""The downloader against small real servers on loopback: servers that say no size, send
no HEAD, or answer 416 for a partial that is already whole; a source URL with credentials;
a partial an older hive described; a server whose headers would make endless messages; a
server gone silent while the one cancel event is set; the thread its callbacks come from."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import stat
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from hive.actuators.download import RetryableHttp, fetch_model, still_needed
from hive.actuators.remote import RemoteFile
from hive.actuators.transfer import Throttle
from hive.errors import HiveError
from hive.model.actions import ProvisionModel
from hive.model.observed import PartialState
from hive.model.provisioning import Cancelled, Progress, ProvisionOutcome
from testkit.hub import Hub, serving, sizeless_server
from testkit.silent_server import Stage, silent_server
from tests.conftest import apoll


@pytest.fixture
async def sizeless(tiny_model: Path) -> AsyncIterator[tuple[str, bytes]]:
    """A server without HEAD (405) that streams the model chunked (no Content-Length) and
    honours Range."""
    body = await asyncio.to_thread(tiny_model.read_bytes) + bytes(3_000_000)
    async with sizeless_server(body) as url:
        yield url, body


async def download(
    url: str,
    directory: Path,
    *,
    progress: list[Progress] | None = None,
    attempts: int = 5,
    narrate: Any = lambda *a, **k: None,
) -> ProvisionOutcome:
    """`fetch_model` of `url` into `directory`, in a thread (the servers run in this loop)."""
    action = ProvisionModel(name="m", reason="test", source=url, resolved_source=url)
    return await asyncio.to_thread(
        fetch_model,
        action,
        directory=directory,
        now=datetime.now(UTC),
        cancel=threading.Event(),
        throttle=Throttle(shared=None, rate=None),
        progress=(lambda p: None) if progress is None else progress.append,
        narrate=narrate,
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


async def test_a_partial_an_older_hive_described_still_resumes(
    hub: Hub, tiny_model: Path, tmp_path: Path
) -> None:
    """An older hive wrote the sidecar 0644 with the URL as written, user info and all;
    hive now sends user info as a header, not in the URL: the two still name one file."""
    hub.add_plain_file("m.gguf", tiny_model, basic=("alice", "S3CR3T-XYZ"), token="T0K3N-QQQ")
    hub.drop_after(1000)
    url = f"http://alice:S3CR3T-XYZ@127.0.0.1:{hub.port}/m.gguf?token=T0K3N-QQQ"
    with pytest.raises(RetryableHttp):
        await download(url, tmp_path / "m", attempts=1)
    sidecar = tmp_path / "m" / "model.gguf.partial.json"
    old = json.loads(sidecar.read_bytes())
    old["url"] = url  # as the older hive stored it
    sidecar.write_text(json.dumps(old))
    sidecar.chmod(0o644)

    said: list[str] = []
    await download(url, tmp_path / "m", attempts=1, narrate=lambda a, m, **k: said.append(m))
    gets = [r for r in hub.requests_to("plain", "GET") if r.status in (200, 206)]
    assert gets[-1].range_start == 1000, said
    assert not [m for m in said if "starting over" in m]
    got = await asyncio.to_thread((tmp_path / "m" / "model.gguf").read_bytes)
    assert got == await asyncio.to_thread(tiny_model.read_bytes)


def test_what_is_still_needed_counts_each_part_of_known_size_less_its_partial(
    tmp_path: Path,
) -> None:
    """The one free-space check, before anything is written: a part whose size the server
    did not say counts nothing, the others what their partials still lack."""
    (tmp_path / "a.gguf.partial").write_bytes(bytes(300))
    (tmp_path / "b.gguf.partial").write_bytes(bytes(50))
    remotes = [
        RemoteFile(url="http://h.test/a.gguf", filename="a.gguf", size=1000),
        RemoteFile(url="http://h.test/b.gguf", filename="b.gguf", size=None),
        RemoteFile(url="http://h.test/c.gguf", filename="c.gguf", size=500),
    ]
    assert still_needed(tmp_path, remotes, ["a.gguf", "b.gguf", "c.gguf"]) == 700 + 500


@pytest.fixture
async def rambling(tiny_model: Path) -> AsyncIterator[tuple[str, bytes, dict[str, str]]]:
    """A server whose ETag (or Content-Range) runs to thousands of characters: `answers`
    says which: {"etag": "change"} gives the GET another ETag than the HEAD, {"range":
    "bad"} answers a resume with a range that is not the one asked for."""
    body = await asyncio.to_thread(tiny_model.read_bytes)
    answers: dict[str, str] = {}

    async def get(request: web.Request) -> web.StreamResponse:
        etag = '"' + "A" * 5000 + '"'
        if request.method == "HEAD":
            return web.Response(headers={"ETag": etag, "Content-Length": str(len(body))})
        if answers.get("etag") == "change":
            etag = '"' + "B" * 5000 + '"'
        headers = {"ETag": etag}
        if request.headers.get("Range") and answers.get("range") == "bad":
            headers["Content-Range"] = "bytes " + "9" * 5000
            return web.Response(status=206, body=body, headers=headers)
        return web.Response(body=body, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/m.gguf", get)
    async with serving(app) as base:
        yield f"{base}/m.gguf", body, answers


async def test_a_servers_long_etag_is_quoted_bounded(
    rambling: tuple[str, bytes, dict[str, str]], tmp_path: Path
) -> None:
    url, _, answers = rambling
    answers["etag"] = "change"
    said: list[str] = []
    with pytest.raises(HiveError) as failed:
        await download(url, tmp_path / "m", attempts=1, narrate=lambda a, m, **k: said.append(m))
    assert "the file changed on the server" in failed.value.message
    assert "AAAA" in failed.value.message  # quoted, but only so far
    for message in [failed.value.message, *said]:
        assert len(message) < 600, len(message)


async def test_a_servers_long_content_range_is_quoted_bounded(
    rambling: tuple[str, bytes, dict[str, str]], tmp_path: Path
) -> None:
    url, body, answers = rambling
    answers["range"] = "bad"
    directory = tmp_path / "m"
    directory.mkdir()
    (directory / "model.gguf.partial").write_bytes(body[:1000])
    state = PartialState(url=url, etag="A" * 5000, size=len(body), started_at=datetime.now(UTC))
    (directory / "model.gguf.partial.json").write_text(state.model_dump_json())
    with pytest.raises(RetryableHttp) as failed:
        await download(url, directory, attempts=1)
    assert "asked for byte 1000, got range '9999" in failed.value.message
    assert len(failed.value.message) < 600, len(failed.value.message)


class InThread:
    """`fetch_model` of `url` in a thread of its own, as the reconciler runs it: what it
    returned or raised, what it narrated, and every thread its callbacks were called from."""

    def __init__(self, url: str, directory: Path, *, cancel: threading.Event) -> None:
        self.url, self.directory, self.cancel = url, directory, cancel
        self.callers: set[threading.Thread] = set()
        self.progress: list[Progress] = []
        self.said: list[str] = []
        self.outcome: ProvisionOutcome | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-download")
        self.thread.start()

    def _run(self) -> None:
        action = ProvisionModel(name="m", reason="test", source=self.url, resolved_source=self.url)
        try:
            self.outcome = fetch_model(
                action,
                directory=self.directory,
                now=datetime.now(UTC),
                cancel=self.cancel,
                throttle=Throttle(shared=None, rate=None),
                progress=self._progress,
                narrate=self._narrate,
            )
        except BaseException as exc:
            self.error = exc

    def _progress(self, p: Progress) -> None:
        self.callers.add(threading.current_thread())
        self.progress.append(p)

    def _narrate(self, action: str, message: str, **data: object) -> None:
        self.callers.add(threading.current_thread())
        self.said.append(action)

    async def ended(self, within: float) -> None:
        await apoll(lambda: not self.thread.is_alive(), within=within, what="fetch_model's end")


@pytest.mark.parametrize("stage", ["head", "headers", "body", "retry"])
async def test_one_cancel_event_stops_a_download_wherever_it_waits(
    stage: Stage, tiny_model: Path, tmp_path: Path
) -> None:
    """A server silent on the HEAD, on the GET's answer, mid-body, or a Retry-After of five
    minutes: setting the cancel event ends the download at once (not after a read timeout
    or the wait), the connection is let go, and no thread of the download is left."""
    body = await asyncio.to_thread(tiny_model.read_bytes) + bytes(1_000_000)
    before = set(threading.enumerate())
    async with silent_server(body, stage=stage) as silent:
        cancel = threading.Event()
        run = InThread(silent.url, tmp_path / "m", cancel=cancel)
        if stage == "retry":
            await apoll(lambda: "model_download_retry" in run.said, what="the wait to retry")
        else:
            await apoll(lambda: silent.holding, what="the server to hold the request")
        cancel.set()
        await run.ended(within=5)  # the read timeout is 60 s, the Retry-After 300 s
        assert isinstance(run.error, Cancelled), repr(run.error)
        if stage != "retry":
            await apoll(lambda: silent.gone, within=5, what="the connection to be let go")
    left = [
        t for t in threading.enumerate() if t not in before and not t.name.startswith("asyncio")
    ]
    assert left == []


async def test_progress_and_narration_come_from_the_thread_that_moves_the_bytes(
    sizeless: tuple[str, bytes], tmp_path: Path
) -> None:
    """The callbacks are called from the download's own thread, never from the event loop
    (whose caller hands them over once); a resume narrates, the rest reports progress."""
    url, body = sizeless
    directory = tmp_path / "m"
    directory.mkdir()
    (directory / "model.gguf.partial").write_bytes(body[:1000])
    state = PartialState(url=url, etag=None, size=None, started_at=datetime.now(UTC))
    (directory / "model.gguf.partial.json").write_text(state.model_dump_json())
    run = InThread(url, directory, cancel=threading.Event())
    await run.ended(within=30)
    assert run.error is None and run.outcome is not None
    assert "model_download_resumed" in run.said
    assert run.progress[-1].done == len(body)
    assert run.callers == {run.thread}
