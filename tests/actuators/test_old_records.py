"""Records an older hive wrote: `metadata.json` files and sidecars at mode 0644 with a
source's URL as written, credentials included. At start they are rewritten (0600, URLs
redacted), and a partial download they describe still resumes."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

from hive.actuators.provision import secure_records
from hive.model.observed import ArtifactStatus, ModelMetadata, PartialState
from hive.observers.catalog import ModelCatalog
from hive.runtime.manager import Manager
from hive.settings import Settings

WHEN = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)
URL = "https://alice:S3CR3T-XYZ@h.test/m.gguf?token=T0K3N-QQQ"
SHOWN = "https://alice:***@h.test/m.gguf?token=***"
SECRETS = (b"S3CR3T-XYZ", b"T0K3N-QQQ")


def write_old_records(home: Path) -> tuple[Path, Path, Path]:
    """A catalog as an older hive left it: a model that is Available, and one whose
    download was interrupted (its partial and sidecar), each record 0644 with the URL
    as written. The bytes are what that hive's `model_dump_json` wrote."""
    done = home / "models" / "done"
    done.mkdir(parents=True)
    metadata = ModelMetadata(
        id="done",
        name="done",
        path=done / "model.gguf",
        size=4,
        status=ArtifactStatus.AVAILABLE,
        added_at=WHEN,
        sha256="0" * 64,
    ).model_dump(mode="json")
    metadata.update(source=URL, resolved_source=URL, url=URL)
    (done / "model.gguf").write_bytes(b"GGUF")
    (done / "metadata.json").write_text(json.dumps(metadata, indent=2))
    partial = home / "models" / "partial"
    partial.mkdir()
    (partial / "model.gguf.partial").write_bytes(bytes(1000))
    state = PartialState(url="x", etag="e", size=5000, started_at=WHEN).model_dump(mode="json")
    state.update(url=URL, last_error=f"{URL}: the connection ended at byte 1000 of 5000")
    (partial / "model.gguf.partial.json").write_text(json.dumps(state))
    interrupted = dict(metadata, id="partial", name="partial", status="Downloading")
    (partial / "metadata.json").write_text(json.dumps(interrupted, indent=2))
    records = (done / "metadata.json", partial / "model.gguf.partial.json")
    for record in (*records, partial / "metadata.json"):
        record.chmod(0o644)
    return records[0], records[1], partial / "metadata.json"


def assert_secured(*records: Path) -> None:
    for record in records:
        assert stat.S_IMODE(record.stat().st_mode) == 0o600, record
        raw = record.read_bytes()
        assert not [s for s in SECRETS if s in raw], (record, raw)


def test_records_an_older_hive_wrote_are_rewritten_private_and_redacted(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    metadata, sidecar, downloading = write_old_records(home)
    catalog = ModelCatalog(home)
    assert secure_records(catalog) == 3
    assert_secured(metadata, sidecar, downloading)
    rewritten = ModelMetadata.model_validate_json(metadata.read_bytes())
    assert rewritten.source == SHOWN and rewritten.url == SHOWN
    assert rewritten.sha256 == "0" * 64 and rewritten.status == ArtifactStatus.AVAILABLE
    state = PartialState.model_validate_json(sidecar.read_bytes())
    assert state.url == SHOWN
    assert (state.etag, state.size) == ("e", 5000)
    assert state.last_error == f"{SHOWN}: the connection ended at byte 1000 of 5000"
    assert (sidecar.parent / "model.gguf.partial").stat().st_size == 1000  # bytes kept
    # The catalog reads them as before.
    observed = catalog.observe("partial")
    assert observed is not None and observed.download is not None
    assert observed.download.bytes_on_disk == 1000

    # Done once: records already private and redacted are not written again.
    inodes = [os.stat(r).st_ino for r in (metadata, sidecar, downloading)]
    assert secure_records(catalog) == 0
    assert [os.stat(r).st_ino for r in (metadata, sidecar, downloading)] == inodes


def test_a_record_that_is_only_too_readable_is_narrowed_in_place(tmp_path: Path) -> None:
    home = tmp_path / "home"
    directory = home / "models" / "m"
    directory.mkdir(parents=True)
    record = ModelMetadata(
        id="m",
        name="m",
        path=directory / "model.gguf",
        size=4,
        status=ArtifactStatus.AVAILABLE,
        added_at=WHEN,
        source="file:/srv/m.gguf",
    )
    path = directory / "metadata.json"
    path.write_text(record.model_dump_json(indent=2))
    path.chmod(0o644)
    inode = path.stat().st_ino
    assert secure_records(ModelCatalog(home)) == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_ino == inode


def test_an_unreadable_record_is_left_for_the_catalog_to_report(tmp_path: Path) -> None:
    home = tmp_path / "home"
    directory = home / "models" / "m"
    directory.mkdir(parents=True)
    path = directory / "metadata.json"
    path.write_text('{"id": "m", "name": ')  # cut short
    path.chmod(0o644)
    assert secure_records(ModelCatalog(home)) == 1  # narrowed, not rewritten
    assert path.read_text() == '{"id": "m", "name": '
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_hive_secures_an_older_hives_records_when_it_starts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    records = write_old_records(home)
    manager = Manager(Settings(home=home, desired=(), console=False))
    await manager.start()
    try:
        assert_secured(*records)
    finally:
        await manager.stop()
