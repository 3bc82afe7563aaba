"""The provisioning actuator's metadata updates: a sync never loses a concurrent change."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hive.actuators.provision import provision_file, sync_model, update_metadata
from hive.model.actions import ProvisionModel
from hive.model.observed import ModelMetadata
from hive.model.provisioning import METADATA
from hive.observers.catalog import ModelCatalog, boot_id

WHEN = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)


def _metadata(catalog: ModelCatalog, name: str) -> ModelMetadata:
    return ModelMetadata.model_validate_json((catalog.directory(name) / METADATA).read_bytes())


def _provision(catalog: ModelCatalog, source: Path) -> str:
    action = ProvisionModel(
        name="tiny", reason="test", source=f"file:{source}", resolved_source=str(source)
    )
    cancel = threading.Event()
    out = provision_file(action, catalog=catalog, now=WHEN, cancel=cancel, progress=lambda _: None)
    return out.method


def test_a_hard_linked_model_is_synced_at_once(tmp_path: Path, tiny_model: Path) -> None:
    catalog = ModelCatalog(tmp_path / "home")
    assert _provision(catalog, tiny_model) == "hardlink"
    meta = _metadata(catalog, "tiny")
    assert (meta.synced, meta.boot_id) == (True, boot_id())


def test_a_copied_model_is_unsynced_then_synced_without_losing_a_concurrent_update(
    tmp_path: Path, tiny_model_elsewhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = ModelCatalog(tmp_path / "home")
    assert _provision(catalog, tiny_model_elsewhere) == "copy"
    published = _metadata(catalog, "tiny")
    assert (published.synced, published.boot_id) == (False, boot_id())
    cancel = threading.Event()

    # A worker records last_accessed while the sync is fsyncing the model's file (the
    # first fsync; `os` is one module, so the later ones are patched too).
    real_fsync = os.fsync
    touched: list[int] = []

    def fsync_with_a_touch(fd: int) -> None:
        if not touched:
            touched.append(fd)
            update_metadata(catalog.directory("tiny"), durable=False, last_accessed=WHEN)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_with_a_touch)
    assert sync_model("tiny", catalog=catalog, verify=True, cancel=cancel) is None
    synced = _metadata(catalog, "tiny")
    assert synced.synced is True
    assert synced.last_accessed == WHEN
    assert synced.sha256 == published.sha256


def test_update_metadata_of_a_model_that_is_gone_is_none(tmp_path: Path) -> None:
    assert update_metadata(tmp_path, durable=False, synced=True) is None
