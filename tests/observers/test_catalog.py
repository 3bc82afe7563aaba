"""The disk catalog observer: what counts as a whole model, and a cache that never hides
a change on disk."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

from hive.actuators.provision import write_metadata
from hive.model.observed import ArtifactStatus, ModelFile, ModelMetadata, PartialState
from hive.observers.catalog import ModelCatalog


def install(home: Path, name: str, files: dict[str, bytes]) -> Path:
    directory = home / "models" / name
    directory.mkdir(parents=True)
    for file, data in files.items():
        (directory / file).write_bytes(data)
    split = len(files) > 1
    meta = ModelMetadata(
        id=name,
        name=name,
        path=directory / next(iter(files)),
        size=sum(len(d) for d in files.values()),
        status=ArtifactStatus.AVAILABLE,
        added_at=datetime.now(UTC),
        files=[ModelFile(name=f, size=len(d)) for f, d in files.items()] if split else [],
    )
    (directory / "metadata.json").write_text(meta.model_dump_json())
    return directory


def test_a_single_file_model_is_whole_until_its_file_changes(tmp_path: Path) -> None:
    catalog = ModelCatalog(tmp_path)
    directory = install(tmp_path, "one", {"model.gguf": b"x" * 100})
    observed = catalog.observe("one")
    assert observed is not None
    assert observed.complete
    with (directory / "model.gguf").open("r+b") as fh:
        fh.truncate(50)
    observed = catalog.observe("one")
    assert observed is not None
    assert not observed.complete


def test_a_split_part_damaged_in_place_is_seen_through_the_cache(tmp_path: Path) -> None:
    catalog = ModelCatalog(tmp_path)
    parts = {f"model-0000{i}-of-00002.gguf": bytes([i]) * 100 for i in (1, 2)}
    directory = install(tmp_path, "split", parts)
    observed = catalog.observe("split")
    assert observed is not None
    assert observed.complete
    assert catalog.observe("split") is observed  # cached while nothing changed
    part = directory / "model-00002-of-00002.gguf"
    with part.open("r+b") as fh:  # same inode, same directory: only the part's stat moves
        fh.truncate(10)
    os.utime(part, ns=(1, 1))
    observed = catalog.observe("split")
    assert observed is not None
    assert not observed.complete


def test_a_missing_part_makes_a_split_model_incomplete(tmp_path: Path) -> None:
    catalog = ModelCatalog(tmp_path)
    parts = {f"model-0000{i}-of-00002.gguf": b"y" * 10 for i in (1, 2)}
    directory = install(tmp_path, "split", parts)
    (directory / "model-00001-of-00002.gguf").unlink()
    observed = catalog.observe("split")
    assert observed is not None
    assert observed.file_size is None
    assert not observed.complete


SECRET_URL = "https://alice:S3CR3T@h.example/m.gguf?token=T0K"
SHOWN_URL = "https://alice:***@h.example/m.gguf?token=***"


def test_an_entry_written_by_an_older_hive_is_read_redacted(tmp_path: Path) -> None:
    """metadata.json and a sidecar that hold a source's credentials (written before hive
    redacted them) are shown without them."""
    directory = install(tmp_path, "old", {"model.gguf": b"x" * 10})
    raw = json.loads((directory / "metadata.json").read_text())
    raw |= {"source": SECRET_URL, "resolved_source": SECRET_URL, "url": SECRET_URL}
    raw["error"] = f"GET {SECRET_URL}: 500"
    (directory / "metadata.json").write_text(json.dumps(raw))
    state = {"url": SECRET_URL, "etag": None, "size": 10, "started_at": "2026-01-01T00:00:00Z"}
    (directory / "model.gguf.partial").write_bytes(b"x")
    (directory / "model.gguf.partial.json").write_text(
        json.dumps(state | {"last_error": SECRET_URL})
    )
    observed = ModelCatalog(tmp_path).observe("old")
    assert observed is not None and observed.metadata is not None
    meta, download = observed.metadata, observed.download
    assert (meta.source, meta.resolved_source, meta.url) == (SHOWN_URL,) * 3
    assert meta.error == f"GET {SHOWN_URL}: 500"
    assert download is not None
    assert (download.url, download.last_error) == (SHOWN_URL, SHOWN_URL)
    assert "S3CR3T" not in observed.model_dump_json()


def test_what_hive_writes_holds_no_credentials_and_only_its_user_reads(tmp_path: Path) -> None:
    meta = ModelMetadata(
        id="m",
        name="m",
        path=tmp_path / "model.gguf",
        size=1,
        status=ArtifactStatus.DOWNLOADING,
        added_at=datetime.now(UTC),
        source=SECRET_URL,
    )
    # Even a copy that sets a field without validation is written redacted.
    meta = meta.model_copy(update={"error": f"{SECRET_URL} failed", "url": SECRET_URL})
    write_metadata(tmp_path, meta)
    written = (tmp_path / "metadata.json").read_text()
    assert "S3CR3T" not in written and "T0K" not in written
    assert json.loads(written)["error"] == f"{SHOWN_URL} failed"
    assert stat.S_IMODE((tmp_path / "metadata.json").stat().st_mode) == 0o600
    state = PartialState(url=SECRET_URL, etag=None, size=1, started_at=datetime.now(UTC))
    assert state.url == SHOWN_URL
    copied = state.model_copy(update={"last_error": SECRET_URL, "url": SECRET_URL})
    assert "S3CR3T" not in copied.model_dump_json()
