"""The model layer on its own: names, object keys, manifests validated directly, origins,
selectors, action descriptions and what counts as a complete catalog entry."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from hive.model.actions import CleanupPartial, DeleteModel, ProvisionModel, describe
from hive.model.ids import Kind, ObjectKey, SourceName, name_problem
from hive.model.manifests import (
    API_VERSION,
    LabelSelector,
    ModelManifest,
    Origin,
    Record,
    WorkerManifest,
)
from hive.model.observed import ArtifactStatus, ModelMetadata, ObservedModel

SOURCE = SourceName("dir")


def model_data(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Model",
        "metadata": {"name": "tiny"},
        "spec": {"source": "https://example.com/tiny.gguf", **spec},
    }


def worker_data(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Worker",
        "metadata": {"name": "chat"},
        "spec": {"model": "tiny", "runtime": "llama-cpp", **spec},
    }


# -- names and keys -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["a", "tiny-llama", "tinyllama-1.1b", "0", "a" * 63, "model.v2", "9x"],
)
def test_valid_names(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "must not be empty"),
        ("a" * 64, "is 64 characters long; at most 63 are allowed"),
        ("a" * 300, "is 300 characters long"),
        ("a..b", "must not contain '..'"),
        ("..", "must not contain '..'"),
        ("a/b", "'a/b' is not a valid name"),
        ("Tiny", "'Tiny' is not a valid name"),
        ("-a", "is not a valid name"),
        ("a-", "is not a valid name"),
        (".a", "is not a valid name"),
        ("a_b", "is not a valid name"),
        ("a b", "is not a valid name"),
        ("é", "is not a valid name"),
    ],
)
def test_invalid_names_say_why(name: str, message: str) -> None:
    problem = name_problem(name)
    assert problem is not None
    assert message in problem


def test_object_key_parts() -> None:
    key = ObjectKey.of(Kind.WORKER, "chat")
    assert key == "Worker/chat"
    assert key.kind is Kind.WORKER
    assert key.name == "chat"
    assert ObjectKey.parse("Model/tiny") == ObjectKey.of(Kind.MODEL, "tiny")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tiny", "is not an object key (use Model/<name> or Worker/<name>)"),
        ("Pod/tiny", "is not an object key"),
        ("model/tiny", "is not an object key"),
        ("Model/", "name must not be empty"),
        ("Model/a/b", "is not a valid name"),
        ("Model/..", "must not contain '..'"),
    ],
)
def test_object_key_parse_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=r".*") as info:
        ObjectKey.parse(text)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "text", ["x" * 20_000, "Model/" + "x" * 20_000, "Model/a\n" + "x" * 20_000]
)
def test_object_key_problem_echoes_the_text_bounded(text: str) -> None:
    """`GET /v1/events?object=...` repeats the text in its 422: at most 200 characters."""
    with pytest.raises(ValueError, match=r".*") as info:
        ObjectKey.parse(text)
    assert len(str(info.value)) < 300


def test_a_name_with_a_final_newline_is_refused() -> None:
    assert name_problem("abc\n") is not None
    with pytest.raises(ValueError, match="is not a valid name"):
        ObjectKey.parse("Model/abc\n")


def test_object_key_validates_as_a_pydantic_field() -> None:
    class Holder(BaseModel):
        key: ObjectKey

    assert Holder.model_validate({"key": "Model/tiny"}).key.name == "tiny"
    with pytest.raises(ValidationError, match="is not an object key"):
        Holder.model_validate({"key": "nope"})


# -- manifests -------------------------------------------------------------------------------


def test_model_manifest_defaults() -> None:
    manifest = ModelManifest.model_validate(model_data())
    assert manifest.spec.state == "present"
    assert manifest.spec.sha256 is None
    assert manifest.metadata.labels == {}


def test_manifests_are_immutable() -> None:
    manifest = ModelManifest.model_validate(model_data())
    with pytest.raises(ValidationError, match="frozen"):
        setattr(manifest.spec, "source", "file:x")  # noqa: B010


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"source": "ftp://x/y"}, "source"),
        ({"source": "s3://bucket/x.gguf"}, "source"),
        ({"source": "hf://org"}, "source"),
        ({"source": "hf://org/repo/x.gguf@"}, "source"),
        ({"source": "hf://a/../../etc/passwd.gguf"}, "source"),
        ({"source": "hf://org/../x.gguf"}, "source"),
        ({"source": "hf://org/repo/./x.gguf"}, "source"),
        ({"source": "http://"}, "source"),
        ({"source": "file:"}, "source"),
        ({"sha256": "ABC"}, "sha256"),
        ({"state": "deleted"}, "state"),
        ({"replicas": 1}, "replicas"),
    ],
)
def test_model_spec_refuses(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        ModelManifest.model_validate(model_data(**spec))
    assert [e["loc"] for e in info.value.errors()] == [("spec", field)]


def test_a_revision_may_hold_dots() -> None:
    source = "hf://org/repo.v2/dir/x.gguf@v1.2"
    assert ModelManifest.model_validate(model_data(source=source)).spec.source == source


def test_a_source_is_at_most_4096_characters() -> None:
    """Every copy of a source (a status, metadata.json, an event) is bounded by its own."""
    base = "https://example.com/"
    ok = base + "a" * (4096 - len(base))
    assert ModelManifest.model_validate(model_data(source=ok)).spec.source == ok
    with pytest.raises(ValidationError) as info:
        ModelManifest.model_validate(model_data(source=ok + "a"))
    assert [e["loc"] for e in info.value.errors()] == [("spec", "source")]
    assert "4096 characters" in str(info.value)


def test_model_spec_is_strict_about_types() -> None:
    data = model_data()
    data["metadata"]["labels"] = {"version": 1}
    with pytest.raises(ValidationError):
        ModelManifest.model_validate(data)


@pytest.mark.parametrize(
    "spec",
    [
        {"device": "GPU-3", "port": 9000, "restartPolicy": "Never", "state": "stopped"},
        {"args": {"ctx_size": 4096, "temp": 0.5, "chat_template": "chatml", "mlock": False}},
        {"hiveSelector": {"matchLabels": {"gpu": "h100"}}},
    ],
)
def test_worker_manifest_accepts(spec: dict[str, Any]) -> None:
    manifest = WorkerManifest.model_validate(worker_data(**spec))
    for field, value in spec.items():
        got = getattr(manifest.spec, field)
        assert (
            got.model_dump(exclude_defaults=True) if isinstance(got, BaseModel) else got
        ) == value


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"device": "CPU-1"}, "device"),
        ({"device": "GPU-0 "}, "device"),
        ({"port": 1023}, "port"),
        ({"port": 65536}, "port"),
        ({"port": "9000"}, "port"),
        ({"restartPolicy": "Sometimes"}, "restartPolicy"),
        ({"state": "paused"}, "state"),
        ({"model": "Bad/Name"}, "model"),
        ({"command": ["/bin/sh"]}, "command"),
    ],
)
def test_worker_manifest_refuses(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        WorkerManifest.model_validate(worker_data(**spec))
    assert {e["loc"][:2] for e in info.value.errors()} == {("spec", field)}


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ({}, {}, True),
        ({}, {"gpu": "h100"}, True),
        ({"gpu": "h100"}, {"gpu": "h100", "zone": "a"}, True),
        ({"gpu": "h100"}, {"gpu": "a100"}, False),
        ({"gpu": "h100"}, {}, False),
        ({"gpu": "h100", "zone": "a"}, {"gpu": "h100"}, False),
    ],
)
def test_label_selector_matches(
    selector: dict[str, str], labels: dict[str, str], matches: bool
) -> None:
    assert LabelSelector(matchLabels=selector).matches(labels) is matches


# -- records and origins ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "where"),
    [
        (Origin(source=SOURCE, file=Path("d/m.yaml"), line=7), "d/m.yaml:7"),
        (Origin(source=SOURCE, file=Path("d/m.yaml")), "d/m.yaml"),
        (Origin(source=SourceName("api")), "source api"),
    ],
)
def test_origin_where(origin: Origin, where: str) -> None:
    assert origin.where() == where


def test_record_key_follows_kind_and_name() -> None:
    origin = Origin(source=SOURCE)
    model = Record.model_validate({"manifest": model_data(), "origin": origin})
    worker = Record.model_validate({"manifest": worker_data(), "origin": origin})
    assert (model.key, model.name) == ("Model/tiny", "tiny")
    assert (worker.key, worker.name) == ("Worker/chat", "chat")
    assert isinstance(worker.manifest, WorkerManifest)


# -- actions -----------------------------------------------------------------------------------


def test_describe_actions() -> None:
    provision = ProvisionModel(
        name="tiny", reason="not in the catalog", source="file:x.gguf", resolved_source="/m/x.gguf"
    )
    assert describe(provision) == "provision Model/tiny from file:x.gguf (not in the catalog)"
    assert describe(DeleteModel(name="tiny", reason="state: absent")) == (
        "delete Model/tiny (state: absent)"
    )
    assert describe(CleanupPartial(name="tiny", reason="gone")) == "clean up Model/tiny (gone)"
    assert provision.key == "Model/tiny"


def test_describe_bounds_a_long_source_and_reason_and_redacts_them() -> None:
    source = "https://alice:S3CR3T@example.com/" + "a" * 4000 + ".gguf?token=T0K3N"
    provision = ProvisionModel(
        name="tiny",
        reason="source changed (was " + "b" * 4000 + ")",
        source=source,
        resolved_source=source,
    )
    line = describe(provision)
    assert len(line) < 500, len(line)
    assert line.startswith("provision Model/tiny from https://alice:***@example.com/aaa")
    assert "S3CR3T" not in line and "T0K3N" not in line


# -- observed ----------------------------------------------------------------------------------


def _observed(
    *, status: ArtifactStatus = ArtifactStatus.AVAILABLE, size: int = 100, on_disk: int | None
) -> ObservedModel:
    metadata = ModelMetadata(
        id="tiny",
        name="tiny",
        path=Path("/home/models/tiny/model.gguf"),
        size=size,
        status=status,
        added_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    return ObservedModel(
        name="tiny", directory=Path("/home/models/tiny"), metadata=metadata, file_size=on_disk
    )


@pytest.mark.parametrize(
    ("observed", "complete"),
    [
        (_observed(on_disk=100), True),
        (_observed(on_disk=99), False),
        (_observed(on_disk=None), False),
        (_observed(status=ArtifactStatus.DOWNLOADING, on_disk=100), False),
        (_observed(status=ArtifactStatus.FAILED, on_disk=100), False),
        (ObservedModel(name="x", directory=Path("/x"), metadata=None, file_size=100), False),
    ],
    ids=["whole", "short", "missing", "downloading", "failed", "no-metadata"],
)
def test_observed_model_complete(observed: ObservedModel, complete: bool) -> None:
    assert observed.complete is complete


def test_metadata_ignores_fields_it_does_not_know() -> None:
    """rbee may add fields to metadata.json; hive must still read the entry."""
    metadata = ModelMetadata.model_validate(
        {
            "id": "tiny",
            "name": "tiny",
            "path": "/m/model.gguf",
            "size": 1,
            "status": "Available",
            "added_at": "2026-01-01T00:00:00Z",
            "rbee_future_field": {"x": 1},
        }
    )
    assert metadata.status is ArtifactStatus.AVAILABLE
