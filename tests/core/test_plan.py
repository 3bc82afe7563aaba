"""The planner: what must happen for each Model so that the disk matches its record."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hive.core.plan import plan, plan_model, resolve_source
from hive.model.actions import (
    Action,
    CleanupPartial,
    DeleteModel,
    ProvisionModel,
    SyncModel,
    describe,
)
from hive.model.ids import SourceName
from hive.model.manifests import Origin, Record
from hive.model.observed import ArtifactStatus, ModelMetadata, ObservedModel

NOW = datetime(2026, 1, 2, tzinfo=UTC)

MANIFEST = Path("/srv/desired/models.yaml")
SOURCE = "file:../models/tiny.gguf"
RESOLVED = "/srv/models/tiny.gguf"
SHA_A = "a" * 64
SHA_B = "b" * 64
SIZE = 100


def record(
    name: str = "tiny",
    *,
    source: str = SOURCE,
    sha256: str | None = None,
    state: str = "present",
    manifest_file: Path | None = MANIFEST,
) -> Record:
    spec: dict[str, Any] = {"source": source, "state": state}
    if sha256 is not None:
        spec["sha256"] = sha256
    return Record.model_validate(
        {
            "manifest": {
                "apiVersion": "hive/v1",
                "kind": "Model",
                "metadata": {"name": name},
                "spec": spec,
            },
            "origin": Origin(source=SourceName("desired"), file=manifest_file, line=1),
        }
    )


def observed(
    name: str = "tiny",
    *,
    status: ArtifactStatus | None = ArtifactStatus.AVAILABLE,
    file_size: int | None = SIZE,
    resolved_source: str | None = RESOLVED,
    sha256: str | None = SHA_A,
    partial: bool = False,
    metadata_error: str | None = None,
) -> ObservedModel:
    metadata = (
        None
        if status is None
        else ModelMetadata(
            id=name,
            name=name,
            path=Path(f"/home/models/{name}/model.gguf"),
            size=SIZE,
            status=status,
            added_at=datetime(2026, 1, 1, tzinfo=UTC),
            sha256=sha256,
            source=SOURCE,
            resolved_source=resolved_source,
        )
    )
    return ObservedModel(
        name=name,
        directory=Path(f"/home/models/{name}"),
        metadata=metadata,
        file_size=file_size,
        partial=partial,
        metadata_error=metadata_error,
    )


OBSERVED: dict[str, ObservedModel | None] = {
    "none": None,
    "complete": observed(),
    "complete+leftovers": observed(partial=True),
    "file-missing": observed(file_size=None),
    "size-mismatch": observed(file_size=50),
    "downloading": observed(status=ArtifactStatus.DOWNLOADING, file_size=50),
    "failed": observed(status=ArtifactStatus.FAILED, file_size=50),
    "metadata-unreadable": observed(
        status=None, metadata_error="Expecting value: line 1 column 1 (char 0)"
    ),
    "partial": observed(status=None, file_size=None, partial=True),
}

RECORDS: dict[str, Record | None] = {
    "no-record": None,
    "present": record(),
    "present-sha-same": record(sha256=SHA_A),
    "present-sha-other": record(sha256=SHA_B),
    "absent": record(state="absent"),
}

# What the planner must decide: None (nothing), "delete", "cleanup", or the reason of a
# provisioning. `prune` marks the one outcome that depends on prune_allowed.
PROVISION_REASONS: dict[str, str] = {
    "none": "not in the catalog",
    "file-missing": "model.gguf is missing",
    "size-mismatch": "catalog entry is available, size 50/100",
    "downloading": "catalog entry is downloading, size 50/100",
    "failed": "catalog entry is failed, size 50/100",
    "metadata-unreadable": "metadata unreadable: Expecting value: line 1 column 1 (char 0)",
    "partial": "not in the catalog",
}


def expected(record_kind: str, observed_kind: str, prune_allowed: bool) -> str | None:
    if record_kind == "no-record":
        # Leftovers: a partial file, or a directory without model.gguf (an interrupted or
        # cancelled provisioning). A complete model without a record is kept.
        leftovers = observed_kind in {"partial", "complete+leftovers", "file-missing"}
        return "cleanup" if leftovers and prune_allowed else None
    if record_kind == "absent":
        return None if observed_kind == "none" else "delete"
    if observed_kind in {"complete", "complete+leftovers"}:
        if record_kind == "present-sha-other":
            return f"sha256 differs (have {SHA_A}, want {SHA_B})"
        return None
    return PROVISION_REASONS[observed_kind]


CASES = [
    pytest.param(r, o, prune, id=f"{r}/{o}/{'prune' if prune else 'keep'}")
    for r in RECORDS
    for o in OBSERVED
    for prune in (False, True)
]


def outcome(actions: list[Action]) -> str | None:
    if not actions:
        return None
    (action,) = actions
    assert action.name == "tiny"
    match action:
        case DeleteModel():
            return "delete"
        case CleanupPartial():
            return "cleanup"
        case ProvisionModel():
            return action.reason
    raise AssertionError(action)


@pytest.mark.parametrize(("record_kind", "observed_kind", "prune_allowed"), CASES)
def test_plan_model_table(record_kind: str, observed_kind: str, prune_allowed: bool) -> None:
    actions = plan_model(
        "tiny",
        record=RECORDS[record_kind],
        observed=OBSERVED[observed_kind],
        prune_allowed=prune_allowed,
        now=NOW,
    )
    assert outcome(actions) == expected(record_kind, observed_kind, prune_allowed)


def test_provision_carries_source_resolved_path_and_checksum() -> None:
    (action,) = plan_model(
        "tiny", record=record(sha256=SHA_B), observed=None, prune_allowed=False, now=NOW
    )
    assert isinstance(action, ProvisionModel)
    assert action.source == SOURCE
    assert action.resolved_source == RESOLVED
    assert action.sha256 == SHA_B


def test_removing_a_record_keeps_a_complete_model() -> None:
    for prune_allowed in (False, True):
        assert (
            plan_model(
                "tiny", record=None, observed=observed(), prune_allowed=prune_allowed, now=NOW
            )
            == []
        )


def test_source_change_provisions_again() -> None:
    changed = record(source="file:../models/tiny-v2.gguf")
    (action,) = plan_model(
        "tiny", record=changed, observed=observed(), prune_allowed=False, now=NOW
    )
    assert isinstance(action, ProvisionModel)
    assert action.reason == f"source changed (was {RESOLVED})"
    assert action.resolved_source == "/srv/models/tiny-v2.gguf"


def test_moving_the_manifest_changes_what_a_relative_source_means() -> None:
    moved = record(manifest_file=Path("/opt/desired/models.yaml"))
    (action,) = plan_model("tiny", record=moved, observed=observed(), prune_allowed=False, now=NOW)
    assert isinstance(action, ProvisionModel)
    assert action.resolved_source == "/opt/models/tiny.gguf"
    assert action.reason == f"source changed (was {RESOLVED})"
    # A sibling directory: ../models/tiny.gguf is still the same file.
    sibling = record(manifest_file=Path("/srv/other/models.yaml"))
    assert (
        plan_model("tiny", record=sibling, observed=observed(), prune_allowed=False, now=NOW) == []
    )


def test_equivalent_spelling_of_the_same_file_is_not_a_change() -> None:
    same = record(source="file:./../models/./tiny.gguf")
    assert plan_model("tiny", record=same, observed=observed(), prune_allowed=False, now=NOW) == []
    absolute = record(source="file:///srv/models/tiny.gguf")
    assert (
        plan_model("tiny", record=absolute, observed=observed(), prune_allowed=False, now=NOW) == []
    )


def test_a_url_with_credentials_matches_its_catalog_entry_which_keeps_it_redacted() -> None:
    wanted = record(source="https://alice:S3CR3T@host.example/m.gguf?token=T0K")
    entry = observed(resolved_source="https://alice:***@host.example/m.gguf?token=***")
    assert plan_model("tiny", record=wanted, observed=entry, prune_allowed=False, now=NOW) == []
    # New credentials name the same bytes; another path does not, and says so redacted.
    rotated = record(source="https://alice:N3W@host.example/m.gguf?token=N3W")
    assert plan_model("tiny", record=rotated, observed=entry, prune_allowed=False, now=NOW) == []
    moved = record(source="https://alice:S3CR3T@host.example/v2.gguf?token=T0K")
    (action,) = plan_model("tiny", record=moved, observed=entry, prune_allowed=False, now=NOW)
    assert isinstance(action, ProvisionModel)
    assert action.source == "https://alice:S3CR3T@host.example/v2.gguf?token=T0K"  # to use
    assert describe(action) == (
        "provision Model/tiny from https://alice:***@host.example/v2.gguf?token=*** (source "
        "changed (was https://alice:***@host.example/m.gguf?token=***))"
    )


def test_a_pinned_checksum_makes_the_source_irrelevant() -> None:
    moved = record(source="https://mirror.example.com/tiny.gguf", sha256=SHA_A)
    assert plan_model("tiny", record=moved, observed=observed(), prune_allowed=False, now=NOW) == []


def test_a_pinned_checksum_against_an_unverified_entry_provisions() -> None:
    (action,) = plan_model(
        "tiny",
        record=record(sha256=SHA_A),
        observed=observed(sha256=None),
        prune_allowed=False,
        now=NOW,
    )
    assert isinstance(action, ProvisionModel)
    assert action.reason.startswith("sha256 differs (have None")


def test_plan_covers_both_sides_in_name_order() -> None:
    desired = {
        "c": record("c"),
        "a": record("a", state="absent"),
        "d": record("d"),
    }
    seen = {
        "a": observed("a"),
        "b": observed("b", status=None, file_size=None, partial=True),
        "d": observed("d"),
        "e": observed("e"),
    }
    actions = plan(desired, seen, prune_allowed=True, now=NOW)
    assert [(type(a).__name__, a.name) for a in actions] == [
        ("DeleteModel", "a"),
        ("CleanupPartial", "b"),
        ("ProvisionModel", "c"),
    ]
    assert plan(desired, seen, prune_allowed=False, now=NOW) == [actions[0], actions[2]]


def test_plan_of_nothing_is_nothing() -> None:
    assert plan({}, {}, prune_allowed=True, now=NOW) == []


@pytest.mark.parametrize(
    ("source", "manifest_file", "resolved"),
    [
        ("file:rel.gguf", Path("/srv/desired/m.yaml"), "/srv/desired/rel.gguf"),
        ("file:sub/rel.gguf", Path("/srv/desired/m.yaml"), "/srv/desired/sub/rel.gguf"),
        ("file:../models/x.gguf", Path("/srv/desired/m.yaml"), "/srv/models/x.gguf"),
        ("file:./a/../b.gguf", Path("/srv/desired/m.yaml"), "/srv/desired/b.gguf"),
        ("file:../../../../x.gguf", Path("/srv/desired/m.yaml"), "/x.gguf"),
        ("file:/abs/x.gguf", Path("/srv/desired/m.yaml"), "/abs/x.gguf"),
        ("file:/abs/sub/../x.gguf", None, "/abs/x.gguf"),
        ("file:///abs.gguf", Path("/srv/desired/m.yaml"), "/abs.gguf"),
        ("file:///a//b/./c.gguf", None, "/a/b/c.gguf"),
        ("hf://org/repo/x.gguf@main", Path("/srv/m.yaml"), "hf://org/repo/x.gguf@main"),
        ("https://host/a/../x.gguf", Path("/srv/m.yaml"), "https://host/a/../x.gguf"),
        ("http://host/x.gguf", None, "http://host/x.gguf"),
    ],
)
def test_resolve_source(source: str, manifest_file: Path | None, resolved: str) -> None:
    assert resolve_source(source, manifest_file=manifest_file) == resolved


def test_resolve_relative_source_without_a_manifest_file_uses_the_working_directory() -> None:
    assert resolve_source("file:x.gguf", manifest_file=None) == os.path.join(os.getcwd(), "x.gguf")


def test_resolve_relative_manifest_path_gives_an_absolute_path() -> None:
    resolved = resolve_source("file:x.gguf", manifest_file=Path("desired/m.yaml"))
    assert resolved == os.path.join(os.getcwd(), "desired", "x.gguf")


# -- syncing a published model -----------------------------------------------------------
def unsynced(boot: str | None, **kwargs: Any) -> ObservedModel:
    seen = observed(**kwargs)
    assert seen.metadata is not None
    meta = seen.metadata.model_copy(update={"synced": False, "boot_id": boot})
    return seen.model_copy(update={"metadata": meta})


@pytest.mark.parametrize("wanted", [True, False], ids=["record", "no-record"])
def test_a_model_published_in_this_boot_is_synced_and_stays_usable(wanted: bool) -> None:
    (action,) = plan_model(
        "tiny",
        record=record() if wanted else None,
        observed=unsynced("boot-1"),
        prune_allowed=True,
        now=NOW,
        boot="boot-1",
    )
    assert isinstance(action, SyncModel)
    assert not action.verify
    meta = unsynced("boot-1").metadata
    assert meta is not None and not meta.needs_check("boot-1")


@pytest.mark.parametrize("published_by", ["boot-0", None], ids=["other-boot", "unknown-boot"])
def test_a_model_left_unsynced_by_another_boot_is_hashed_again(published_by: str | None) -> None:
    (action,) = plan_model(
        "tiny",
        record=record(),
        observed=unsynced(published_by),
        prune_allowed=True,
        now=NOW,
        boot="boot-1",
    )
    assert isinstance(action, SyncModel)
    assert action.verify
    assert "earlier boot" in action.reason
    meta = unsynced(published_by).metadata
    assert meta is not None and meta.needs_check("boot-1")


def test_an_unsynced_model_that_is_out_of_date_is_provisioned_not_synced() -> None:
    (action,) = plan_model(
        "tiny",
        record=record(sha256=SHA_B),
        observed=unsynced("boot-1"),
        prune_allowed=True,
        now=NOW,
        boot="boot-1",
    )
    assert isinstance(action, ProvisionModel)


def test_a_synced_model_needs_nothing() -> None:
    assert (
        plan_model(
            "tiny", record=record(), observed=observed(), prune_allowed=True, now=NOW, boot="boot-1"
        )
        == []
    )
