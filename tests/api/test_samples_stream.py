"""`/v1/events?samples=true`: the machine's readings pushed on the event stream (the
dashboard's live numbers), beside the events, on a real loopback hive with a running
scripted worker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.api.conftest import Serve
from tests.api.test_dashboard_data import one_scripted_worker
from tests.api.test_openapi import SPEC_PATH, assert_valid


async def read_frames(url: str, *, until: Any, limit: int = 2000) -> list[dict[str, Any]]:
    """The stream's frames (`{"event", "id", "data"}`) until `until(frames)` holds."""
    frames: list[dict[str, Any]] = []
    frame: dict[str, Any] = {}
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as r:
        assert r.status == 200, await r.text()
        async for raw in r.content:
            line = raw.decode().rstrip("\n")
            if not line:
                if frame:
                    frames.append(frame)
                    frame = {}
                    if until(frames) or len(frames) >= limit:
                        return frames
                continue
            field, _, value = line.partition(": ")
            if field in ("event", "id", "data"):
                frame[field] = value
    return frames


def worker_sample(frames: list[dict[str, Any]]) -> dict[str, Any] | None:
    for f in frames:
        if f.get("event") == "sample":
            worker = json.loads(f["data"])["workers"].get("w")
            if worker and worker.get("tokens_per_second"):
                return f
    return None


async def test_samples_come_beside_the_events_without_ids(
    serve: Serve, tmp_path: Path, tiny_model: Path, worker_ports: range
) -> None:
    settings = one_scripted_worker(tmp_path, tiny_model, worker_ports, interval=0.1)
    async with serve(**settings) as (_manager, url):
        frames = await read_frames(
            url + "/v1/events?since=0&samples=true", until=lambda fs: worker_sample(fs)
        )
        sample = worker_sample(frames)
        assert sample is not None and "id" not in sample  # not an event: never replayed
        data = json.loads(sample["data"])
        worker = data["workers"]["w"]
        assert worker["rss_bytes"] > 1024 * 1024 and worker["cpu_percent"] >= 0
        assert worker["tokens_per_second"] == 42.5 and worker["busy_slots"] == 1.0
        assert data["memory_total_bytes"] > 0 and data["disk_total_bytes"] > 0
        assert_valid(yaml.safe_load(SPEC_PATH.read_text()), "SampleFrame", data)
        events = [json.loads(f["data"]) for f in frames if "id" in f]
        assert "worker_spawn_complete" in {e["action"] for e in events}  # the events too
        assert [e["id"] for e in events] == sorted(e["id"] for e in events)
        # Without the parameter, no sample frame at all.
        plain = await read_frames(url + "/v1/events?since=0", until=lambda fs: len(fs) >= 5)
        assert all(f.get("event") != "sample" for f in plain)
        async with aiohttp.ClientSession() as http, http.get(url + "/v1/events?samples=maybe") as r:
            assert r.status == 422 and "samples" in (await r.json())["error"]["message"]
