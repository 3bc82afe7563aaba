"""Jobs against a real `hive serve`: what they declared lives in the `api` source, so a
restarted hive comes back with it, and with their effects (the model, the worker)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hive.client import HiveClient
from hive.model.views import JobEnd, JobLine
from tests.conftest import Hive, install_scripted_runtime


def run_job(url: str, body: dict[str, Any]) -> tuple[list[JobLine], JobEnd]:
    async def go() -> tuple[list[JobLine], JobEnd]:
        async with HiveClient(url) as client:
            created = await client.submit_job(body)
            lines: list[JobLine] = []
            async for item in client.job_stream(created.job_id):
                if isinstance(item, JobEnd):
                    return lines, item
                lines.append(item)
        raise AssertionError("no end marker")

    return asyncio.run(asyncio.wait_for(go(), 60))


def test_a_restarted_hive_keeps_the_api_source_and_the_jobs_effects(
    hive_factory: Callable[..., Hive], tmp_path: Path, tiny_model: Path, worker_ports: range
) -> None:
    home = tmp_path / "home"
    install_scripted_runtime(home)
    args = [
        "--gpu-probe",
        "none",
        "--worker-ports",
        f"{worker_ports.start}-{worker_ports.stop - 1}",
    ]
    hive = hive_factory(desired=[], home=home, extra_args=args)
    _, end = run_job(
        hive.url, {"operation": "model_download", "model": f"file://{tiny_model}", "name": "tiny"}
    )
    assert end.outcome == "done", end
    lines, end = run_job(
        hive.url,
        {
            "operation": "worker_spawn",
            "hive_id": "localhost",
            "model": "tiny",
            "worker": "cpu",
            "device": 0,
        },
    )
    assert end.outcome == "done", (end, [line.action for line in lines])
    hive.stop()  # --stop-workers-on-exit: the worker ends with it

    persisted = json.loads((home / "state" / "desired" / "api.json").read_text())
    assert {r["metadata"]["name"] for r in persisted["records"]} == {"tiny", "tiny-cpu-0"}

    again = hive_factory(desired=[], home=home, extra_args=args)
    assert again.wait_phase("tiny", "Available")["source"]["name"] == "api"
    worker = again.wait_worker("tiny-cpu-0", "Running")
    assert worker["source"]["name"] == "api"
    lines, end = run_job(again.url, {"operation": "worker_process_list", "hive_id": "localhost"})
    assert end.outcome == "done"
    assert [line.message for line in lines if line.action == "worker_proc_list_entry"] == [
        f"PID {worker['observed']['pid']} | tiny | CPU 0 | running"
    ]
