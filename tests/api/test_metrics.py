"""`GET /metrics` of a hive at work (a model downloaded from a loopback hub, one copied, a
worker running, an event stream and a log stream open): the reconciles by kind, the open
streams by route, the bytes downloads wrote, a family another part of hive declares, and
`promtool check metrics` on the real text when promtool is installed."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import Counter

from hive.model.ids import ObjectKey
from testkit.hub import ThreadedHub
from tests.api.conftest import Serve
from tests.conftest import apoll, install_scripted_runtime, model_yaml, worker_yaml

TOKEN = "s3cret-s3cret-s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def samples(text: str) -> dict[str, float]:
    """`name{labels}` → value, for every sample line."""
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


async def scrape(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url + "/metrics") as r:
        assert r.status == 200
        return await r.text()


async def test_metrics_of_a_hive_at_work(
    serve: Serve, tiny_model: Path, hub: ThreadedHub, worker_ports: range
) -> None:
    hub.add_plain_file("d.gguf", tiny_model)
    size = tiny_model.stat().st_size  # noqa: ASYNC240 (a test's setup)
    settings = {
        "token": TOKEN,
        "worker_ports": f"{worker_ports.start}-{worker_ports.stop - 1}",
        "gpu_probe": "none",
        "health_start_interval": 0.05,
        "stop_workers_on_exit": True,
    }
    async with serve(**settings) as (manager, url), aiohttp.ClientSession(headers=AUTH) as http:
        # Another part of hive adds its family with one line, counts with another.
        things = Counter(
            "hive_example_things",
            "Things by kind and outcome.",
            ["kind", "outcome"],
            registry=manager.metrics.registry,
        )
        things.labels("widget", "done").inc()
        before = samples(await scrape(http, url))
        assert before['hive_reconciles_total{kind="Model"}'] == 0
        assert before["hive_download_bytes_total"] == 0

        install_scripted_runtime(manager.settings.home)
        desired = manager.settings.desired[0]
        (desired / "m.yaml").write_text(
            model_yaml("m", f"file:{tiny_model}")
            + "---\n"
            + model_yaml("d", f"http://127.0.0.1:{hub.port}/d.gguf")
        )
        (desired / "w.yaml").write_text(worker_yaml("w", "m"))

        def phase_of(name: str) -> str | None:
            status = manager.statuses.get(ObjectKey.parse(name))
            return status.phase if status else None

        await apoll(lambda: phase_of("Worker/w") == "Running", what="Worker/w to run")
        await apoll(lambda: phase_of("Model/d") == "Available", what="Model/d downloaded")

        async with (
            http.get(url + "/v1/events") as events,
            http.get(url + "/v1/events?since=0") as again,
            http.get(url + "/v1/workers/w/logs?follow=1") as logs,
        ):
            for stream in (events, again, logs):
                assert stream.status == 200
            await events.content.readuntil(b"\n\n")  # `: connected`: the stream is open
            await again.content.readuntil(b"\n\n")
            await logs.content.readuntil(b"\n\n")
            text = await scrape(http, url)
        during = samples(text)
        assert during['hive_sse_subscribers{route="/v1/events"}'] == 2
        assert during['hive_sse_subscribers{route="/v1/workers/{name}/logs"}'] == 1
        assert during['hive_reconciles_total{kind="Model"}'] >= 2
        assert during['hive_reconciles_total{kind="Worker"}'] >= 1
        assert (
            during['hive_reconcile_duration_seconds_count{kind="Model"}']
            == (during['hive_reconciles_total{kind="Model"}'])
        )
        assert during["hive_download_bytes_total"] == size
        assert during['hive_example_things_total{kind="widget",outcome="done"}'] == 1
        assert "# TYPE hive_reconcile_duration_seconds histogram" in text

        async def closed() -> bool:
            after = samples(await scrape(http, url))
            return after['hive_sse_subscribers{route="/v1/events"}'] == 0 and (
                after['hive_sse_subscribers{route="/v1/workers/{name}/logs"}'] == 0
            )

        deadline = asyncio.get_running_loop().time() + 10
        while not await closed():  # the client went away: the handlers end
            assert asyncio.get_running_loop().time() < deadline, "streams still counted"
            await asyncio.sleep(0.05)

    promtool_check(text)


def promtool_check(text: str) -> None:
    """`promtool check metrics` passes on `text` (skipped without promtool)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_an_error_of_a_reconcile_is_counted_by_reason(serve: Serve, tmp_path: Path) -> None:
    async with serve() as (manager, url), aiohttp.ClientSession() as http:
        desired = manager.settings.desired[0]
        (desired / "m.yaml").write_text(model_yaml("m", f"file:{tmp_path / 'missing.gguf'}"))
        await apoll(
            lambda: (
                (
                    manager.metrics.registry.get_sample_value(
                        "hive_reconcile_errors_total", {"kind": "Model", "reason": "SourceNotFound"}
                    )
                    or 0
                )
                >= 1
            ),
            what="the failed reconcile to be counted",
        )
        text = await scrape(http, url)
    assert samples(text)['hive_reconcile_errors_total{kind="Model",reason="SourceNotFound"}'] >= 1
