"""JSON views the API serves: desired, observed and status side by side. Pure."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hive.model.ids import Kind, ObjectKey
from hive.model.observed import ArtifactStatus, ObservedModel
from hive.model.status import ModelPhase
from hive.runtime.manager import Manager

_PHASE_OF_ARTIFACT = {
    ArtifactStatus.AVAILABLE: ModelPhase.AVAILABLE,
    ArtifactStatus.DOWNLOADING: ModelPhase.DOWNLOADING,
    ArtifactStatus.FAILED: ModelPhase.FAILED,
}


def object_view(manager: Manager, key: ObjectKey, observed: ObservedModel | None) -> dict[str, Any]:
    record = manager.store.desired(key)
    status = manager.reconciler.statuses.get(key)
    out: dict[str, Any] = {
        "kind": key.kind.value,
        "name": key.name,
        "managed": record is not None,
        "source": None,
        "generation": manager.store.generation(key) if record else None,
        "labels": dict(record.manifest.metadata.labels) if record else {},
        "spec": record.manifest.spec.model_dump(mode="json") if record else None,
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


def models_view(manager: Manager) -> list[dict[str, Any]]:
    observed = manager.catalog.observe_all()
    keys = {ObjectKey.of(Kind.MODEL, n) for n in observed}
    keys.update(k for k in manager.store.declared_keys() if k.kind is Kind.MODEL)
    return [object_view(manager, k, observed.get(k.name)) for k in sorted(keys)]


def status_view(manager: Manager) -> dict[str, Any]:
    now = manager.clock.now()
    counts: dict[str, Counter[str]] = {kind.value: Counter() for kind in Kind}
    observed = manager.catalog.observe_all()
    keys = {ObjectKey.of(Kind.MODEL, n) for n in observed} | manager.store.declared_keys()
    for key in keys:
        status = manager.reconciler.statuses.get(key)
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
        }
        for s in manager.store.sources()
    ]
    return {
        "hive_id": manager.settings.hive_id,
        "status": "running",
        "started_at": manager.started_at.isoformat().replace("+00:00", "Z"),
        "uptime_seconds": int((now - manager.started_at).total_seconds()),
        "home": str(manager.settings.home),
        "synced": manager.store.all_synced,
        "sources": sources,
        "objects": {kind: dict(c) for kind, c in counts.items()},
        "queue": {"pending": len(manager.queue), "in_progress": len(manager.queue.processing)},
        "last_event_id": manager.bus.last_id,
    }
