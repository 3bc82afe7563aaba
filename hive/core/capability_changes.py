"""The seed heartbeat's `capability_changes`: what models and worker processes came or went
since the last beat the Queen acknowledged. Pure; `hive.queen.link` keeps the inventory
of that beat and sends what this returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from hive.model.queen import CapabilityChanges, ModelChange

#: Sizes are decimal gigabytes (as disks count them), to two decimals.
GB = 1_000_000_000


@dataclass(frozen=True)
class Inventory:
    """What this hive offers now: Available models (name -> bytes) and live worker
    processes (name -> the model each serves)."""

    models: Mapping[str, int] = field(default_factory=dict)
    workers: Mapping[str, str] = field(default_factory=dict)


def size_gb(n: int) -> float:
    return round(n / GB, 2)


def capability_changes(before: Inventory | None, now: Inventory) -> CapabilityChanges | None:
    """The changes from `before` (the inventory of the last acknowledged beat; None before
    the first, when everything there is counts as added) to `now`; None when there are none.
    A removed model's size is the size it had; a worker's is its model's (0 when unknown)."""
    old = before or Inventory()
    models = [
        ModelChange(action="added", model_id=name, size_gb=size_gb(now.models[name]))
        for name in sorted(now.models.keys() - old.models.keys())
    ] + [
        ModelChange(action="removed", model_id=name, size_gb=size_gb(old.models[name]))
        for name in sorted(old.models.keys() - now.models.keys())
    ]

    def worker(action: str, name: str, inventory: Inventory) -> ModelChange:
        model = inventory.workers[name]
        size = inventory.models.get(model, old.models.get(model, now.models.get(model, 0)))
        return ModelChange.model_validate(
            {"action": action, "model_id": model, "size_gb": size_gb(size)}
        )

    # A worker whose model changed (same name) is one removal and one addition.
    gone = {n for n, m in old.workers.items() if now.workers.get(n) != m}
    came = {n for n, m in now.workers.items() if old.workers.get(n) != m}
    workers = [worker("added", n, now) for n in sorted(came)]
    workers += [worker("removed", n, old) for n in sorted(gone)]
    if not models and not workers:
        return None
    return CapabilityChanges(models=models, workers=workers)
