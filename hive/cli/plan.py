"""`hive plan`: what hive would do against a home, offline, for Models and Workers.

Observes the home as hive would at its start (the catalog, the worker state records and
whether each process is still there, as adoption checks it; the devices for placement),
then asks the pure planners (hive/core/plan.py, hive/core/worker_plan.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psutil

from hive.core.plan import plan
from hive.core.worker_decide import plan_workers
from hive.model.actions import ProvisionModel, SyncModel, describe, describe_worker
from hive.model.devices import GpuInfo
from hive.model.manifests import ModelManifest, WorkerManifest, WorkerSpec
from hive.observers.catalog import ModelCatalog, boot_id
from hive.observers.gpus import NvmlProbe, probe_from_setting
from hive.observers.processes import live_workers
from hive.observers.runtimes import RuntimeCatalog
from hive.settings import Settings


def plan_all(records: list[Any], *, settings: Settings) -> list[str]:
    """One line per action: the Models' first, then the Workers'."""
    home = settings.home
    models = {r.name: r for r in records if isinstance(r.manifest, ModelManifest)}
    workers: dict[str, WorkerSpec] = {
        r.name: r.manifest.spec for r in records if isinstance(r.manifest, WorkerManifest)
    }
    catalog = ModelCatalog(home).observe_all()
    model_actions = plan(
        models,
        catalog,
        prune_allowed=True,
        now=datetime.now(UTC),
        partial_ttl=settings.partial_ttl,
        boot=boot_id(),
    )
    running = {f.state.name: f.state for f in live_workers(home)[0]}
    gpus: list[GpuInfo] = []
    if any(s.device != "CPU-0" for s in workers.values()):
        probe = probe_from_setting(settings.gpu_probe)
        try:
            gpus = probe.gpus()
        finally:
            if isinstance(probe, NvmlProbe):
                probe.close()  # NVML is shut down as soon as it has been read
    runtimes = RuntimeCatalog(home)
    worker_actions = plan_workers(
        workers,
        running,
        models=catalog,
        provisioning={a.name for a in model_actions if isinstance(a, ProvisionModel | SyncModel)},
        runtimes={e.id: e for e in runtimes.entries()},
        gpus=gpus,
        ram_available_bytes=psutil.virtual_memory().available,
        absent={name for name, r in models.items() if r.manifest.spec.state == "absent"},
        boot=boot_id(),
    )
    return [describe(a) for a in model_actions] + [describe_worker(a) for a in worker_actions]
