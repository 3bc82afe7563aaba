"""The read jobs: each narrates what it read, line by line in rbee's formats, with the
full view in each line's `data`, then ends (`[DONE]`, or `[ERROR]` when the model, worker
or device asked for is not there)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from hive import __version__
from hive.api.views import (
    models_view,
    object_view,
    observe_model,
    observe_models,
    sample_workers,
    worker_names,
    worker_view,
)
from hive.jobs import hive_views
from hive.jobs.job import Job, JobFailed
from hive.jobs.names import model_names
from hive.jobs.operations import (
    DeviceGet,
    DeviceList,
    HiveCheck,
    HiveStatus,
    ModelGet,
    ModelList,
    WorkerGet,
    WorkerList,
)
from hive.model.ids import Kind, ObjectKey
from hive.model.text import clip, show
from hive.runtime.manager import Manager

ReadOperation = (
    ModelList | ModelGet | WorkerList | WorkerGet | DeviceList | DeviceGet | HiveStatus | HiveCheck
)


def _gb(size: int | None) -> str:
    return f"{(size or 0) / 1e9:.2f} GB"


def model_line(view: dict[str, Any]) -> str:
    """`name | 1.23 GB | available` (rbee's model_list_entry)."""
    observed = view.get("observed") or {}
    meta = observed.get("metadata") or {}
    size = meta.get("size") or observed.get("file_size")
    return f"{view['name']} | {_gb(size)} | {str(view['status']['phase']).lower()}"


def device_words(device: str | None) -> str:
    """GPU-0 as rbee writes it in a line: `GPU 0`."""
    return (device or "-").replace("-", " ")


def worker_line(view: dict[str, Any]) -> str:
    """`PID 1234 | model | GPU 0 | running` (rbee's worker_proc_list_entry)."""
    facts = view.get("observed") or {}
    spec = view.get("spec") or {}
    model = facts.get("model") or spec.get("model") or "-"
    device = facts.get("device") or spec.get("device")
    return f"PID {facts.get('pid')} | {model} | {device_words(device)} | {facts.get('status')}"


async def model_list(manager: Manager, job: Job, op: ModelList) -> None:
    job.emit("model_list_start", f"📋 Listing models on hive '{manager.settings.hive_id}'")
    views = models_view(manager, await observe_models(manager))
    job.emit("model_list_result", f"Found {len(views)} model(s)", data={"count": len(views)})
    if not views:
        job.emit("model_list_empty", "No models found")
    for view in views:
        key = ObjectKey.of(Kind.MODEL, view["name"])
        job.emit("model_list_entry", model_line(view), object=key, data=view)


async def find_model(manager: Manager, refs: list[str]) -> tuple[str, dict[str, Any]] | None:
    """The first model that one of `refs` names (declared or on disk), and its view."""
    for ref in refs:
        for name in model_names(ref):
            key = ObjectKey.of(Kind.MODEL, name)
            observed = await observe_model(manager, name)
            if observed is not None or manager.store.desired(key) is not None:
                return name, object_view(manager, key, observed)
    return None


async def model_get(manager: Manager, job: Job, op: ModelGet) -> None:
    job.emit("model_get_start", f"🔍 Getting model {show(op.ref)} on hive '{op.hive_id}'")
    found = await find_model(manager, op.refs())
    if found is None:
        job.emit("model_get_error", f"❌ Model {show(op.ref)} not found")
        raise JobFailed(
            f"model {show(op.ref)} is neither declared nor on disk (model_list lists them)"
        )
    name, view = found
    observed = view.get("observed") or {}
    path = (observed.get("metadata") or {}).get("path") or observed.get("directory")
    key = ObjectKey.of(Kind.MODEL, name)
    job.emit(
        "model_get_found",
        f"✅ Model: {name} | Name: {name} | Path: {path}",
        object=key,
        data=view,
    )
    job.emit("model_get_details", model_line(view), object=key, data=view)


async def _worker_views(manager: Manager) -> list[dict[str, Any]]:
    names = worker_names(manager)
    sample = await sample_workers(manager, names)
    return [worker_view(manager, name, sample) for name in names]


async def worker_list(manager: Manager, job: Job, op: WorkerList) -> None:
    job.emit("worker_proc_list_start", f"📋 Listing worker processes on hive '{op.hive_id}'")
    views = await _worker_views(manager)
    running = [v for v in views if (v.get("observed") or {}).get("pid") is not None]
    job.emit(
        "worker_proc_list_result",
        f"Found {len(running)} worker process(es)",
        data={"count": len(running), "declared": len(views)},
    )
    if not running:
        job.emit("worker_proc_list_empty", "No worker processes found")
    for view in running:
        key = ObjectKey.of(Kind.WORKER, view["name"])
        job.emit("worker_proc_list_entry", worker_line(view), object=key, data=view)
    for view in views:
        if view not in running:
            key = ObjectKey.of(Kind.WORKER, view["name"])
            status = view["status"]
            job.emit(
                "worker_list_declared",
                f"{view['name']} | {(view.get('spec') or {}).get('model')} | no process "
                f"| {str(status['phase']).lower()}: {clip(status.get('message') or '', 120)}",
                object=key,
                data=view,
            )


def worker_by_pid(manager: Manager, pid: int) -> str | None:
    return next(
        (n for n, i in manager.workers.instances.items() if i.state.pid == pid),
        None,
    )


async def worker_get(manager: Manager, job: Job, op: WorkerGet) -> None:
    what = f"PID {op.pid}" if op.pid is not None else f"worker {show(op.name or op.worker_id)}"
    job.emit("worker_proc_get_start", f"🔍 Getting {what} on hive '{op.hive_id}'")
    name = worker_by_pid(manager, op.pid) if op.pid is not None else (op.name or op.worker_id)
    if name is None or name not in worker_names(manager):
        raise JobFailed(f"no worker is {what} on this hive (worker_process_list lists them)")
    sample = await sample_workers(manager, [name], log_lines=20)
    view = worker_view(manager, name, sample)
    facts = view.get("observed") or {}
    key = ObjectKey.of(Kind.WORKER, name)
    job.emit(
        "worker_proc_get_found",
        f"✅ PID {facts.get('pid')}: {name} serving {facts.get('model') or '-'} on "
        f"{device_words(facts.get('device'))}, port {facts.get('port')} ({facts.get('status')})",
        object=key,
        data=view,
    )
    job.emit("worker_proc_get_details", worker_line(view), object=key, data=view)


def device_line(device: dict[str, Any]) -> str:
    """`GPU-0 | NVIDIA … | 24.00 GB total, 20.00 GB free | available, in use by 1 worker`."""
    total = device["vram_total_mb"] / 1024
    free = device["vram_available_mb"] / 1024
    use = f"in use by {len(device['workers'])} worker(s)" if device["in_use"] else "idle"
    return (
        f"{device['device_id']} | {device['name']} | {total:.2f} GB total, {free:.2f} GB free "
        f"| {'available' if device['available'] else 'unavailable'}, {use}"
    )


async def device_list(manager: Manager, job: Job, op: DeviceList) -> None:
    devices = await hive_views.device_list(manager)
    job.emit("device_list_result", f"Found {len(devices)} device(s)", data={"count": len(devices)})
    for device in devices:
        job.emit("device_list_entry", device_line(device), data=device)


async def device_get(manager: Manager, job: Job, op: DeviceGet) -> None:
    device = await hive_views.device_get(manager, op.ref)
    if device is None:
        raise JobFailed(f"no device {show(op.ref)} on this hive (device_list lists them)")
    job.emit("device_get_found", device_line(device), data=device)


async def hive_status(manager: Manager, job: Job, op: HiveStatus) -> None:
    status = await hive_views.hive_status(manager)
    workers = status.get("workers") or {}
    job.emit(
        "hive_status",
        f"hive {status['hive_id']}: {status['status']}, up {status['uptime_seconds']}s, "
        f"{workers.get('workers_running', 0)} worker(s) running, "
        f"{(status.get('objects') or {}).get('Model', {}).get('Available', 0)} model(s) available",
        data=status,
    )


async def hive_check(manager: Manager, job: Job, op: HiveCheck) -> None:
    """rbee's narration check: lines through the job stream, at once."""
    job.emit("test_start", "🔍 Hive Narration Test - Testing SSE streaming from hive")
    job.emit("test_1", "📝 Test 1: Simple narration through hive")
    job.emit("test_2", f"📝 Test 2: hive version {__version__} reporting")
    for i in range(1, 6):
        job.emit("sequence", f"Narration sequence {i}/5 streaming via hive SSE")
    job.emit("job_context", "✅ This narration is routed via job_id to your SSE stream")
    job.emit(
        "test_data",
        "📝 Structured data travels in `data`",
        data={"hive_id": manager.settings.hive_id, "alias": op.alias, "json": json.dumps([1])},
    )
    job.emit("hive_check_complete", "✅ Hive check complete - all SSE narration tests passed")


READS: dict[type[Any], Callable[[Manager, Job, Any], Awaitable[None]]] = {
    ModelList: model_list,
    ModelGet: model_get,
    WorkerList: worker_list,
    WorkerGet: worker_get,
    DeviceList: device_list,
    DeviceGet: device_get,
    HiveStatus: hive_status,
    HiveCheck: hive_check,
}
