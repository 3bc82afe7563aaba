"""What the API shows of a Model whose source URL carries credentials: the source, the
catalog entry and every message redacted, in every answer (the record in memory keeps the
real URL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from hive.model.ids import Kind, ObjectKey
from hive.runtime.manager import Manager
from tests.api.conftest import Serve
from tests.conftest import apoll, model_yaml


@pytest.fixture
async def origin() -> AsyncIterator[int]:
    """A server whose HEAD says the file is there and whose GET says it is not: the
    download starts (a catalog entry is written) and fails for good."""

    async def answer(request: web.Request) -> web.StreamResponse:
        if request.method == "HEAD":
            return web.Response(headers={"Content-Length": "10", "ETag": '"e"'})
        return web.Response(status=404)

    app = web.Application()
    app.router.add_route("*", "/m.gguf", answer)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server.port or 0
    finally:
        await server.close()


@pytest.fixture
async def hive(tmp_path: Path, origin: int, serve: Serve) -> AsyncIterator[tuple[Manager, str]]:
    desired = tmp_path / "desired"
    desired.mkdir()
    source = f"http://alice:S3CR3T-XYZ@127.0.0.1:{origin}/m.gguf?token=T0K3N-QQQ"
    (desired / "m.yaml").write_text(model_yaml("m", source))
    async with serve() as served:
        yield served


async def test_a_source_with_credentials_is_shown_redacted(
    hive: tuple[Manager, str], origin: int
) -> None:
    manager, url = hive
    shown = f"http://alice:***@127.0.0.1:{origin}/m.gguf?token=***"
    wire = f"http://127.0.0.1:{origin}/m.gguf?token=***"  # the URL sent, user info apart
    key = ObjectKey.of(Kind.MODEL, "m")
    failed = await apoll(
        lambda: (s := manager.statuses.get(key)) and s.phase == "Failed",
        within=15,
        what="the download to fail",
    )
    assert failed
    record = manager.store.desired(key)
    assert record is not None and "S3CR3T-XYZ" in record.manifest.model_dump_json()  # to use
    async with aiohttp.ClientSession() as http:
        answers = {}
        for path in ("/v1/models", "/v1/models/m", "/v1/status", "/metrics"):
            async with http.get(url + path) as r:
                answers[path] = await r.text()
        async with http.get(url + "/v1/models/m") as r:
            model = await r.json()
    assert model["spec"]["source"] == shown
    assert model["status"]["message"].startswith(f"{wire}: not found (404)")
    metadata = model["observed"]["metadata"]
    assert (metadata["source"], metadata["url"]) == (shown, wire)
    assert metadata["error"].startswith(f"{wire}: not found (404)")
    events = [e for e in manager.bus.read(0, limit=1000)[0] if e.object == "Model/m"]
    assert any(shown in e.message for e in events)
    for where, text in [*answers.items(), ("events", str([e.model_dump() for e in events]))]:
        assert "S3CR3T" not in text and "T0K3N" not in text, where
