"""The planner for Workers, as `plan()` is for Models: what hive would do with each worker
(start, stop, replace, or wait because it cannot start here). Pure: the records, the live
workers (state records whose process is still there), the catalog, the runtimes and the
devices in; actions out. `hive plan` prints them; the supervisor decides the same things
one key at a time (hive/runtime/workers.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set

from hive.core.placement import check_fit, estimate_memory
from hive.core.workers import InvalidArgs, adjust_args, adjustments_condition, resolve_args
from hive.core.workers import spec_hash as worker_spec_hash
from hive.model.actions import (
    ReplaceWorker,
    StartWorker,
    StopWorker,
    UnschedulableWorker,
    WorkerAction,
)
from hive.model.devices import GpuInfo
from hive.model.manifests import WorkerSpec
from hive.model.observed import ArtifactStatus, ObservedModel
from hive.model.runtimes import RuntimeEntry
from hive.model.workers import WorkerState


def plan_workers(
    desired: Mapping[str, WorkerSpec],
    running: Mapping[str, WorkerState],
    *,
    models: Mapping[str, ObservedModel],
    provisioning: Set[str],
    runtimes: Mapping[str, RuntimeEntry],
    gpus: Sequence[GpuInfo],
    ram_available_bytes: int,
) -> list[WorkerAction]:
    """Every worker action, in name order. `running`: the workers whose process is there
    (checked as adoption checks them); `provisioning`: the Models the model plan brings
    into the catalog first (their workers start once they are Available)."""
    actions: list[WorkerAction] = []
    for name in sorted(set(desired) | set(running)):
        spec, state = desired.get(name), running.get(name)
        if spec is None or spec.state == "stopped":
            if state is not None:
                why = "no record declares it" if spec is None else "state: stopped"
                actions.append(StopWorker(name=name, pid=state.pid, reason=why))
            continue
        observed = models.get(spec.model)
        meta = observed.metadata if observed is not None else None
        if state is not None:
            sha = meta.sha256 if meta is not None else None
            if state.spec_hash != worker_spec_hash(spec, model_sha256=sha):
                why = "its record changed (model, runtime, device, port or args)"
                actions.append(ReplaceWorker(name=name, pid=state.pid, reason=why))
            continue
        actions.append(
            _start(
                name,
                spec,
                model=observed,
                provisioning=spec.model in provisioning,
                entry=runtimes.get(spec.runtime),
                known=sorted(runtimes),
                gpus=gpus,
                ram_available_bytes=ram_available_bytes,
            )
        )
    return actions


def _start(
    name: str,
    spec: WorkerSpec,
    *,
    model: ObservedModel | None,
    provisioning: bool,
    entry: RuntimeEntry | None,
    known: list[str],
    gpus: Sequence[GpuInfo],
    ram_available_bytes: int,
) -> WorkerAction:
    """A worker to start: the first thing that would keep it Pending, as the supervisor
    checks them, or a StartWorker."""

    def blocked(reason: str, message: str) -> UnschedulableWorker:
        return UnschedulableWorker(name=name, reason=f"{reason}: {message}")

    if entry is None:
        return blocked(
            "UnknownRuntime",
            f"runtime {spec.runtime!r} is not in the worker catalog (known: {', '.join(known)})",
        )
    if not entry.available:
        return blocked("RuntimeUnavailable", f"runtime {entry.id}: {entry.unavailable_reason}")
    try:
        args = resolve_args(entry, dict(spec.args))
    except InvalidArgs as exc:
        return blocked(exc.reason, exc.message)
    what = f"{entry.id} serving {spec.model} on {spec.device}"
    if provisioning:
        return StartWorker(name=name, reason=f"{what}, once Model/{spec.model} is provisioned")
    meta = model.metadata if model is not None else None
    if meta is None or meta.status is not ArtifactStatus.AVAILABLE:
        state = meta.status.value if meta is not None else "not on disk"
        return blocked(
            "ModelNotReady", f"Model/{spec.model} is {state} and no record provisions it"
        )
    args, changes = adjust_args(
        entry, args, given=spec.args, device=spec.device, context_length=meta.context_length
    )
    ctx = int(args.get("ctx_size", 0) or 0) or (meta.context_length or 4096)
    estimate = estimate_memory(
        model_bytes=meta.size,
        ctx_size=ctx,
        block_count=meta.block_count,
        embedding_length=meta.embedding_length,
        head_count=meta.head_count,
        head_count_kv=meta.head_count_kv,
    )
    placement = check_fit(
        estimate=estimate, device=spec.device, gpus=gpus, ram_available_bytes=ram_available_bytes
    )
    if not placement.fits:
        return blocked("Unschedulable", f"{placement.reason}: {placement.message}")
    adjusted = adjustments_condition(changes)
    note = f"; args adjusted: {adjusted[1]}" if adjusted else ""
    return StartWorker(name=name, reason=f"{what}: no process runs it{note}")
