"""The job API and desired state over HTTP as an attacker sees them: a secret in a request
never comes back (names, stream lines, events), hostile bodies end in a bounded answer, a
large body does not stall the loop."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from pathlib import Path

import aiohttp
import pytest

from hive.api import desired as desired_api
from hive.client import HiveClient
from hive.core.parse import parse_text
from hive.model.views import JobEnd, JobLine
from tests.api.conftest import Serve
from tests.conftest import apoll, install_scripted_runtime, model_yaml

#: What a credential in a URL looks like here: a password, and a Hugging Face token.
PASSWORD = "pw-s3cr3t-attack"
HF_TOKEN = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567"


def closed_port() -> int:
    """A loopback port nothing listens on (a download from it fails at once, and retries)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def lines_until(client: HiveClient, job_id: str, action: str) -> list[JobLine]:
    """The job's lines up to the first `action` (the job goes on)."""
    lines: list[JobLine] = []

    async def read() -> None:
        async for item in client.job_stream(job_id):
            assert not isinstance(item, JobEnd), (item, lines)
            lines.append(item)
            if item.action == action:
                return

    await asyncio.wait_for(read(), 30)
    return lines


async def test_a_download_url_with_a_password_shows_it_nowhere(serve: Serve) -> None:
    """`https://user:password@host/<hf token>/x.gguf` without `name`: the Model's name is
    the file's (never taken from the user info), and neither a line of the job nor an event
    of hive repeats the password or the token."""
    url = f"https://user:{PASSWORD}@127.0.0.1:{closed_port()}/{HF_TOKEN}/x.gguf#{HF_TOKEN}"
    async with serve() as (manager, base), HiveClient(base) as client:
        created = await client.submit_job({"operation": "model_download", "model": url})
        lines = await lines_until(client, created.job_id, "model_download_failed")
        await client.cancel_job(created.job_id)
        said = json.dumps([line.model_dump(mode="json") for line in lines])
        assert PASSWORD not in said
        assert HF_TOKEN not in said
        start = next(line for line in lines if line.action == "model_download_start")
        assert start.object == "Model/x"
        events, _ = manager.bus.read(0, limit=10_000)
        narrated = json.dumps([e.model_dump(mode="json") for e in events])
        assert PASSWORD not in narrated
        assert HF_TOKEN not in narrated
        await apoll(lambda: not manager.http_sources.api.records(), what="the record undone")


async def test_worker_spawn_on_a_port_another_process_holds_ends_in_error(
    serve: Serve, tmp_path: Path, tiny_model: Path, worker_ports: range
) -> None:
    """A port in use by a process that is not hive's: the job ends ([ERROR] naming the
    port) and its record is undone, instead of waiting for ever."""
    install_scripted_runtime(tmp_path / "home")
    desired = tmp_path / "desired"
    desired.mkdir()
    (desired / "m.yaml").write_text(model_yaml("tiny", f"file:{tiny_model}"))
    settings = {"worker_ports": f"{worker_ports.start}-{worker_ports.stop - 1}"}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with serve(**settings) as (manager, base), HiveClient(base) as client:
            created = await client.submit_job(
                {
                    "operation": "worker_spawn",
                    "model": "tiny",
                    "worker": "cpu",
                    "runtime": "scripted",
                    "port": port,
                }
            )

            async def read() -> JobEnd:
                async for item in client.job_stream(created.job_id):
                    if isinstance(item, JobEnd):
                        return item
                raise AssertionError("the stream ended without a marker")

            end = await asyncio.wait_for(read(), 30)
            assert end.outcome == "error", end
            assert f"port {port}" in end.reason and "PortInUse" in end.reason
            assert manager.http_sources.api.records() == ()


def tiny_records(count: int) -> bytes:
    """`count` small Model records as one JSON list (the Queen's way to send a set)."""
    return json.dumps(
        [
            {
                "apiVersion": "hive/v1",
                "kind": "Model",
                "metadata": {"name": f"m{i}"},
                "spec": {"source": "file:/nowhere/m.gguf", "state": "absent"},
            }
            for i in range(count)
        ],
        separators=(",", ":"),
    ).encode()


async def test_a_put_is_parsed_off_the_loop(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    """While a body is parsed (a second for 1 MiB), hive answers other requests."""
    parsing, answered = threading.Event(), threading.Event()
    waited: list[bool] = []
    real = parse_text

    def slow_parse(*args: object, **kwargs: object) -> object:
        parsing.set()
        waited.append(answered.wait(5))  # False: nothing could answer while it parsed
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(desired_api, "parse_text", slow_parse)
    async with serve() as (_manager, base), aiohttp.ClientSession() as session:
        put = asyncio.ensure_future(
            session.put(
                f"{base}/v1/desired/one",
                data=tiny_records(1),
                headers={"Content-Type": "application/json"},
            )
        )
        await apoll(parsing.is_set, what="the parse to start")
        async with session.get(f"{base}/health") as health:
            assert health.status == 200
        answered.set()
        async with await put as response:
            assert response.status == 200, await response.text()
    assert waited == [True]
