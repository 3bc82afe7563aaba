"""JSON views the API serves: desired, observed and status side by side. They only read,
and never block the event loop: what is read from the disk, /proc or NVML (the catalog, a
worker's CPU and memory, its log, its VRAM) is read first in a thread (`observe_models`,
`sample_workers`), then the view is built on the loop from that and from memory."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hive.actuators.workers import log_path, tail_lines
from hive.api.machine import machine_status
from hive.errors import NotFound, ValidationFailed
from hive.model.ids import Kind, ObjectKey, name_problem
from hive.model.manifests import spec_view
from hive.model.observed import ArtifactStatus, ObservedModel
from hive.model.status import ModelPhase, WorkerPhase
from hive.observers.processes import usage
from hive.runtime.manager import Manager

_PHASE_OF_ARTIFACT = {
    ArtifactStatus.AVAILABLE: ModelPhase.AVAILABLE,
    ArtifactStatus.DOWNLOADING: ModelPhase.DOWNLOADING,
    ArtifactStatus.FAILED: ModelPhase.FAILED,
}


def object_view(manager: Manager, key: ObjectKey, observed: ObservedModel | None) -> dict[str, Any]:
    record = manager.store.desired(key)
    status = manager.statuses.get(key)
    out: dict[str, Any] = {
        "kind": key.kind.value,
        "name": key.name,
        "managed": record is not None,
        "source": None,
        "generation": manager.store.generation(key) if record else None,
        "labels": dict(record.manifest.metadata.labels) if record else {},
        "spec": spec_view(record.manifest) if record else None,
        "observed": None,
        "status": status.model_dump(mode="json") if status else None,
    }
    if record is not None:
        out["source"] = {
            "name": record.origin.source,
            "file": str(record.origin.file) if record.origin.file else None,
            "line": record.origin.line,
        }
    if key.kind is Kind.MODEL and observed is not None:
        meta = observed.metadata
        out["observed"] = {
            "directory": str(observed.directory),
            "file_size": observed.file_size,
            "partial": observed.partial,
            "download": observed.download.model_dump(mode="json") if observed.download else None,
            "metadata": meta.model_dump(mode="json") if meta else None,
            "metadata_error": observed.metadata_error,
        }
    if out["status"] is None:
        # Not (yet) reconciled, or on disk without a record: the catalog speaks.
        phase = catalog_phase(observed) if key.kind is Kind.MODEL else ModelPhase.PENDING.value
        out["status"] = {"phase": phase, "conditions": [], "observedGeneration": 0}
    return out


def catalog_phase(observed: ObservedModel | None) -> str:
    """The phase of a model as its catalog entry alone tells it."""
    meta = observed.metadata if observed else None
    if observed is None or meta is None:
        return ModelPhase.PENDING.value
    if meta.status == ArtifactStatus.AVAILABLE and not observed.complete:
        return ModelPhase.FAILED.value
    return _PHASE_OF_ARTIFACT[meta.status].value


async def observe_models(manager: Manager) -> dict[str, ObservedModel]:
    """Every model directory as the catalog reads it (a thread: it reads the disk)."""
    return await asyncio.to_thread(manager.catalog.observe_all)


async def observe_model(manager: Manager, name: str) -> ObservedModel | None:
    return await asyncio.to_thread(manager.catalog.observe, name)


def models_view(manager: Manager, observed: Mapping[str, ObservedModel]) -> list[dict[str, Any]]:
    keys = {ObjectKey.of(Kind.MODEL, n) for n in observed}
    keys.update(k for k in manager.store.declared_keys() if k.kind is Kind.MODEL)
    return [object_view(manager, k, observed.get(k.name)) for k in sorted(keys)]


def _worker_counts(manager: Manager) -> dict[str, int]:
    """rbee's HiveStatus counts: workers_running, _starting, _stopping, _total."""
    phases = Counter(s.phase for k, s in manager.statuses.items() if k.kind is Kind.WORKER)
    return {
        "workers_running": phases[WorkerPhase.RUNNING],
        "workers_starting": phases[WorkerPhase.STARTING],
        "workers_stopping": phases[WorkerPhase.STOPPING],
        "workers_total": len(manager.workers.instances),
    }


def status_view(manager: Manager, observed: Mapping[str, ObservedModel]) -> dict[str, Any]:
    now = manager.clock.now()
    counts: dict[str, Counter[str]] = {kind.value: Counter() for kind in Kind}
    keys = {ObjectKey.of(Kind.MODEL, n) for n in observed} | manager.store.declared_keys()
    for key in keys:
        status = manager.statuses.get(key)
        if status is not None:
            phase = status.phase
        elif key.kind is Kind.MODEL:
            phase = catalog_phase(observed.get(key.name))
        else:
            phase = ModelPhase.PENDING.value
        counts[key.kind.value][phase] += 1
    sources = [
        {
            **s.model_dump(mode="json"),
            "errors": [{**p.model_dump(mode="json"), "text": str(p)} for p in s.errors],
            "conditions": [c.model_dump(mode="json") for c in manager.source_health.conditions(s)],
        }
        for s in manager.store.sources()
    ]
    workers = _worker_counts(manager)
    return {
        "hive_id": manager.settings.hive_id,
        "labels": manager.store.labels or {},
        "status": "running",
        "started_at": manager.started_at.isoformat().replace("+00:00", "Z"),
        "uptime_seconds": int((now - manager.started_at).total_seconds()),
        "home": str(manager.settings.home),
        "synced": manager.store.all_synced,
        "sources": sources,
        "objects": {kind: dict(c) for kind, c in counts.items()},
        "queue": {"pending": len(manager.queue), "in_progress": len(manager.queue.processing)},
        "workers": workers,
        "last_event_id": manager.bus.last_id,
        **workers,  # the seed's HiveStatus has them at the top
        **machine_status(manager, observed),
    }


_RBEE_STATUS = {
    WorkerPhase.PENDING: "starting",
    WorkerPhase.STARTING: "starting",
    WorkerPhase.RUNNING: "running",
    WorkerPhase.STOPPING: "stopping",
    WorkerPhase.DEAD: "dead",
}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


@dataclass(frozen=True)
class WorkerSample:
    """What the worker views read outside hive's memory, read in one go in a thread."""

    #: VRAM per pid (NVML), CPU % and memory MB per pid (psutil), log tail per worker.
    vram: Mapping[int, int]
    usage: Mapping[int, tuple[float | None, int | None]]
    logs: Mapping[str, list[str]]


async def sample_workers(
    manager: Manager, names: Iterable[str], *, log_lines: int = 0
) -> WorkerSample:
    """Read, in a thread, what the views of workers `names` show from outside memory."""
    wanted = set(names)
    instances = [i for n, i in manager.workers.instances.items() if n in wanted]
    processes = {i.state.pid: i.proc.handle for i in instances}
    gpu_pids = [i.state.pid for i in instances if i.state.device != "CPU-0"]
    gpus, home = manager.gpus, manager.settings.home

    def read() -> WorkerSample:
        return WorkerSample(
            vram=gpus.process_vram_bytes(gpu_pids) if gpu_pids else {},
            usage={pid: usage(process) for pid, process in processes.items()},
            logs={n: tail_lines(log_path(home, n), log_lines) for n in wanted} if log_lines else {},
        )

    return await asyncio.to_thread(read)


def worker_facts(manager: Manager, name: str, sample: WorkerSample) -> dict[str, Any]:
    """rbee's Worker fields (pid, worker_id, model, worker_type, device, port, status,
    cpu_percent, memory_mb, vram_mb, uptime_seconds) plus restarts, health and metrics."""
    instance = manager.workers.instances.get(name)
    history = manager.workers.histories.get(name)
    key = ObjectKey.of(Kind.WORKER, name)
    status = manager.statuses.get(key)
    phase = WorkerPhase(status.phase) if status else WorkerPhase.PENDING
    dead = phase is WorkerPhase.DEAD
    out: dict[str, Any] = {
        "status": _RBEE_STATUS[phase],
        "restarts": history.restarts if history else 0,
        "last_exit": history.last_exit.model_dump(mode="json")
        if history and history.last_exit
        else None,
        "last_exit_text": history.last_exit.describe() if history and history.last_exit else None,
        "next_restart_time": _iso(history.next_start_at) if history and dead else None,
        "restarted_at": _iso(history.restarted_at) if history else None,
    }
    if instance is not None:
        state, health = instance.state, instance.health
        cpu, memory = sample.usage.get(state.pid, (None, None))
        uptime = (manager.clock.now() - state.started_at).total_seconds()
        out.update(
            pid=state.pid,
            worker_id=state.worker_id,
            model=state.model,
            worker_type=state.worker_type,
            device=state.device,
            runtime=state.runtime,
            port=state.port,
            url=f"http://{state.host}:{state.port}",
            started_at=_iso(state.started_at),
            uptime_seconds=max(0, int(uptime)),
            cpu_percent=cpu,
            memory_mb=memory,
            vram_mb=sample.vram[state.pid] // (1024 * 1024) if state.pid in sample.vram else None,
            adopted=instance.proc.adopted,
            health={
                "healthy": instance.ready and not health.failures,
                "last_check": _iso(health.checked_at),
                "consecutive_failures": health.failures,
                "error": health.error,
            },
            metrics=health.metrics.model_dump(mode="json") if health.metrics else None,
            log_path=str(state.log_path),
        )
    if name in sample.logs:
        out["log_tail"] = sample.logs[name]
    return out


def worker_view(manager: Manager, name: str, sample: WorkerSample) -> dict[str, Any]:
    key = ObjectKey.of(Kind.WORKER, name)
    out = object_view(manager, key, None)
    out["observed"] = worker_facts(manager, name, sample)
    return out


def worker_names(manager: Manager) -> list[str]:
    declared = {k.name for k in manager.store.declared_keys() if k.kind is Kind.WORKER}
    return sorted(declared | set(manager.workers.instances))


def known_worker(manager: Manager, name: str) -> str:
    """`name` (from a path), which must be a worker declared or running: 422 for a name
    no worker can have, 404 for one no worker has."""
    problem = name_problem(name)
    if problem:
        raise ValidationFailed(f"worker name {problem}")
    if name not in worker_names(manager):
        raise NotFound(f"worker {name!r} is neither declared nor running (see GET /v1/workers)")
    return name
