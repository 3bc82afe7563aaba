"""The pure parts of the Queen link: the push payload, a protocol's state changes, the
Queen's URL as a setting, and the persisted discovery."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from hive.errors import BadRequest
from hive.model.devices import GpuInfo
from hive.model.machine import SystemSample
from hive.queen import discovery
from hive.queen.push import heartbeat
from hive.queen.tracker import Tracker
from hive.settings import Settings

GIB = 1 << 30
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def sample() -> SystemSample:
    return SystemSample(
        taken_at=T0,
        hostname="box",
        ip_address="10.0.0.2",
        cpu_name="CPU",
        cpu_vendor="AMD",
        cpu_cores=16,
        cpu_percent=45.23,
        memory_total_bytes=64 * GIB,
        memory_available_bytes=51 * GIB + GIB // 2,
        memory_used_bytes=12 * GIB + GIB // 2,
        disk_total_bytes=10**12,
        disk_free_bytes=10**11,
        load_average=(1.0, 0.5, 0.25),
        system_uptime_seconds=1000,
        gpus=(
            GpuInfo(
                index=0,
                uuid="GPU-x",
                name="RTX",
                vram_total_bytes=24 * GIB,
                vram_free_bytes=24 * GIB - (8 * GIB + GIB // 5),
                temperature_celsius=65.0,
            ),
        ),
    )


def test_the_push_payload_is_the_seeds() -> None:
    beat = heartbeat(
        hive_id="localhost",
        now=T0 + timedelta(days=1),
        started_at=T0,
        sample=sample(),
        changes=None,
    )
    assert beat.model_dump(mode="json") == {
        "hive_id": "localhost",
        "timestamp": "2026-01-02T00:00:00.000Z",
        "monitor_data": {
            "cpu_usage_percent": 45.2,
            "ram_used_gb": 12.5,
            "ram_total_gb": 64.0,
            "uptime_seconds": 86400,
            "devices": [
                {
                    "device_id": "GPU-0",
                    "vram_used_gb": 8.2,
                    "vram_total_gb": 24.0,
                    "temperature_celsius": 65.0,
                }
            ],
        },
        "capability_changes": None,
    }


def test_a_protocol_changes_state_once_per_change() -> None:
    tracker = Tracker()
    assert tracker.record(T0, None) == ("idle", "ok")
    assert tracker.record(T0, None) is None
    assert tracker.record(T0, "refused http://u:pw@q/x") == ("ok", "failing")
    assert tracker.record(T0, "refused again") is None
    assert tracker.last_failure_reason == "refused again"
    assert tracker.record(T0, None) == ("failing", "ok")
    assert tracker.record(T0, "404", unsupported=True) == ("ok", "unsupported")
    assert (tracker.successes, tracker.failures) == (3, 3)
    tracker.record(T0, "pw http://u:pw@q/x")
    assert tracker.last_failure_reason is not None and "pw@" not in tracker.last_failure_reason


@pytest.mark.parametrize(
    "bad", ["ftp://q", "http://", "q:7833", "http://q:7833?x=1", "http://q/#f", "http://q:0"]
)
def test_a_bad_queen_url_setting_is_refused_without_being_repeated(bad: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(queen_url=bad.replace("q", "user:hunter2@q", 1))
    assert "hunter2" not in str(caught.value)
    with pytest.raises(BadRequest):
        discovery.check(bad)


def test_the_queen_url_setting_loses_its_trailing_slash() -> None:
    assert Settings(queen_url="http://queen:7833/").queen_url == "http://queen:7833"
    assert Settings(queen_url="").queen_url is None


def test_a_saved_discovery_reads_back_and_a_broken_file_is_ignored(tmp_path: Path) -> None:
    found = discovery.Discovered(queen_url="http://queen:7833", discovered_at=T0)
    discovery.save(tmp_path, found)
    assert discovery.load(tmp_path) == found
    (tmp_path / discovery.FILE).write_text("{not json")
    assert discovery.load(tmp_path) is None
    (tmp_path / discovery.FILE).write_text(
        json.dumps({"queen_url": "ftp://x", "discovered_at": T0.isoformat()})
    )
    assert discovery.load(tmp_path) is None
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["queen.json"]  # no temp left
