"""Views of the machine, built on the loop from the system sampler's latest sample and the
worker table (nothing is read from /proc or NVML here): the devices (`/v1/devices`, the
job API's device_list and device_get), rbee's capabilities, the machine's part of
`/v1/status`, and rbee's telemetry frame (`/v1/heartbeats/stream`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from hive import __version__
from hive.errors import NotFound
from hive.model.devices import GpuInfo
from hive.model.ids import Kind
from hive.model.machine import (
    CPU_DEVICE,
    Capabilities,
    CapabilityDevice,
    Device,
    DeviceList,
    SystemMetrics,
    SystemSample,
)
from hive.model.observed import ArtifactStatus, ObservedModel
from hive.model.queen import HealthStatus, HiveInfo, OperationalStatus, ProcessStats, Telemetry
from hive.model.status import WorkerPhase
from hive.model.text import show
from hive.model.units import MIB
from hive.queen.push import rfc3339
from hive.runtime.manager import Manager

GIB = 1 << 30
#: Decimal gigabytes, as disks and model files are counted.
GB = 1_000_000_000
#: Below this much free space under the home, hive cannot write its records: unhealthy.
LOW_DISK = 64 * MIB


def _sample(manager: Manager) -> SystemSample:
    """The latest sample; before the first (hive starting), an empty one."""
    if manager.system.latest is not None:
        return manager.system.latest
    return SystemSample(
        taken_at=datetime.fromtimestamp(0, UTC),
        hostname="",
        ip_address="",
        cpu_name="CPU",
        cpu_vendor="unknown",
        cpu_cores=1,
        cpu_percent=0.0,
        memory_total_bytes=0,
        memory_available_bytes=0,
        memory_used_bytes=0,
        disk_total_bytes=0,
        disk_free_bytes=0,
        load_average=(0.0, 0.0, 0.0),
        system_uptime_seconds=0,
    )


def _workers_by_device(manager: Manager) -> dict[str, list[str]]:
    placed: dict[str, list[str]] = {}
    for name, instance in sorted(manager.workers.instances.items()):
        placed.setdefault(instance.state.device, []).append(name)
    return placed


def _cpu(sample: SystemSample, workers: list[str]) -> Device:
    return Device(
        id=CPU_DEVICE,
        device_id=0,
        device_type="cpu",
        name=sample.cpu_name,
        vendor=sample.cpu_vendor,
        vram_total_mb=sample.memory_total_bytes // MIB,
        vram_available_mb=sample.memory_available_bytes // MIB,
        max_threads=sample.cpu_cores,
        available=True,
        in_use=bool(workers),
        workers=workers,
        utilization_percent=sample.cpu_percent,
    )


def _gpu(gpu: GpuInfo, workers: list[str]) -> Device:
    return Device(
        id=gpu.device,
        device_id=gpu.index,
        device_type="cuda",
        name=gpu.name,
        vendor="NVIDIA",
        vram_total_mb=gpu.vram_total_bytes // MIB,
        vram_available_mb=gpu.vram_free_bytes // MIB,
        compute_capability=gpu.compute_capability,
        available=True,
        in_use=bool(workers),
        workers=workers,
        temperature_celsius=gpu.temperature_celsius,
        power_usage_watts=gpu.power_watts,
        utilization_percent=gpu.utilization_percent,
    )


def device_list(manager: Manager) -> list[Device]:
    """Every device of this machine: `CPU-0`, then each GPU by index (the job API's
    `device_list`)."""
    sample = _sample(manager)
    placed = _workers_by_device(manager)
    return [_cpu(sample, placed.get(CPU_DEVICE, []))] + [
        _gpu(gpu, placed.get(gpu.device, [])) for gpu in sample.gpus
    ]


def devices_view(manager: Manager) -> DeviceList:
    """`GET /v1/devices`."""
    return DeviceList(items=device_list(manager), gpu_error=_sample(manager).gpu_error)


#: rbee's ways of naming a device, beside hive's (`cuda:0`, `gpu:0`, `cpu`, `cpu:0`).
_RBEE_PREFIXES = {"cuda:": "GPU-", "gpu:": "GPU-"}


def device_id_of(raw: str) -> str:
    """hive's id for a device named the way rbee's operations name one: `GPU-0` and
    `CPU-0` as they are, `cuda:0` / `gpu:0` as `GPU-0`, `cpu` / `cpu:0` as `CPU-0`."""
    lowered = raw.strip().lower()
    if lowered in ("cpu", "cpu:0", "cpu-0"):
        return CPU_DEVICE
    for prefix, ours in _RBEE_PREFIXES.items():
        if lowered.startswith(prefix) and lowered[len(prefix) :].isdigit():
            return f"{ours}{int(lowered[len(prefix) :])}"
    if lowered.startswith("gpu-") and lowered[4:].isdigit():
        return f"GPU-{int(lowered[4:])}"
    return raw


def device_get(manager: Manager, device: str) -> Device:
    """One device by its id (`GPU-0`, `CPU-0`, or rbee's `cuda:0`, `cpu`): the job API's
    `device_get`; `NotFound` naming the devices there are."""
    wanted = device_id_of(device)
    devices = device_list(manager)
    for found in devices:
        if found.id == wanted:
            return found
    known = ", ".join(d.id for d in devices)
    raise NotFound(f"device {show(device)} is not on this machine; its devices: {known}")


def capabilities(manager: Manager) -> Capabilities:
    """rbee's `/v1/capabilities`: each GPU, then the CPU (whose `vram_gb` is the RAM)."""
    sample = _sample(manager)
    gpus = [
        CapabilityDevice(
            id=gpu.device,
            name=gpu.name,
            device_type="gpu",
            vram_gb=round(gpu.vram_total_bytes / GIB),
            compute_capability=gpu.compute_capability,
        )
        for gpu in sample.gpus
    ]
    cpu = CapabilityDevice(
        id=CPU_DEVICE,
        name=f"CPU ({sample.cpu_cores} cores)",
        device_type="cpu",
        vram_gb=round(sample.memory_total_bytes / GIB),
        compute_capability=None,
    )
    return Capabilities(devices=[*gpus, cpu])


def system_metrics(manager: Manager) -> SystemMetrics:
    sample = _sample(manager)
    return SystemMetrics(
        sampled_at=sample.taken_at,
        cpu_percent=sample.cpu_percent,
        cpu_cores=sample.cpu_cores,
        memory_total_mb=sample.memory_total_bytes // MIB,
        memory_used_mb=sample.memory_used_bytes // MIB,
        memory_available_mb=sample.memory_available_bytes // MIB,
        disk_total_bytes=sample.disk_total_bytes,
        disk_free_bytes=sample.disk_free_bytes,
        load_average=list(sample.load_average),
        uptime_seconds=sample.system_uptime_seconds,
    )


def machine_status(manager: Manager, observed: Mapping[str, ObservedModel]) -> dict[str, Any]:
    """The seed HiveStatus fields `/v1/status` adds to hive's own, the system metrics and
    the Queen link (its URL redacted)."""
    sample = _sample(manager)
    available = [o for o in observed.values() if o.complete and o.metadata is not None]
    downloading = [
        o
        for o in observed.values()
        if o.download is not None
        or (o.metadata is not None and o.metadata.status == ArtifactStatus.DOWNLOADING)
    ]
    return {
        "hostname": sample.hostname,
        "ip_address": sample.ip_address,
        "port": manager.settings.port,
        "cpu_cores": sample.cpu_cores,
        "memory_total_mb": sample.memory_total_bytes // MIB,
        "memory_available_mb": sample.memory_available_bytes // MIB,
        "disk_total_gb": sample.disk_total_bytes // GB,
        "disk_available_gb": sample.disk_free_bytes // GB,
        "devices": [d.model_dump(mode="json") for d in device_list(manager)],
        "models_available": len(available),
        "models_downloading": len(downloading),
        "models_total_gb": round(sum(o.metadata.size for o in available if o.metadata) / GB, 2),
        "system": system_metrics(manager).model_dump(mode="json"),
        "queen": manager.queen.view().model_dump(mode="json"),
    }


# -- rbee's telemetry -----------------------------------------------------------------------
def operational_status(manager: Manager) -> OperationalStatus:
    """starting until every source has synced once, busy while a worker is processing a
    request (its own metrics say so), stopping once hive is shutting down, else ready."""
    if manager.bus.closed:
        return "stopping"
    if not manager.store.all_synced:
        return "starting"
    for instance in manager.workers.instances.values():
        metrics = instance.health.metrics
        if metrics is not None and (metrics.busy_slots or 0) > 0:
            return "busy"
    return "ready"


def health_status(manager: Manager) -> HealthStatus:
    """unhealthy when the home has no room for hive's records; degraded when a source has
    errors, a worker is Dead (crash-looping or failed), or GPUs cannot be read; else
    healthy. The reason names the first found."""
    sample = manager.system.latest
    if sample is not None and sample.disk_total_bytes > 0 and sample.disk_free_bytes < LOW_DISK:
        return HealthStatus(
            status="unhealthy",
            reason=f"the home's filesystem has {sample.disk_free_bytes // MIB} MiB free",
        )
    broken = [s.name for s in manager.store.sources() if s.errors]
    if broken:
        return HealthStatus(status="degraded", reason=f"source(s) with errors: {', '.join(broken)}")
    dead = sorted(
        k.name
        for k, s in manager.statuses.items()
        if k.kind is Kind.WORKER and s.phase == WorkerPhase.DEAD
    )
    if dead:
        return HealthStatus(status="degraded", reason=f"worker(s) not running: {', '.join(dead)}")
    if sample is not None and sample.gpu_error and manager.settings.gpu_probe != "auto":
        return HealthStatus(status="degraded", reason=sample.gpu_error)
    return HealthStatus(status="healthy")


def telemetry_frame(manager: Manager) -> Telemetry:
    """One frame of rbee's telemetry: the hive's info and each worker process's use
    (group `llm`, instance = its port, as rbee's cgroup names them)."""
    sample = _sample(manager)
    gpus = {gpu.device: gpu for gpu in sample.gpus}
    workers = []
    for _, instance in sorted(manager.workers.instances.items()):
        state = instance.state
        seen = sample.processes.get(state.pid)
        gpu = gpus.get(state.device)
        workers.append(
            ProcessStats(
                pid=state.pid,
                group="llm",
                instance=str(state.port),
                cpu_pct=seen.cpu_pct if seen else 0.0,
                rss_mb=seen.rss_mb if seen else 0,
                io_r_mb_s=seen.io_r_mb_s if seen else 0.0,
                io_w_mb_s=seen.io_w_mb_s if seen else 0.0,
                uptime_s=seen.uptime_s if seen else 0,
                gpu_util_pct=(gpu.utilization_percent or 0.0) if gpu else 0.0,
                vram_mb=seen.vram_mb if seen else 0,
                total_vram_mb=gpu.vram_total_bytes // MIB if gpu else 0,
                model=state.model,
            )
        )
    settings = manager.settings
    return Telemetry(
        hive_id=settings.hive_id,
        hive_info=HiveInfo(
            id=settings.hive_id,
            hostname=manager.queen.advertised_host(),
            port=settings.port,
            operational_status=operational_status(manager),
            health_status=health_status(manager),
            version=__version__,
        ),
        timestamp=rfc3339(manager.clock.now()),
        workers=workers,
    )
