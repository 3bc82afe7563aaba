"""The committed JSON Schema is the one the pydantic models generate, and it describes the
example manifests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from hive.model.schema import SCHEMA_ID, manifest_schema, render

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "specs" / "manifest.schema.json"
EXAMPLE = ROOT / "examples" / "desired-state" / "models.yaml"


def test_committed_schema_is_up_to_date() -> None:
    committed = SCHEMA_FILE.read_text()
    assert committed == render(), (
        f"{SCHEMA_FILE.relative_to(ROOT)} is stale: run `make schema` and commit the result"
    )


def test_schema_is_json_with_identity_and_both_kinds() -> None:
    schema = json.loads(render())
    assert schema["$id"] == SCHEMA_ID
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["discriminator"]["propertyName"] == "kind"
    assert set(schema["discriminator"]["mapping"]) == {"Model", "Worker"}
    assert schema == manifest_schema()


def test_schema_carries_the_name_rules_editors_check() -> None:
    meta = manifest_schema()["$defs"]["ObjectMeta"]
    name = meta["properties"]["name"]
    assert name["maxLength"] == 63
    assert name["pattern"] == "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
    assert meta["additionalProperties"] is False
    assert meta["required"] == ["name"]


def _example_documents() -> list[Any]:
    return [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d is not None]


def test_example_documents_validate_against_the_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    documents = _example_documents()
    assert documents
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    for document in documents:
        errors = [e.message for e in validator.iter_errors(document)]
        assert errors == [], errors


def test_schema_refuses_an_unknown_field() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    (document, *_) = _example_documents()
    document["spec"]["replicas"] = 2
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    assert list(validator.iter_errors(document))
