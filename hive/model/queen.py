"""What hive sends the Queen, in both generations of rbee's protocol (the shapes of
`rbee-hive-spec.md` and of rbee's current contracts): the seed's push heartbeat, the
current hive-ready callback, and the telemetry frame of `GET /v1/heartbeats/stream`.
Built by `hive.queen`; field names are rbee's, exactly."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

from hive.model.text import clip


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# -- the seed's push: POST {queen}/v1/hive-heartbeat --------------------------------------
class MonitorDevice(_Wire):
    device_id: str
    vram_used_gb: float
    vram_total_gb: float
    temperature_celsius: float | None


class MonitorData(_Wire):
    cpu_usage_percent: float
    ram_used_gb: float
    ram_total_gb: float
    uptime_seconds: int
    devices: list[MonitorDevice]


class ModelChange(_Wire):
    action: Literal["added", "removed"]
    model_id: str
    size_gb: float


class CapabilityChanges(_Wire):
    models: list[ModelChange]
    #: A worker process that came or went: the model it serves (`model_id`, `size_gb` as
    #: for a model), exactly the seed's fields.
    workers: list[ModelChange]


class HiveHeartbeat(_Wire):
    hive_id: str
    timestamp: str
    monitor_data: MonitorData
    #: None (null) when nothing changed since the last beat the Queen acknowledged.
    capability_changes: CapabilityChanges | None


# -- rbee's current link -------------------------------------------------------------------
class HiveReady(_Wire):
    """`POST {queen}/v1/hive/ready`."""

    hive_id: str
    hive_url: str


OperationalStatus = Literal["starting", "ready", "busy", "stopping", "stopped"]


class HealthStatus(_Wire):
    """rbee's `HealthStatus`: `{"status": "healthy"}`, or degraded/unhealthy with a
    reason (dumped with `exclude_none`, so a healthy one has no `reason`)."""

    status: Literal["healthy", "degraded", "unhealthy"]
    reason: str | None = None


class HiveInfo(_Wire):
    id: str
    hostname: str
    port: int
    operational_status: OperationalStatus
    health_status: HealthStatus
    version: str


class ProcessStats(_Wire):
    pid: int
    group: str
    instance: str
    cpu_pct: float
    rss_mb: int
    io_r_mb_s: float
    io_w_mb_s: float
    uptime_s: int
    gpu_util_pct: float
    vram_mb: int
    total_vram_mb: int
    model: str | None


class Telemetry(_Wire):
    """One `event: heartbeat` frame of `GET /v1/heartbeats/stream`."""

    type: Literal["telemetry"] = "telemetry"
    hive_id: str
    hive_info: HiveInfo
    timestamp: str
    workers: list[ProcessStats]

    def wire(self) -> dict[str, object]:
        """As rbee serializes it: a healthy status carries no `reason`."""
        data = self.model_dump(mode="json")
        health = data["hive_info"]["health_status"]
        if health.get("reason") is None:
            health.pop("reason", None)
        return data


# -- the Queen's URL -------------------------------------------------------------------------
#: The longest Queen URL hive takes.
QUEEN_URL_MAX = 2048


def queen_url_problem(raw: str) -> str | None:
    """Why `raw` cannot be the Queen's URL (said without repeating it: it may hold a
    password), or None. An http or https URL with a host, no query or fragment, at most
    QUEEN_URL_MAX characters."""
    if len(raw) > QUEEN_URL_MAX:
        return f"is {len(raw)} characters long (at most {QUEEN_URL_MAX})"
    if not raw.isascii() or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in raw):
        return "holds whitespace, control or non-ASCII characters"
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        return f"is not a URL ({clip(str(exc), 80)})"
    if parts.scheme not in ("http", "https"):
        return "must start with http:// or https://"
    if not parts.hostname:
        return "names no host"
    if port == 0:
        return "names port 0"
    if parts.query or parts.fragment or raw.endswith(("?", "#")):
        return "must not carry a query or a fragment (give the Queen's base URL)"
    return None


def normal_queen_url(raw: str) -> str:
    """A valid Queen URL without its trailing slashes (paths are appended to it)."""
    return raw.rstrip("/")
