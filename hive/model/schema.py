"""The JSON Schema of a manifest document, generated from the pydantic models.

`python -m hive.model.schema > specs/manifest.schema.json` (or `make schema`); a test
fails when the committed file is stale, so editors always validate against the truth.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from hive.model.manifests import ModelManifest, WorkerManifest

SCHEMA_ID = "https://hive.dev/specs/manifest.schema.json"


def manifest_schema() -> dict[str, Any]:
    adapter: TypeAdapter[ModelManifest | WorkerManifest] = TypeAdapter(
        Annotated[ModelManifest | WorkerManifest, Field(discriminator="kind")]
    )
    schema = adapter.json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "hive manifest (apiVersion hive/v1)",
        "description": "One document of a hive desired-state file: a Model or a Worker.",
        **schema,
    }


def render() -> str:
    return json.dumps(manifest_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(), end="")
