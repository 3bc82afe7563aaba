"""A real `hive serve` and fake Queens of both generations (testkit/queen.py): discovery by
`--queen-url` and by `?queen_url=`, persisted across a restart of hive, and what `hive get
devices` and `hive get status` print."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import pytest

from testkit.queen import ThreadedQueen
from tests.conftest import Hive, poll, run_hive

pytestmark = pytest.mark.e2e

#: The defaults' behaviour on a fast clock.
FAST = {
    "HIVE_QUEEN_HEARTBEAT_INTERVAL": "0.1",
    "HIVE_QUEEN_BACKOFF_CAP": "0.2",
    "HIVE_QUEEN_READY_DELAYS": "0,0.2,0.2",
    "HIVE_QUEEN_TELEMETRY_INTERVAL": "0.1",
    "HIVE_SYSTEM_SAMPLE_INTERVAL": "0.1",
}


def test_a_restarted_hive_resumes_with_the_queens_it_discovered(
    tmp_path: Path, hive_factory: Callable[..., Hive]
) -> None:
    desired = tmp_path / "desired"
    desired.mkdir()
    with ThreadedQueen("seed") as seed, ThreadedQueen("current") as current:
        hive = hive_factory(desired=[desired], env=FAST, extra_args=["--gpu-probe", "none"])
        assert hive.get("/v1/status")["queen"]["url"] is None
        query = urllib.parse.urlencode({"queen_url": current.url})
        assert hive.get(f"/capabilities?{query}")["devices"][-1]["id"] == "CPU-0"
        poll(lambda: current.q.readies, what="a ready call to the current Queen")
        poll(lambda: len(current.q.telemetry) >= 2, what="telemetry frames")
        assert current.q.readies[0]["hive_url"] == hive.url
        # Another Queen replaces it: the seed's push starts, and that one is kept.
        query = urllib.parse.urlencode({"queen_url": seed.url})
        hive.get(f"/v1/capabilities?{query}")
        poll(lambda: seed.q.beats, what="a push beat to the seed Queen")
        saved = json.loads((hive.home / "state" / "queen.json").read_text())
        assert saved["queen_url"] == seed.url
        hive.stop()

        seen = len(seed.q.beats)
        restarted = hive_factory(desired=[desired], env=FAST, extra_args=["--gpu-probe", "none"])
        poll(lambda: len(seed.q.beats) > seen, what="beats from the restarted hive")
        queen = restarted.get("/v1/status")["queen"]
        assert queen["url"] == seed.url
        assert queen["discovered_via"] == "persisted"
        assert restarted.wait_event("queen_discovered")["data"]["via"] == "persisted"


def test_queen_url_flag_starts_the_heartbeats_and_a_bad_one_is_refused(
    tmp_path: Path, hive_factory: Callable[..., Hive]
) -> None:
    desired = tmp_path / "desired"
    desired.mkdir()
    with ThreadedQueen("current") as queen:
        hive = hive_factory(
            desired=[desired],
            env=FAST,
            extra_args=["--gpu-probe", "none", "--queen-url", queen.url + "/"],
        )
        poll(lambda: queen.q.readies, what="a ready call")
        poll(lambda: queen.q.telemetry, what="a telemetry frame")
        assert hive.get("/v1/status")["queen"]["discovered_via"] == "flag"
        assert not (hive.home / "state" / "queen.json").exists()  # configuration, not kept
    refused = run_hive(
        "serve",
        "--home",
        str(tmp_path / "other"),
        "--queen-url",
        "ftp://user:hunter2@queen",
        "--port",
        "0",
    )
    assert refused.returncode == 2
    assert refused.stderr.strip().startswith("hive: invalid setting queen_url: the Queen's URL")
    assert "http:// or https://" in refused.stderr
    assert "hunter2" not in refused.stderr


def test_get_devices_and_status(tmp_path: Path, hive_factory: Callable[..., Hive]) -> None:
    gpus = tmp_path / "gpus.json"
    gpus.write_text(
        json.dumps(
            {
                "gpus": [
                    {
                        "index": 0,
                        "name": "Fake4090",
                        "vram_total_mb": 24564,
                        "vram_free_mb": 20000,
                        "temperature_celsius": 61,
                        "utilization_percent": 37,
                    }
                ]
            }
        )
    )
    desired = tmp_path / "desired"
    desired.mkdir()
    hive = hive_factory(desired=[desired], extra_args=["--gpu-probe", f"fake:{gpus}"])
    table = run_hive("get", "devices", "--url", hive.url)
    assert table.returncode == 0, table.stderr
    header, cpu, gpu = table.stdout.splitlines()
    assert header.split() == ["ID", "TYPE", "NAME", "MEMORY", "FREE", "UTIL", "TEMP", "WORKERS"]
    assert cpu.startswith("CPU-0  cpu")
    assert gpu.split() == [
        "GPU-0",
        "cuda",
        "Fake4090",
        "24,564",
        "MiB",
        "20,000",
        "MiB",
        "37%",
        "61°C",
        "-",
    ]
    as_json = json.loads(run_hive("get", "devices", "-o", "json", "--url", hive.url).stdout)
    assert [d["id"] for d in as_json["items"]] == ["CPU-0", "GPU-0"]

    status = run_hive("get", "status", "--url", hive.url)
    assert status.returncode == 0, status.stderr
    assert "\nmachine: CPU " in status.stdout
    assert "queen: none discovered" in status.stdout
