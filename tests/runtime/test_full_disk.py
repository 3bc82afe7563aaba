"""The reconcile loop in-process with its home on a real small tmpfs, downloading from a
server that never says the file's size: the disk fills up mid-body, and then the sidecar
cannot be written either. Both are InsufficientSpace, said once per attempt, with no
traceback logged; the download resumes once the filesystem grows."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hive.model.events import Event
from hive.model.ids import Kind, ObjectKey
from hive.runtime.manager import Manager
from hive.settings import Settings
from testkit.hub import sizeless_server
from tests.conftest import apoll, grow, model_yaml, write_atomic

MB = 1_000_000


@pytest.fixture
def small_disk_size() -> str:
    return "8m"  # less than the 12 MB the server sends


@pytest.fixture
async def sizeless(tiny_model: Path) -> AsyncIterator[tuple[str, bytes]]:
    """A server without HEAD that streams 12 MB chunked (no Content-Length), honouring
    Range."""
    body = await asyncio.to_thread(tiny_model.read_bytes) + bytes(12 * MB)
    async with sizeless_server(body) as url:
        yield url, body


async def test_a_download_of_unknown_size_filling_the_disk_is_insufficient_space(
    tmp_path: Path,
    small_disk: Path,
    sizeless: tuple[str, bytes],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, body = sizeless
    desired = tmp_path / "desired"
    desired.mkdir()
    settings = Settings(
        home=small_disk / "home",
        desired=(desired,),
        console=False,
        backoff_base=0.05,
        backoff_cap=0.2,
    )
    manager = Manager(settings)
    events: list[Event] = []
    manager.bus.add_listener(events.append)
    key = ObjectKey.of(Kind.MODEL, "m")
    caplog.set_level(logging.WARNING)
    await manager.start()
    try:
        write_atomic(desired / "m.yaml", model_yaml("m", url))

        def failures() -> list[Event]:
            return [e for e in events if e.action == "model_download_failed"]

        # The first attempt fills the disk mid-body; the next ones cannot even write the
        # sidecar that records the attempt.
        await apoll(lambda: len(failures()) >= 3, within=30, what="three failed attempts")
        status = manager.statuses[key]
        degraded = next(c for c in status.conditions if c.type == "Degraded")
        assert degraded.reason == "InsufficientSpace"
        for event in failures()[:3]:
            assert event.data["reason"] == "InsufficientSpace", event.message
            assert "unknown (the server did not say the size)" in event.message
            assert "of None" not in event.message
            assert f"filesystem {small_disk}" in event.message
            assert "MB free" in event.message
            assert "kept and resumes when space is freed" in event.message
        starts = [e for e in events if e.action == "model_download_start"]
        assert len(failures()) in (len(starts), len(starts) - 1)  # one per attempt
        partial = manager.catalog.directory("m") / "model.gguf.partial"
        kept = partial.stat().st_size
        assert kept > MB

        await asyncio.to_thread(grow, small_disk, "32m")
        await apoll(
            lambda: manager.statuses[key].phase == "Available",
            within=30,
            what="the download once the disk grew",
        )
        assert any(e.action == "model_download_resumed" for e in events)
        assert (manager.catalog.directory("m") / "model.gguf").read_bytes() == body
    finally:
        await manager.stop()
    tracebacks = [r for r in caplog.records if r.exc_info and r.name.startswith("hive")]
    assert not tracebacks, [r.getMessage() for r in tracebacks]
