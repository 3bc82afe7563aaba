"""End to end: the real `hive serve` on temp dirs, driven through files and HTTP."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Hive, model_yaml, poll, write_atomic

pytestmark = pytest.mark.e2e


def desired(tmp_path: Path) -> Path:
    d = tmp_path / "desired"
    d.mkdir()
    return d


def test_dropped_yaml_converges_and_every_step_is_narrated(
    hive_factory: Callable[..., Hive], desired: Path, tiny_model: Path
) -> None:
    hive = hive_factory(desired=[desired])
    write_atomic(desired / "tiny.yaml", model_yaml("tiny", f"file:{tiny_model}"))

    model = hive.wait_phase("tiny", "Available")
    meta = model["observed"]["metadata"]
    assert meta["sha256"] == hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    assert meta["architecture"] == "llama"
    assert meta["status"] == "Available"
    on_disk = hive.home / "models" / "tiny" / "model.gguf"
    assert on_disk.read_bytes() == tiny_model.read_bytes()
    ready = {c["type"]: c for c in model["status"]["conditions"]}["Ready"]
    assert ready["status"] == "True"
    assert model["status"]["observedGeneration"] == 1

    hive.wait_event("model_available", obj="Model/tiny")
    steps = hive.actions("Model/tiny")
    expected = [
        "manifest_applied",
        "model_download_start",
        "model_download_complete",
        "model_available",
    ]
    assert [s for s in steps if s in expected] == expected, steps


def test_broken_yaml_is_reported_with_file_and_line_and_model_is_untouched(
    hive_factory: Callable[..., Hive], desired: Path, tiny_model: Path
) -> None:
    hive = hive_factory(desired=[desired])
    manifest = desired / "tiny.yaml"
    write_atomic(manifest, model_yaml("tiny", f"file:{tiny_model}"))
    hive.wait_phase("tiny", "Available")
    before = (hive.home / "models" / "tiny" / "model.gguf").stat()

    write_atomic(manifest, model_yaml("tiny", "ftp://example.com/x.gguf"))
    error = hive.wait_event("manifest_error")
    assert error["data"]["file"].endswith("tiny.yaml")
    assert error["data"]["line"] == 6
    assert "scheme 'ftp' is not supported" in error["message"]
    status = hive.get("/v1/status")
    (source,) = [s for s in status["sources"] if s["kind"] == "directory"]
    assert source["errors"] and source["errors"][0]["line"] == 6

    model = hive.model("tiny")
    assert model is not None
    assert model["status"]["phase"] == "Available"
    assert model["spec"]["source"] == f"file:{tiny_model}"  # the last good record stays
    after = (hive.home / "models" / "tiny" / "model.gguf").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    # Fixed again: the error clears, and an event says so.
    write_atomic(manifest, model_yaml("tiny", f"file:{tiny_model}"))
    poll(lambda: not hive.get("/v1/status")["sources"][0]["errors"], what="errors to clear")
    cleared = hive.wait_event("manifest_error_cleared")
    assert cleared["message"] == f"{manifest}: fixed; its 1 record(s) apply"


def test_model_deleted_by_hand_is_provisioned_again_after_resync(
    hive_factory: Callable[..., Hive], desired: Path, tiny_model: Path
) -> None:
    hive = hive_factory(desired=[desired], resync=0.5)
    write_atomic(desired / "tiny.yaml", model_yaml("tiny", f"file:{tiny_model}"))
    hive.wait_phase("tiny", "Available")
    shutil.rmtree(hive.home / "models" / "tiny")

    poll(
        lambda: hive.actions("Model/tiny").count("model_download_complete") >= 2,
        what="a second provisioning",
    )
    hive.wait_phase("tiny", "Available")
    assert (
        hive.home / "models" / "tiny" / "model.gguf"
    ).stat().st_size == tiny_model.stat().st_size


def test_removing_the_record_keeps_the_files(
    hive_factory: Callable[..., Hive], desired: Path, tiny_model: Path
) -> None:
    hive = hive_factory(desired=[desired])
    write_atomic(desired / "tiny.yaml", model_yaml("tiny", f"file:{tiny_model}"))
    hive.wait_phase("tiny", "Available")

    (desired / ".hive-allow-empty").touch()  # the last record may go
    (desired / "tiny.yaml").unlink()
    hive.wait_event("manifest_removed", obj="Model/tiny")

    def unmanaged() -> dict[str, Any] | None:
        m = hive.model("tiny")
        return m if m is not None and not m["managed"] else None

    model = poll(unmanaged, what="the model to be unmanaged")
    assert model["status"]["phase"] == "Available"
    assert (hive.home / "models" / "tiny" / "model.gguf").exists()


def test_state_absent_deletes_the_files(
    hive_factory: Callable[..., Hive], desired: Path, tiny_model: Path
) -> None:
    hive = hive_factory(desired=[desired])
    write_atomic(desired / "tiny.yaml", model_yaml("tiny", f"file:{tiny_model}"))
    hive.wait_phase("tiny", "Available")

    write_atomic(desired / "tiny.yaml", model_yaml("tiny", f"file:{tiny_model}", state="absent"))
    model = hive.wait_phase("tiny", "Absent")
    assert model["status"]["observedGeneration"] == 2
    assert not (hive.home / "models" / "tiny").exists()
    assert "model_delete_complete" in hive.actions("Model/tiny")
    assert tiny_model.exists()  # the source is never touched


def test_two_sources_declaring_one_name_conflict(
    hive_factory: Callable[..., Hive], tmp_path: Path, tiny_model: Path
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "m.yaml").write_text(model_yaml("tiny", f"file:{tiny_model}"))
    hive = hive_factory(desired=[first, second])
    hive.wait_phase("tiny", "Available")

    write_atomic(second / "m.yaml", model_yaml("tiny", "file:/elsewhere/other.gguf"))
    event = hive.wait_event("conflict", obj="Model/tiny")
    assert str(second) in event["message"] and str(first) in event["message"]

    def conflict() -> dict[str, str] | None:
        m = hive.model("tiny")
        conds = {c["type"]: c for c in (m or {})["status"]["conditions"]}
        return conds.get("Conflict")

    cond = poll(conflict, what="a Conflict condition")
    assert cond["status"] == "True"
    model = hive.model("tiny")
    assert model is not None
    assert model["source"]["name"] == f"dir:{first}"  # the first owner keeps it
    assert model["spec"]["source"] == f"file:{tiny_model}"

    # The second declaration goes: the conflict ends, and so does the condition.
    (second / ".hive-allow-empty").touch()  # its last record may go
    (second / "m.yaml").unlink()
    poll(lambda: conflict() is None, what="the Conflict condition to clear")


def test_restart_copies_nothing_again(
    hive_factory: Callable[..., Hive], desired: Path, tiny_model: Path
) -> None:
    write_atomic(desired / "tiny.yaml", model_yaml("tiny", f"file:{tiny_model}"))
    hive = hive_factory(desired=[desired])
    hive.wait_phase("tiny", "Available")
    before = (hive.home / "models" / "tiny" / "metadata.json").read_bytes()
    hive.stop()

    again = hive_factory(desired=[desired], home=hive.home)
    again.wait_phase("tiny", "Available")
    poll(lambda: again.get("/v1/status")["synced"], what="sync")
    assert "model_download_start" not in again.actions()
    assert (again.home / "models" / "tiny" / "metadata.json").read_bytes() == before


def test_wrong_sha256_fails_with_both_hashes_and_no_model_file(
    hive_factory: Callable[..., Hive], desired: Path, tiny_model: Path
) -> None:
    hive = hive_factory(desired=[desired])
    wrong = "0" * 64
    write_atomic(desired / "tiny.yaml", model_yaml("tiny", f"file:{tiny_model}", sha256=wrong))
    model = hive.wait_phase("tiny", "Failed")
    actual = hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    assert wrong in model["status"]["message"] and actual in model["status"]["message"]
    degraded = {c["type"]: c for c in model["status"]["conditions"]}["Degraded"]
    assert degraded["reason"] == "ChecksumMismatch"
    assert not (hive.home / "models" / "tiny" / "model.gguf").exists()
    assert not list((hive.home / "models" / "tiny").glob("*.partial"))

    # Fixing the checksum converges without waiting for the back-off.
    write_atomic(desired / "tiny.yaml", model_yaml("tiny", f"file:{tiny_model}", sha256=actual))
    model = hive.wait_phase("tiny", "Available")
    assert model["observed"]["metadata"]["verified"] is True


def test_missing_file_source_is_a_clear_failure(
    hive_factory: Callable[..., Hive], desired: Path
) -> None:
    hive = hive_factory(desired=[desired])
    write_atomic(desired / "m.yaml", model_yaml("ghost", "file:models/ghost.gguf"))
    model = hive.wait_phase("ghost", "Failed")
    assert str(desired / "models" / "ghost.gguf") in model["status"]["message"]
    assert "does not exist" in model["status"]["message"]
    event = hive.wait_event("model_download_failed", obj="Model/ghost")
    assert event["data"]["reason"] == "SourceNotFound"


def test_not_a_gguf_file_fails(
    hive_factory: Callable[..., Hive], desired: Path, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"PK\x03\x04 this is a zip, not a model" * 10)
    hive = hive_factory(desired=[desired])
    write_atomic(desired / "m.yaml", model_yaml("junk", f"file:{junk}"))
    model = hive.wait_phase("junk", "Failed")
    assert "not a GGUF file" in model["status"]["message"]
    assert not (hive.home / "models" / "junk" / "model.gguf").exists()


def test_watched_directory_that_disappears_keeps_its_records(
    hive_factory: Callable[..., Hive], desired: Path, tiny_model: Path
) -> None:
    write_atomic(desired / "tiny.yaml", model_yaml("tiny", f"file:{tiny_model}"))
    hive = hive_factory(desired=[desired])
    hive.wait_phase("tiny", "Available")

    shutil.rmtree(desired)
    event = hive.wait_event("source_error")
    assert "does not exist" in event["message"]
    model = hive.model("tiny")
    assert model is not None and model["managed"] is True

    desired.mkdir()
    write_atomic(desired / "tiny.yaml", model_yaml("tiny", f"file:{tiny_model}"))
    poll(
        lambda: not hive.get("/v1/status")["sources"][0]["errors"],
        timeout=15,
        what="the source to recover",
    )
