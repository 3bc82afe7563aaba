"""The seed's push heartbeat: the payload of `POST {queen}/v1/hive-heartbeat`, from the
latest system sample and the capability changes since the last acknowledged beat. Pure."""

from __future__ import annotations

from datetime import datetime

from hive.model.machine import SystemSample
from hive.model.queen import CapabilityChanges, HiveHeartbeat, MonitorData, MonitorDevice

GIB = 1 << 30


def rfc3339(at: datetime) -> str:
    """`2026-01-01T10:00:00.123Z`: RFC 3339 in UTC, to the millisecond."""
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _gb(n: int) -> float:
    return round(n / GIB, 2)


def monitor_data(sample: SystemSample | None, *, uptime_seconds: int) -> MonitorData:
    """What the seed's monitor crate reports: CPU %, RAM (GiB, as the seed's `ram_*_gb`
    count it), hive's uptime and each GPU's VRAM and temperature; zeros before the first
    sample."""
    if sample is None:
        return MonitorData(
            cpu_usage_percent=0.0,
            ram_used_gb=0.0,
            ram_total_gb=0.0,
            uptime_seconds=uptime_seconds,
            devices=[],
        )
    return MonitorData(
        cpu_usage_percent=round(sample.cpu_percent, 1),
        ram_used_gb=_gb(sample.memory_used_bytes),
        ram_total_gb=_gb(sample.memory_total_bytes),
        uptime_seconds=uptime_seconds,
        devices=[
            MonitorDevice(
                device_id=gpu.device,
                vram_used_gb=_gb(gpu.vram_total_bytes - gpu.vram_free_bytes),
                vram_total_gb=_gb(gpu.vram_total_bytes),
                temperature_celsius=gpu.temperature_celsius,
            )
            for gpu in sample.gpus
        ],
    )


def heartbeat(
    *,
    hive_id: str,
    now: datetime,
    started_at: datetime,
    sample: SystemSample | None,
    changes: CapabilityChanges | None,
) -> HiveHeartbeat:
    uptime = max(0, int((now - started_at).total_seconds()))
    return HiveHeartbeat(
        hive_id=hive_id,
        timestamp=rfc3339(now),
        monitor_data=monitor_data(sample, uptime_seconds=uptime),
        capability_changes=changes,
    )
