"""The rules of a worker's life, pure: why a running worker must stop (`stop_reason`), what
keeps one from starting (`start_check`, then `fit` for its device). The worker planner
(`core.worker_decide.plan_worker`) applies them, one key at a time for the worker
reconciler and to every worker at once for `hive plan` (`plan_workers`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from hive.core.placement import check_fit, estimate_memory
from hive.core.workers import (
    ArgAdjustment,
    InvalidArgs,
    adjust_args,
    adjustments_condition,
    resolve_args,
    spec_hash,
)
from hive.model.devices import GpuInfo, MemoryEstimate
from hive.model.manifests import WorkerSpec
from hive.model.observed import ArtifactStatus, ModelMetadata, ObservedModel
from hive.model.runtimes import ArgValue, RuntimeEntry
from hive.model.workers import WorkerState

#: Why a model went (or is going), as the narration says it.
REMOVED = "removed from disk"
BY_API = "deleted by API request"
ABSENT = "state is absent"


def on_disk(observed: ObservedModel | None) -> bool:
    """The model's file (every part of a split model) is there. A download in progress
    over an older file keeps it on disk; a model being fetched the first time is not yet."""
    return observed is not None and observed.file_size is not None


class ModelView(BaseModel):
    """What a worker's decisions know of its model: the catalog's view of it, and whether
    it went. hive tracks the going as it sees it (hive/runtime/departures.py); `hive plan`
    knows only the records (`offline`)."""

    model_config = ConfigDict(frozen=True)

    name: str
    observed: ObservedModel | None
    #: Why the model went, if hive saw it go, or ABSENT while its record says `state:
    #: absent`; None for a model that is there or was never seen (not fetched yet).
    gone: str | None = None
    #: The word a running worker is stopped with when the model is not on disk (why it
    #: went, or is going: a file that is not there was removed, unless hive knows better).
    why: str = REMOVED

    @classmethod
    def offline(cls, name: str, observed: ObservedModel | None, *, absent: bool) -> ModelView:
        """As `hive plan` sees it: `absent`, its record says `state: absent`."""
        return cls(
            name=name,
            observed=observed,
            gone=ABSENT if absent else None,
            why=ABSENT if absent else REMOVED,
        )


class Why(BaseModel):
    """A reason (CamelCase, for the condition and the narration) and its message."""

    model_config = ConfigDict(frozen=True)

    reason: str
    message: str


class Launch(BaseModel):
    """A worker that may start, as far as its record, its runtime and its model go: the
    args it runs with (and what was changed from the record's), and what it needs."""

    model_config = ConfigDict(frozen=True)

    entry: RuntimeEntry
    args: dict[str, ArgValue]
    changes: tuple[ArgAdjustment, ...]
    meta: ModelMetadata
    estimate: MemoryEstimate

    @property
    def adjusted(self) -> tuple[str, str] | None:
        """The `ArgsAdjusted` condition (reason, message), or None: args as asked."""
        return adjustments_condition(self.changes)


def stop_reason(
    spec: WorkerSpec | None,
    *,
    running: WorkerState,
    model: ModelView | None,
    sources_synced: bool = True,
    restart_requested: bool = False,
    unhealthy: str | None = None,
    start_timed_out: str | None = None,
) -> Why | None:
    """Why the running worker `running` must stop, or None. `spec`: its record (None: no
    source declares it; an adopted worker is kept until `sources_synced`); `model`: the
    record's model. The last three are what hive saw of the process (a restart
    asked for, its failing health checks, its start that never answered)."""
    if spec is None:
        if not sources_synced:
            return None  # adopted, and a source may yet declare it
        return Why(reason="Removed", message="no source declares it any more")
    if spec.state == "stopped":
        return Why(reason="Stopped", message="state: stopped")
    if model is not None and (model.gone == ABSENT or not on_disk(model.observed)):
        # llama.cpp would go on serving the weights it has mapped, but could not restart.
        return Why(reason="ModelGone", message=f"model {spec.model} is gone: {model.why}")
    meta = model.observed.metadata if model is not None and model.observed else None
    if running.spec_hash != spec_hash(spec, model_sha256=meta.sha256 if meta else None):
        return Why(
            reason="Replaced", message="its record changed (model, runtime, device, port or args)"
        )
    if restart_requested:
        return Why(reason="RestartRequested", message="a restart was requested")
    if unhealthy is not None:
        return Why(reason="Unhealthy", message=unhealthy)
    if start_timed_out is not None:
        return Why(reason="StartTimeout", message=start_timed_out)
    return None


def start_check(
    spec: WorkerSpec,
    *,
    runtimes: Mapping[str, RuntimeEntry],
    model: ModelView,
    boot: str | None,
    runtime_root: Path | None = None,
) -> Why | Launch:
    """The first thing that keeps the worker of `spec` from starting (its runtime, its
    args, its model), or what it starts with. `boot`: this machine's boot id (a model
    published by another boot and never synced is hashed again before use);
    `runtime_root`: where runtime entries are added (named in the message)."""
    entry = runtimes.get(spec.runtime)
    if entry is None:
        where = f"; add one under {runtime_root}" if runtime_root is not None else ""
        return Why(
            reason="UnknownRuntime",
            message=f"runtime {spec.runtime!r} is not in the worker catalog (known: "
            f"{', '.join(runtimes)}{where})",
        )
    if not entry.available:
        return Why(
            reason="RuntimeUnavailable", message=f"runtime {entry.id}: {entry.unavailable_reason}"
        )
    try:
        args = resolve_args(entry, dict(spec.args))
    except InvalidArgs as exc:
        return Why(reason=exc.reason, message=exc.message)
    observed = model.observed
    if model.gone is not None and (model.gone == ABSENT or not on_disk(observed)):
        return Why(
            reason="ModelGone",
            message=f"model {spec.model} is gone: {model.gone}; the worker starts again once "
            "the model is back",
        )
    meta = observed.metadata if observed else None
    usable = meta is not None and meta.status is ArtifactStatus.AVAILABLE
    if meta is None or not usable or meta.needs_check(boot):
        state = meta.status.value if meta else "not on disk"
        if usable:
            state = "being hashed again (it was not synced when the machine restarted)"
        return Why(
            reason="ModelNotReady",
            message=f"model {spec.model} is {state}; the worker starts once it is Available",
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
    return Launch(entry=entry, args=args, changes=changes, meta=meta, estimate=estimate)


def fit(
    launch: Launch, *, device: str, gpus: Sequence[GpuInfo], ram_available_bytes: int
) -> Why | None:
    """Unschedulable (and why) when what the worker needs does not fit on `device` now."""
    placement = check_fit(
        estimate=launch.estimate,
        device=device,
        gpus=gpus,
        ram_available_bytes=ram_available_bytes,
    )
    if placement.fits:
        return None
    return Why(reason="Unschedulable", message=f"{placement.reason}: {placement.message}")
