"""What this machine has and how hive shows it: the system sampler's samples (produced by
`hive.observers.system`), and the views of `/v1/devices`, `/v1/capabilities` and the
system and Queen parts of `/v1/status` (built by `hive.api.machine`)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hive.model.devices import GpuInfo

CPU_DEVICE = "CPU-0"


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _View(BaseModel):
    """A view as a client reads it: a field a newer hive adds is kept."""

    model_config = ConfigDict(frozen=True, extra="allow")


# -- samples (hive/observers/system.py) ------------------------------------------------------
class ProcessSample(_Record):
    """One worker process, as rbee's telemetry reports it (`ProcessStats`)."""

    pid: int
    #: CPU % since the previous sample (over the process's life for the first).
    cpu_pct: float
    rss_mb: int
    io_r_mb_s: float
    io_w_mb_s: float
    uptime_s: int
    #: VRAM it holds (MiB), 0 when on no GPU.
    vram_mb: int


class SystemSample(_Record):
    """One reading of the machine, taken in a thread every `system_sample_interval` s."""

    taken_at: datetime
    hostname: str
    ip_address: str
    cpu_name: str
    cpu_vendor: str
    cpu_cores: int
    #: CPU use of the whole machine since the previous sample, in %.
    cpu_percent: float
    memory_total_bytes: int
    memory_available_bytes: int
    memory_used_bytes: int
    #: The filesystem of hive's home.
    disk_total_bytes: int
    disk_free_bytes: int
    load_average: tuple[float, float, float]
    #: Seconds since the machine booted.
    system_uptime_seconds: int
    gpus: tuple[GpuInfo, ...] = ()
    gpu_error: str | None = None
    processes: dict[int, ProcessSample] = {}


# -- views -----------------------------------------------------------------------------------
class Device(_View):
    """rbee's Device, with hive's id: `id` is `GPU-<n>` or `CPU-0` (as manifests and URLs
    name it), `device_id` the seed's number (`n`, 0 for the CPU)."""

    id: str
    device_id: int
    device_type: Literal["cpu", "cuda"]
    name: str
    vendor: str
    #: A GPU's memory; for the CPU, the system RAM (rbee's capabilities count it so).
    vram_total_mb: int | None = None
    vram_available_mb: int | None = None
    compute_capability: str | None = None
    #: CPU threads (the CPU only).
    max_threads: int | None = None
    available: bool
    in_use: bool
    #: The workers whose process runs there.
    workers: list[str] = []
    temperature_celsius: float | None = None
    power_usage_watts: float | None = None
    utilization_percent: float | None = None


class DeviceList(_View):
    """`GET /v1/devices`."""

    items: list[Device]
    #: Why GPUs could not be read (no driver), or None.
    gpu_error: str | None = None


class CapabilityDevice(_View):
    """One device of rbee's `/v1/capabilities` (`HiveDevice`)."""

    id: str
    name: str
    device_type: Literal["gpu", "cpu"]
    vram_gb: int | None
    compute_capability: str | None


class Capabilities(_View):
    """`GET /v1/capabilities`: GPUs first, then the CPU (rbee's order)."""

    devices: list[CapabilityDevice]


class SystemMetrics(_View):
    """The machine as the sampler saw it last (`/v1/status`'s `system`)."""

    sampled_at: datetime
    cpu_percent: float
    cpu_cores: int
    memory_total_mb: int
    memory_used_mb: int
    memory_available_mb: int
    disk_total_bytes: int
    disk_free_bytes: int
    load_average: list[float]
    uptime_seconds: int


#: idle: not tried yet for this Queen; unsupported: the Queen answers 404 or 405 (it speaks
#: the other generation of the protocol).
LinkState = Literal["idle", "ok", "failing", "unsupported"]


class ProtocolLink(_View):
    """One way of talking to the Queen: how it went."""

    state: LinkState = "idle"
    successes: int = 0
    failures: int = 0
    last_success: datetime | None = None
    last_failure: datetime | None = None
    last_failure_reason: str | None = None


class TelemetryLink(_View):
    """rbee's telemetry stream (`GET /v1/heartbeats/stream`), which the Queen pulls."""

    subscribers: int = Field(default=0, ge=0)
    frames_sent: int = Field(default=0, ge=0)


class QueenLinkView(_View):
    """`/v1/status`'s `queen`: the Queen hive reports to (its URL redacted), how it was
    found, and each protocol's last success and failure."""

    url: str | None = None
    discovered_via: Literal["flag", "capabilities", "persisted"] | None = None
    discovered_at: datetime | None = None
    push: ProtocolLink = ProtocolLink()
    ready: ProtocolLink = ProtocolLink()
    telemetry: TelemetryLink = TelemetryLink()
