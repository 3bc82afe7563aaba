"""specs/openapi.yaml against the app: the same routes, and real responses (status, a
model, errors, SSE frames; a real `hive serve` running a worker for the worker routes)
that validate against the schemas the spec documents for them."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer
from pydantic import BaseModel

from hive.api.app import create_app
from hive.model.manifests import ModelSpec, WorkerSpec
from hive.model.observed import ModelMetadata, PartialDownload
from hive.model.runtimes import ArgSpec, RuntimeEntry
from hive.model.status import Condition, ObjectStatus
from hive.model.workers import ExitInfo, WorkerMetrics
from hive.runtime.manager import Manager
from hive.settings import Settings
from tests.conftest import (
    ROOT,
    Hive,
    apoll,
    install_scripted_runtime,
    model_yaml,
    worker_yaml,
)

SPEC_PATH = ROOT / "specs" / "openapi.yaml"
T = TypeVar("T")
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    loaded = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_spec_is_openapi_3_2(spec: dict[str, Any]) -> None:
    assert str(spec["openapi"]).startswith("3.2.")
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

    for ref in refs(spec):
        section, _, name = ref.removeprefix("#/components/").partition("/")
        assert ref.startswith("#/components/") and section in ("schemas", "responses"), ref
        assert name in spec["components"][section], f"{ref} is not defined"


def test_every_operation_but_health_needs_the_token(spec: dict[str, Any]) -> None:
    # Deny by default, as hive/api/guard.py: the spec's global `security`, which only
    # /health lifts, and a documented 401 on every other operation.
    assert spec["security"] == [{"bearer": []}]
    assert spec["components"]["securitySchemes"]["bearer"] == {
        **spec["components"]["securitySchemes"]["bearer"],
        "type": "http",
        "scheme": "bearer",
    }
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            where = f"{method.upper()} {path}"
            if (path, method) == ("/health", "get"):
                assert operation["security"] == [], where
                assert "401" not in operation["responses"], where
                continue
            if (path, method) in {("/", "get"), ("/ui/{path}", "get")}:  # the dashboard's files
                assert operation["security"] == [], where
                assert "401" not in operation["responses"], where
                continue
            if (path, method) == ("/v1/hooks/{name}", "post"):  # signed by the git host
                assert operation["security"] == [], where
                assert "401" in operation["responses"], f"{where}: document its 401"
                continue
            assert "security" not in operation, f"{where} must not lift the token"
            assert operation["responses"]["401"] == {
                "$ref": "#/components/responses/Unauthorized"
            }, f"{where}: document its 401"


@pytest.mark.parametrize(
    ("path", "data"), [("/v1/events", "SseData"), ("/v1/workers/{name}/logs", "LogLine")]
)
def test_event_streams_declare_each_event(spec: dict[str, Any], path: str, data: str) -> None:
    # OpenAPI 3.2: `itemSchema` is one SSE event as a client parses it (`data`, `id`, ...),
    # whose `data` is JSON; a `schema` of `type: string` said nothing a client could check.
    media = spec["paths"][path]["get"]["responses"]["200"]["content"]["text/event-stream"]
    assert "schema" not in media
    item = spec["components"]["schemas"][media["itemSchema"]["$ref"].rsplit("/", 1)[1]]
    assert item["required"] == ["data"]
    assert item["properties"]["data"]["contentMediaType"] == "application/json"
    assert item["properties"]["data"]["contentSchema"] == {"$ref": f"#/components/schemas/{data}"}


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


def documented(spec: dict[str, Any], method: str, path: str, status: int) -> dict[str, Any]:
    """The response the spec documents for `method path` (a path template) and `status`."""
    operation = spec["paths"][path][method]
    assert str(status) in operation["responses"], f"{method.upper()} {path}: {status} undocumented"
    response: dict[str, Any] = operation["responses"][str(status)]
    if "$ref" in response:  # a shared one, under components/responses
        response = spec["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    return response


def assert_answer(
    spec: dict[str, Any],
    method: str,
    path: str,
    *,
    status: int,
    content_type: str,
    body: Any = None,
) -> None:
    """A real answer is documented for its route and status, with its media type, and (for
    JSON) `body` validates against the schema documented there."""
    content = documented(spec, method, path, status)["content"]
    media_type = content_type.split(";")[0].strip()
    assert media_type in content, f"{method.upper()} {path} {status}: {media_type} undocumented"
    if media_type == "application/json":
        jsonschema = _jsonschema()
        schema = {"allOf": [content[media_type]["schema"]], "components": spec["components"]}
        errors = list(jsonschema.Draft202012Validator(schema).iter_errors(body))
        assert not errors, f"{method.upper()} {path} {status}: " + "; ".join(
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
    assert not validator(spec, "WorkerStatus").is_valid({**bad_phase, "phase": "Available"})
    facts = {
        "status": "running",
        "restarts": 0,
        "last_exit": None,
        "last_exit_text": None,
        "next_restart_time": None,
        "restarted_at": None,
    }
    assert validator(spec, "WorkerObserved").is_valid(facts)
    assert not validator(spec, "WorkerObserved").is_valid({**facts, "pid": 42})  # pid alone
    assert not validator(spec, "WorkerObserved").is_valid({**facts, "status": "Running"})


#: Records the API serves as `model_dump(mode="json")`, and their schemas in the spec.
DUMPED_WHOLE: list[tuple[type[BaseModel], str]] = [
    (ModelSpec, "ModelSpec"),
    (ModelMetadata, "ModelMetadata"),
    (PartialDownload, "PartialDownload"),
    (Condition, "Condition"),
    (WorkerSpec, "WorkerSpec"),
    (ExitInfo, "ExitInfo"),
    (WorkerMetrics, "WorkerMetrics"),
    (RuntimeEntry, "RuntimeEntry"),
    (ArgSpec, "ArgSpec"),
]


@pytest.mark.parametrize(("record", "component"), DUMPED_WHOLE, ids=lambda v: str(v))
def test_schemas_name_every_field_of_the_records_served(
    spec: dict[str, Any], record: type[BaseModel], component: str
) -> None:
    # A field added to a record must appear in the spec (additionalProperties: false would
    # reject it only where a test happens to produce it).
    schema = spec["components"]["schemas"][component]
    assert set(schema["properties"]) == set(record.model_fields), component
    assert set(schema["required"]) == set(record.model_fields), component


def test_status_schemas_name_every_field_of_object_status(spec: dict[str, Any]) -> None:
    for component in ("ObjectStatus", "WorkerStatus"):
        properties = spec["components"]["schemas"][component]["properties"]
        assert set(properties) == set(ObjectStatus.model_fields), component


def test_records_a_test_worker_cannot_produce_validate(spec: dict[str, Any]) -> None:
    # The scripted worker has no metrics endpoint and exits by code: these shapes only
    # come from real inference workers and signals.
    now = datetime.now(UTC)
    metrics = WorkerMetrics(
        scraped_at=now,
        decode_calls=60,
        prompt_tokens=12,
        tokens_generated=48,
        avg_tokens_per_sec=512.5,
        busy_slots=0,
        deferred_requests=0,
    )
    assert_valid(spec, "WorkerMetrics", metrics.model_dump(mode="json"))
    assert_valid(spec, "WorkerMetrics", WorkerMetrics(scraped_at=now).model_dump(mode="json"))
    killed = ExitInfo(at=now, signal=9, reason="Unhealthy", message="3 health checks failed")
    assert_valid(spec, "ExitInfo", killed.model_dump(mode="json"))
    choice = ArgSpec(type="str", default="a", choices=("a", "b"), description="one of two")
    assert_valid(spec, "ArgSpec", choice.model_dump(mode="json"))


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


# -- worker routes, on a real `hive serve` running a worker ------------------------------------
TOKEN = "s3cret-s3cret-s3cret"
#: The defaults' behaviours with a faster clock (as tests/e2e/test_workers.py runs them).
FAST = {"HIVE_HEALTH_START_INTERVAL": "0.05", "HIVE_HEALTH_INTERVAL": "0.2"}


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(hive: Hive, method: str, path: str, *, token: str | None = TOKEN) -> Answer:
    """One request to hive (with the token unless told None); an error status is an
    answer, not an exception."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(hive.url + path, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return Answer(r.status, r.headers["Content-Type"], r.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.headers["Content-Type"], exc.read())


def first_sse_data(hive: Hive, path: str) -> tuple[str, dict[str, Any]]:
    """The Content-Type of an SSE answer and the JSON of its first `data:` line."""
    request = urllib.request.Request(hive.url + path, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as r:
        for raw in r:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: "):
                return r.headers["Content-Type"], dict(json.loads(line[6:]))
    raise AssertionError(f"{path}: the stream ended without a data line")


@pytest.fixture
def worker_hive(
    tmp_path: Path, tiny_model: Path, hive_factory: Callable[..., Hive], worker_ports: range
) -> Hive:
    """A real hive with a token, the Model `tiny`, the Worker `w` (the scripted test runtime)
    and the Worker `idle` (`state: stopped`); returns once `w` is Running. Stopping the hive
    (hive_factory) stops `w`'s process (--stop-workers-on-exit)."""
    home = tmp_path / "home"
    install_scripted_runtime(home)
    desired = tmp_path / "desired"
    desired.mkdir()
    (desired / "model.yaml").write_text(model_yaml("tiny", f"file://{tiny_model}"))
    (desired / "workers.yaml").write_text(
        worker_yaml("w", "tiny") + "---\n" + worker_yaml("idle", "tiny", state="stopped")
    )
    hive = hive_factory(
        desired=[desired],
        home=home,
        env={**FAST, "HIVE_TOKEN": TOKEN},
        extra_args=[
            "--worker-ports",
            f"{worker_ports.start}-{worker_ports.stop - 1}",
            "--gpu-probe",
            "none",
        ],
    )
    hive.wait_worker("w", "Running")
    hive.wait_worker("idle", "Dead")
    return hive


def test_worker_responses_validate_against_the_spec(
    spec: dict[str, Any], worker_hive: Hive
) -> None:
    _jsonschema()
    hive = worker_hive

    def check(method: str, path: str, template: str, status: int, **kw: Any) -> Answer:
        answer = call(hive, method, path, **kw)
        assert answer.status == status, (path, answer.body)
        body = answer.json() if answer.content_type.startswith("application/json") else None
        assert_answer(
            spec,
            method.lower(),
            template,
            status=status,
            content_type=answer.content_type,
            body=body,
        )
        return answer

    workers = check("GET", "/v1/workers", "/v1/workers", 200).json()
    by_name = {w["name"]: w for w in workers["items"]}
    assert list(by_name) == ["idle", "w"]
    assert by_name["w"]["observed"]["status"] == "running"
    assert by_name["w"]["observed"]["runtime"] == "scripted"
    assert "pid" not in by_name["idle"]["observed"]  # no process: no process facts
    assert "log_tail" not in by_name["w"]["observed"]
    pid = by_name["w"]["observed"]["pid"]

    w = check("GET", "/v1/workers/w", "/v1/workers/{name}", 200).json()
    assert any("listening on" in line for line in w["observed"]["log_tail"])
    check("GET", "/v1/workers/idle", "/v1/workers/{name}", 200)

    logs = check("GET", "/v1/workers/w/logs?tail=2", "/v1/workers/{name}/logs", 200)
    assert len(logs.body.decode().splitlines()) == 2
    content_type, frame = first_sse_data(hive, "/v1/workers/w/logs?tail=1&follow=1")
    assert_answer(spec, "get", "/v1/workers/{name}/logs", status=200, content_type=content_type)
    assert_valid(spec, "LogLine", frame)
    assert "listening on" in frame["line"]

    runtimes = check("GET", "/v1/runtimes", "/v1/runtimes", 200).json()
    assert {"llama-cpp", "llama-server", "scripted"} <= {r["id"] for r in runtimes["items"]}
    assert runtimes["errors"] == []

    status = check("GET", "/v1/status", "/v1/status", 200).json()
    assert status["workers"]["workers_running"] == 1
    assert status["workers"]["workers_total"] == 1
    assert status["objects"]["Worker"] == {"Running": 1, "Dead": 1}

    metrics = check("GET", "/metrics", "/metrics", 200).body.decode()
    assert 'hive_worker_up{device="CPU-0",model="tiny",worker="w"} 1.0' in metrics

    restart = "/v1/workers/{name}/restart"
    check("POST", "/v1/workers/w/restart", restart, 401, token=None)
    accepted = check("POST", "/v1/workers/w/restart", restart, 202, token=TOKEN).json()
    assert accepted == {"restarting": "w", "pid": pid, "events": "/v1/events?object=Worker/w"}
    again = hive.wait_worker("w", "Running", restarts=1)
    assert again["observed"]["pid"] != pid
    assert again["observed"]["last_exit"]["reason"] == "RestartRequested"
    w = check("GET", "/v1/workers/w", "/v1/workers/{name}", 200).json()
    assert w["observed"]["restarted_at"] is not None
    conflict = check("POST", "/v1/workers/idle/restart", restart, 409, token=TOKEN).json()
    assert "no running process" in conflict["error"]["message"]


def test_worker_error_responses_validate_against_the_spec(
    spec: dict[str, Any], worker_hive: Hive
) -> None:
    _jsonschema()
    for method, path, template, status in [
        ("GET", "/v1/workers/nope", "/v1/workers/{name}", 404),
        ("GET", "/v1/workers/Bad_Name", "/v1/workers/{name}", 422),
        ("GET", "/v1/workers/nope/logs", "/v1/workers/{name}/logs", 404),
        ("GET", "/v1/workers/w/logs?tail=x", "/v1/workers/{name}/logs", 422),
        ("GET", "/v1/workers/w/logs?tail=-1", "/v1/workers/{name}/logs", 422),
        ("POST", "/v1/workers/nope/restart", "/v1/workers/{name}/restart", 404),
        ("POST", "/v1/workers/a..b/restart", "/v1/workers/{name}/restart", 422),
    ]:
        answer = call(worker_hive, method, path, token=TOKEN)
        assert answer.status == status, (method, path, answer.body)
        assert_answer(
            spec,
            method.lower(),
            template,
            status=status,
            content_type=answer.content_type,
            body=answer.json(),
        )


def test_delete_responses_validate_against_the_spec(
    spec: dict[str, Any], worker_hive: Hive, tmp_path: Path
) -> None:
    _jsonschema()
    hive = worker_hive
    (tmp_path / "desired" / "model.yaml").unlink()  # the model's files stay, unmanaged
    hive.wait_event("manifest_removed", obj="Model/tiny")
    template = "/v1/models/{name}"
    for path, status in [
        ("/v1/models/tiny", 409),  # `w` serves it (`idle`, stopped, does not count)
        ("/v1/models/tiny?force=perhaps", 422),
        ("/v1/models/nope?force=true", 404),
        ("/v1/models/tiny?force=true", 200),
    ]:
        answer = call(hive, "DELETE", path, token=TOKEN)
        assert answer.status == status, (path, answer.body)
        assert_answer(
            spec,
            "delete",
            template,
            status=status,
            content_type=answer.content_type,
            body=answer.json(),
        )
        if status == 409:
            assert answer.json()["error"]["workers"] == ["w"]
        if status == 200:
            assert answer.json()["workers"] == ["w"]
    hive.wait_worker("w", "Pending")
