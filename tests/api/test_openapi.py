"""specs/openapi.yaml against the app: the same routes, and real responses (status, a
model, errors, SSE frames) that validate against its component schemas."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer

from hive.api.app import create_app
from hive.runtime.manager import Manager
from hive.settings import Settings
from tests.conftest import ROOT, apoll, model_yaml

SPEC_PATH = ROOT / "specs" / "openapi.yaml"
T = TypeVar("T")
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    loaded = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_spec_is_openapi_3_1(spec: dict[str, Any]) -> None:
    assert str(spec["openapi"]).startswith("3.1.")
    assert spec["info"]["title"]
    assert spec["info"]["version"]
    assert spec["paths"]
    assert spec["components"]["schemas"]


def test_spec_paths_are_exactly_the_routes_of_the_app(spec: dict[str, Any], tmp_path: Path) -> None:
    app = create_app(Manager(Settings(home=tmp_path, console=False)))
    served = {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"  # aiohttp adds HEAD to GET
    }
    documented = {
        (path, method)
        for path, item in spec["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    assert documented == served, (
        f"specs/openapi.yaml is stale: only in the app {sorted(served - documented)}, "
        f"only in the spec {sorted(documented - served)}"
    )


def test_every_ref_points_at_a_component(spec: dict[str, Any]) -> None:
    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return found + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    schemas = spec["components"]["schemas"]
    prefix = "#/components/schemas/"
    for ref in refs(spec):
        assert ref.startswith(prefix), ref
        assert ref.removeprefix(prefix) in schemas, f"{ref} is not defined"


# -- real responses against the component schemas -------------------------------------------
def _jsonschema() -> Any:
    """The jsonschema module (a dev dependency); the calling test is skipped without it."""
    return pytest.importorskip("jsonschema")


def validator(spec: dict[str, Any], component: str) -> Any:
    """A JSON Schema 2020-12 validator for one component; `$ref`s resolve in the spec."""
    jsonschema = _jsonschema()
    schema = {"$ref": f"#/components/schemas/{component}", "components": spec["components"]}
    return jsonschema.Draft202012Validator(schema)


def assert_valid(spec: dict[str, Any], component: str, instance: Any) -> None:
    errors = sorted(validator(spec, component).iter_errors(instance), key=lambda e: e.path)
    assert not errors, f"{component}: " + "; ".join(
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors[:5]
    )


def test_component_schemas_are_valid_json_schema(spec: dict[str, Any]) -> None:
    jsonschema = _jsonschema()
    for name, schema in spec["components"]["schemas"].items():
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            pytest.fail(f"components.schemas.{name}: {exc.message}")


def test_the_schemas_reject_what_hive_never_sends(spec: dict[str, Any]) -> None:
    # A check that cannot fail is worth nothing: the schemas must be strict enough to see drift.
    bad_phase = {"phase": "Running", "observedGeneration": 0, "conditions": []}
    assert not validator(spec, "ObjectStatus").is_valid(bad_phase)
    assert not validator(spec, "Health").is_valid({"status": "ok", "version": "1", "x": 1})
    assert not validator(spec, "Error").is_valid({"error": {"message": "no code"}})


@asynccontextmanager
async def serving(
    tmp_path: Path, tiny_model: Path, **settings: Any
) -> AsyncIterator[tuple[Manager, str]]:
    """An in-process hive on loopback whose desired state is one Model from `tiny_model`."""
    desired = tmp_path / "desired"
    desired.mkdir()
    (desired / "models.yaml").write_text(model_yaml("tiny", f"file:{tiny_model}"))
    manager = Manager(
        Settings(home=tmp_path / "home", desired=(desired,), console=False, **settings)
    )
    server = TestServer(create_app(manager), host="127.0.0.1")
    await server.start_server()
    try:
        yield manager, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as r:
        return r.status, await r.json()


async def test_real_responses_validate_against_the_spec(
    spec: dict[str, Any], tmp_path: Path, tiny_model: Path
) -> None:
    _jsonschema()
    async with serving(tmp_path, tiny_model) as (_, url), aiohttp.ClientSession() as http:

        async def available() -> dict[str, Any] | None:
            code, body = await get_json(http, url + "/v1/models/tiny")
            return body if code == 200 and body["status"]["phase"] == "Available" else None

        model = await apoll(available, what="Model/tiny to be Available")
        assert_valid(spec, "ModelObject", model)
        assert {c["type"] for c in model["status"]["conditions"]} >= {"Ready", "Degraded"}
        assert model["observed"]["metadata"]["sha256"]

        code, status = await get_json(http, url + "/v1/status")
        assert code == 200
        assert_valid(spec, "HiveStatus", status)
        assert status["objects"]["Model"] == {"Available": 1}

        code, models = await get_json(http, url + "/v1/models")
        assert code == 200
        assert_valid(spec, "ModelList", models)

        code, health = await get_json(http, url + "/health")
        assert code == 200
        assert_valid(spec, "Health", health)


async def test_error_responses_validate_against_the_spec(
    spec: dict[str, Any], tmp_path: Path, tiny_model: Path
) -> None:
    _jsonschema()
    async with serving(tmp_path, tiny_model) as (_, url), aiohttp.ClientSession() as http:
        for path, expected in [
            ("/v1/models/nope", 404),
            ("/v1/models/a..b", 422),
            ("/v1/events?since=abc", 422),
            ("/v1/events?object=Pod/x", 422),
            ("/v1/no-such-route", 404),
        ]:
            code, body = await get_json(http, url + path)
            assert code == expected, path
            assert_valid(spec, "Error", body)
            documented = spec["paths"].get(path.split("?")[0], {}).get("get", {})
            if documented:
                assert str(code) in documented["responses"], f"{path}: {code} is not documented"


async def test_sse_frames_validate_against_the_spec(
    spec: dict[str, Any], tmp_path: Path, tiny_model: Path
) -> None:
    _jsonschema()
    settings = {"sse_max_lag": 3}  # small, so that reading from 0 yields a gap marker first
    async with (
        serving(tmp_path, tiny_model, **settings) as (manager, url),
        aiohttp.ClientSession() as http,
    ):

        async def available() -> bool:
            code, body = await get_json(http, url + "/v1/models/tiny")
            return code == 200 and body["status"]["phase"] == "Available"

        await apoll(available, what="Model/tiny to be Available")
        last = manager.bus.last_id
        assert last > settings["sse_max_lag"]
        frames: list[tuple[int | None, dict[str, Any]]] = []
        async with http.get(url + "/v1/events?since=0") as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "text/event-stream"

            async def read() -> None:
                frame_id: int | None = None
                async for raw in r.content:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("id: "):
                        frame_id = int(line[4:])
                    elif line.startswith("data: "):
                        frames.append((frame_id, json.loads(line[6:])))
                        frame_id = None
                        if frames[-1][1].get("id") == last:
                            return

            await asyncio.wait_for(read(), 10)
        gaps = [d for i, d in frames if i is None]
        events = [(i, d) for i, d in frames if i is not None]
        assert gaps, "expected a gap marker for a reader that starts far behind"
        for gap in gaps:
            assert_valid(spec, "GapMarker", gap)
            assert_valid(spec, "SseData", gap)
        assert events
        for frame_id, event in events:
            assert event["id"] == frame_id
            assert_valid(spec, "Event", event)
            assert_valid(spec, "SseData", event)
