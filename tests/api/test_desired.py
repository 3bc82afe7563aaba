"""`/v1/desired` on a real loopback server: PUT (YAML, JSON, lists) applies whole or not at
all, emptying needs allowEmpty, GET in JSON and YAML, DELETE of a set and of one record,
PATCH's merge, names refused, 413, and a conflict with a watched directory reported."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

import hive.api.desired
from hive.core.parse import parse_text
from hive.model.ids import Kind, ObjectKey
from tests.api.conftest import Serve
from tests.conftest import apoll, model_yaml, worker_yaml

TOKEN = "s3cret-s3cret-s3cret"


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    body: str | bytes | None = None,
    content_type: str | None = None,
    accept: str | None = None,
) -> tuple[int, Any]:
    headers = {}
    if content_type is None and method in ("PUT", "PATCH") and body is not None:
        # What the body is, as a client says it (hive refuses a write without: 415).
        text = body.decode(errors="replace") if isinstance(body, bytes) else body
        json_like = text.lstrip()[:1] in ("{", "[")
        content_type = "application/json" if json_like else "application/yaml"
    if content_type:
        headers["Content-Type"] = content_type
    if accept:
        headers["Accept"] = accept
    async with http.request(method, url, data=body, headers=headers) as r:
        text = await r.text()
        if r.content_type == "application/json":
            return r.status, json.loads(text)
        return r.status, text


def two_models(tiny_model: Path) -> str:
    return model_yaml("a", f"file:{tiny_model}") + "---\n" + model_yaml("b", f"file:{tiny_model}")


async def test_put_yaml_replaces_the_set_get_returns_it_and_it_converges(
    serve: Serve, tiny_model: Path
) -> None:
    async with serve() as (manager, url), aiohttp.ClientSession() as http:
        code, body = await call(
            http, "PUT", url + "/v1/desired/queen", body=two_models(tiny_model),
            content_type="application/yaml",
        )  # fmt: skip
        assert code == 200, body
        assert body == {
            "source": "queen",
            "records": 2,
            "changed": ["Model/a", "Model/b"],
            "conflicts": [],
        }
        saved = json.loads((manager.settings.home / "state/desired/queen.json").read_text())
        assert [r["metadata"]["name"] for r in saved["records"]] == ["a", "b"]

        async def available() -> bool:
            code, m = await call(http, "GET", url + "/v1/models/b")
            return code == 200 and m["status"]["phase"] == "Available"

        await apoll(available, what="Model/b from the queen source to be Available")
        _, model = await call(http, "GET", url + "/v1/models/b")
        assert model["source"] == {"name": "queen", "file": None, "line": None}

        code, got = await call(http, "GET", url + "/v1/desired/queen")
        assert code == 200
        assert [m["metadata"]["name"] for m in got["items"]] == ["a", "b"]
        assert got["items"][0]["spec"]["source"] == f"file:{tiny_model}"
        code, text = await call(http, "GET", url + "/v1/desired/queen", accept="application/yaml")
        assert code == 200
        docs = list(yaml.safe_load_all(text))
        assert docs == got["items"]

        # Replaced whole: a set of one removes the other.
        code, body = await call(
            http, "PUT", url + "/v1/desired/queen", body=model_yaml("a", f"file:{tiny_model}")
        )
        assert code == 200
        assert body["changed"] == ["Model/b"]
        assert manager.store.desired(ObjectKey.of(Kind.MODEL, "b")) is None

        code, listed = await call(http, "GET", url + "/v1/desired")
        assert code == 200
        counts = {s["name"]: s["records"] for s in listed["items"]}
        assert counts == {"api": 0, "queen": 1}


async def test_put_json_list_object_and_kind_list(serve: Serve, tiny_model: Path) -> None:
    one = yaml.safe_load(model_yaml("a", f"file:{tiny_model}"))
    two = yaml.safe_load(model_yaml("b", f"file:{tiny_model}"))
    async with serve() as (_, url), aiohttp.ClientSession() as http:
        for body, names in [
            (json.dumps([one, two], indent="\t"), ["a", "b"]),
            (json.dumps(one), ["a"]),
            (json.dumps({"apiVersion": "v1", "kind": "List", "items": [two]}), ["b"]),
        ]:
            code, answer = await call(
                http, "PUT", url + "/v1/desired/mine", body=body, content_type="application/json"
            )
            assert code == 200, answer
            _, got = await call(http, "GET", url + "/v1/desired/mine")
            assert [m["metadata"]["name"] for m in got["items"]] == names
        # YAML `kind: List`, sniffed (no Content-Type).
        listed = yaml.safe_dump({"kind": "List", "items": [one, two]})
        code, answer = await call(http, "PUT", url + "/v1/desired/mine", body=listed.encode())
        assert code == 200, answer
        assert answer["records"] == 2


async def test_an_invalid_body_is_refused_whole_with_every_problem_located(
    serve: Serve, tiny_model: Path
) -> None:
    async with serve() as (manager, url), aiohttp.ClientSession() as http:
        code, _ = await call(http, "PUT", url + "/v1/desired/queen", body=two_models(tiny_model))
        assert code == 200
        saved = (manager.settings.home / "state/desired/queen.json").read_bytes()
        bad = (
            model_yaml("c", f"file:{tiny_model}")
            + "---\n"
            + model_yaml("d", "ftp://x/m.gguf")
            + "---\n"
            + worker_yaml("w", "c").replace("runtime: scripted", "runtime: scripted\n  port: 80")
        )
        code, body = await call(http, "PUT", url + "/v1/desired/queen", body=bad)
        assert code == 422, body
        problems = body["error"]["problems"]
        assert len(problems) == 2, problems
        assert problems[0].startswith("PUT /v1/desired/queen:14: spec.source: scheme 'ftp'")
        assert problems[1].startswith("PUT /v1/desired/queen:24: spec.port:")
        assert "nothing was applied" in body["error"]["message"]
        # Nothing applied: the set, its file and the store are as they were.
        _, got = await call(http, "GET", url + "/v1/desired/queen")
        assert [m["metadata"]["name"] for m in got["items"]] == ["a", "b"]
        assert (manager.settings.home / "state/desired/queen.json").read_bytes() == saved
        assert manager.store.desired(ObjectKey.of(Kind.MODEL, "c")) is None

        relative = model_yaml("c", "file:models/c.gguf")
        code, body = await call(http, "PATCH", url + "/v1/desired/queen", body=relative)
        assert code == 422
        (problem,) = body["error"]["problems"]
        assert problem.startswith("PATCH /v1/desired/queen:1: spec.source: 'file:models/c.gguf'")
        assert "absolute path" in problem

        broken_json = '{"apiVersion": "hive/v1",\n "kind": Model}'
        code, body = await call(
            http,
            "PUT",
            url + "/v1/desired/queen",
            body=broken_json,
            content_type="application/json",
        )
        assert code == 422
        assert body["error"]["problems"][0].startswith("PUT /v1/desired/queen:2: malformed JSON")
        for scalar in ("null", "3", '"x"'):
            code, body = await call(
                http, "PUT", url + "/v1/desired/queen", body=scalar, content_type="application/json"
            )
            assert code == 422, scalar
        _, got = await call(http, "GET", url + "/v1/desired/queen")
        assert len(got["items"]) == 2


async def test_emptying_needs_allow_empty_and_delete_removes_the_set(
    serve: Serve, tiny_model: Path
) -> None:
    async with serve() as (manager, url), aiohttp.ClientSession() as http:
        for name in ("queen", "mine"):
            code, _ = await call(
                http, "PUT", url + f"/v1/desired/{name}", body=two_models(tiny_model)
            )
            assert code == 200
        code, body = await call(http, "PUT", url + "/v1/desired/queen", body="[]")
        assert code == 409
        assert "?allowEmpty=true" in body["error"]["message"]
        code, body = await call(http, "PUT", url + "/v1/desired/queen?allowEmpty=maybe", body="[]")
        assert code == 422
        code, body = await call(http, "PUT", url + "/v1/desired/queen?allowEmpty=true", body="")
        assert code == 422  # an empty body is more often a mistake: `[]` says it
        assert "send [] with ?allowEmpty=true" in body["error"]["message"]
        code, body = await call(
            http, "PUT", url + "/v1/desired/queen?allowEmpty=true", body="kind: List\nitems: []\n"
        )
        assert code == 200, body
        assert body["records"] == 0
        # `mine` declares a and b too: they stay, owned by `mine` now.
        assert body["changed"] == ["Model/a", "Model/b"]
        assert manager.store.owner(ObjectKey.of(Kind.MODEL, "a")) == "mine"

        path = manager.settings.home / "state/desired/mine.json"
        assert path.exists()
        code, body = await call(http, "DELETE", url + "/v1/desired/mine")
        assert code == 200, body
        assert body == {
            "source": "mine",
            "deleted": True,
            "removed": ["Model/a", "Model/b"],
            "changed": ["Model/a", "Model/b"],
        }
        assert not path.exists()
        assert manager.store.declared_keys() == set()
        code, _ = await call(http, "GET", url + "/v1/desired/mine")
        assert code == 404
        code, _ = await call(http, "DELETE", url + "/v1/desired/mine")
        assert code == 404
        # The built-in ones stay, empty.
        code, body = await call(http, "DELETE", url + "/v1/desired/queen")
        assert code == 200
        assert body["deleted"] is False
        code, got = await call(http, "GET", url + "/v1/desired/queen")
        assert (code, got["items"]) == (200, [])


async def test_patch_merges_by_key_and_one_record_can_be_deleted(
    serve: Serve, tiny_model: Path
) -> None:
    async with serve() as (_, url), aiohttp.ClientSession() as http:
        code, body = await call(http, "PATCH", url + "/v1/desired/api", body=two_models(tiny_model))
        assert code == 200, body
        assert body["applied"] == [
            {"key": "Model/a", "result": "created"},
            {"key": "Model/b", "result": "created"},
        ]
        changed = model_yaml("b", f"file:{tiny_model}", state="absent")
        code, body = await call(
            http,
            "PATCH",
            url + "/v1/desired/api",
            body=model_yaml("a", f"file:{tiny_model}") + "---\n" + changed,
        )
        assert code == 200
        assert body["applied"] == [
            {"key": "Model/a", "result": "unchanged"},
            {"key": "Model/b", "result": "configured"},
        ]
        assert body["changed"] == ["Model/b"]
        assert body["records"] == 2

        code, body = await call(http, "DELETE", url + "/v1/desired/api/Model/b")
        assert code == 200, body
        assert body["deleted"] == "Model/b"
        assert body["records"] == 1
        code, body = await call(http, "DELETE", url + "/v1/desired/api/model/b")
        assert code == 404
        assert "does not declare Model/b" in body["error"]["message"]
        code, body = await call(http, "DELETE", url + "/v1/desired/api/Pod/b")
        assert code == 422
        assert "is not a kind" in body["error"]["message"]
        code, body = await call(http, "DELETE", url + "/v1/desired/nope/Model/a")
        assert code == 404


async def test_names_of_watched_sources_and_bad_names_are_refused(serve: Serve) -> None:
    async with serve() as (_, url), aiohttp.ClientSession() as http:
        for path, says in [
            ("v1/desired/dir:%2Fetc", "names a watched directory or git source"),
            ("v1/desired/git:repo", "names a watched directory or git source"),
            ("v1/desired/a..b", "must not contain '..'"),
            ("v1/desired/bad%0Aname", "is not a valid name"),
            ("v1/desired/UPPER", "is not a valid name"),
        ]:
            for method in ("GET", "PUT", "DELETE"):
                code, body = await call(http, method, url + "/" + path, body="")
                assert code == 422, (method, path, body)
                assert says in body["error"]["message"], body
                assert "\n" not in body["error"]["message"]


async def test_a_body_over_one_mib_is_413(serve: Serve, tiny_model: Path) -> None:
    big = model_yaml("a", f"file:{tiny_model}") + "#" * (1024 * 1024) + "\n"
    async with serve() as (manager, url), aiohttp.ClientSession() as http:
        code, body = await call(http, "PUT", url + "/v1/desired/queen", body=big)
        assert code == 413, body
        assert body["error"]["code"] == "ContentTooLarge"
        assert manager.store.declared_keys() == set()


async def test_a_key_a_watched_directory_owns_is_accepted_and_reported(
    serve: Serve, tiny_model: Path, tmp_path: Path
) -> None:
    desired = tmp_path / "desired"
    desired.mkdir()
    (desired / "m.yaml").write_text(model_yaml("a", f"file:{tiny_model}"))
    async with serve() as (manager, url), aiohttp.ClientSession() as http:
        key = ObjectKey.of(Kind.MODEL, "a")
        await apoll(lambda: manager.store.owner(key), what="the directory's record")
        code, body = await call(http, "PUT", url + "/v1/desired/queen", body=two_models(tiny_model))
        assert code == 200, body
        assert body["changed"] == ["Model/b"]
        (conflict,) = body["conflicts"]
        assert conflict["key"] == "Model/a"
        assert conflict["owner"] == f"dir:{desired}"
        assert conflict["other"] == "queen"
        assert f"owned by {desired}/m.yaml:1" in conflict["message"]
        assert manager.store.owner(key) == f"dir:{desired}"

        # That record cannot be deleted through the queen source: it says where it lives.
        code, body = await call(http, "DELETE", url + "/v1/desired/api/Model/a")
        assert code == 404
        assert f"declared by {desired}/m.yaml:1" in body["error"]["message"]


async def test_changes_and_reads_need_the_token(serve: Serve) -> None:
    async with serve(token=TOKEN) as (_, url), aiohttp.ClientSession() as http:
        for method in ("PUT", "PATCH", "DELETE", "GET"):
            code, _ = await call(http, method, url + "/v1/desired/queen", body="[]")
            assert code == 401, method
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with http.get(url + "/v1/desired/queen", headers=auth) as r:
            assert r.status == 200


async def test_answers_validate_against_the_spec(serve: Serve, tiny_model: Path) -> None:
    from tests.api.test_openapi import SPEC_PATH, assert_answer

    spec = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    one = model_yaml("a", f"file:{tiny_model}")
    record = "/v1/desired/{source}/{kind}/{name}"
    cases: list[tuple[str, str, str, str | None, str | None, int]] = [
        ("GET", "/v1/desired", "/v1/desired", None, None, 200),
        ("PUT", "/v1/desired/queen", "/v1/desired/{source}", two_models(tiny_model), None, 200),
        ("PATCH", "/v1/desired/queen", "/v1/desired/{source}", one, None, 200),
        ("GET", "/v1/desired/queen", "/v1/desired/{source}", None, None, 200),
        ("GET", "/v1/desired/queen", "/v1/desired/{source}", None, "application/yaml", 200),
        ("PUT", "/v1/desired/queen", "/v1/desired/{source}", "[]", None, 409),
        ("PUT", "/v1/desired/queen", "/v1/desired/{source}", "x" * (1 << 21), None, 413),
        ("PUT", "/v1/desired/queen", "/v1/desired/{source}", "kind: Pod", None, 422),
        ("GET", "/v1/desired/nope", "/v1/desired/{source}", None, None, 404),
        ("GET", "/v1/desired/dir:x", "/v1/desired/{source}", None, None, 422),
        ("DELETE", "/v1/desired/queen/Model/a", record, None, None, 200),
        ("DELETE", "/v1/desired/queen/Model/a", record, None, None, 404),
        ("DELETE", "/v1/desired/queen/Pod/a", record, None, None, 422),
        ("DELETE", "/v1/desired/queen", "/v1/desired/{source}", None, None, 200),
        ("DELETE", "/v1/desired/nope", "/v1/desired/{source}", None, None, 404),
        ("PATCH", "/v1/desired/queen", "/v1/desired/{source}", one, "text/plain", 415),
    ]  # fmt: skip
    async with serve() as (_, url), aiohttp.ClientSession() as http:
        for method, path, template, body, accept, status in cases:
            headers = {"Accept": accept} if accept else {}
            if method in ("PUT", "PATCH"):  # (the `accept` column: the body's type, here)
                headers = {"Content-Type": accept or "application/yaml"}
            async with http.request(method, url + path, data=body, headers=headers) as r:
                raw = await r.read()
                assert r.status == status, (method, path, raw[:300])
                json_body = json.loads(raw) if r.content_type == "application/json" else None
                assert_answer(
                    spec,
                    method.lower(),
                    template,
                    status=status,
                    content_type=r.headers["Content-Type"],
                    body=json_body,
                )
    async with (
        serve(token=TOKEN) as (_, url),
        aiohttp.ClientSession() as http,
        http.put(url + "/v1/desired/queen", data="[]") as r,
    ):
        assert r.status == 401
        assert_answer(
            spec,
            "put",
            "/v1/desired/{source}",
            status=401,
            content_type=r.headers["Content-Type"],
            body=await r.json(),
        )


async def test_a_refused_put_or_patch_to_a_new_source_leaves_no_source(
    serve: Serve, tiny_model: Path, tmp_path: Path
) -> None:
    # Nothing can be saved: a file stands where the sets' directory goes.
    (tmp_path / "home" / "state").mkdir(parents=True)
    (tmp_path / "home" / "state" / "desired").write_text("not a directory")
    async with serve() as (_manager, url), aiohttp.ClientSession() as http:
        for method in ("PUT", "PATCH"):
            code, body = await call(
                http, method, url + "/v1/desired/ghost", body=two_models(tiny_model),
                content_type="application/yaml",
            )  # fmt: skip
            assert code == 503, body
            code, body = await call(http, "GET", url + "/v1/desired")
            assert "ghost" not in [item["name"] for item in body["items"]]
            code, _ = await call(http, "GET", url + "/v1/desired/ghost")
            assert code == 404


async def test_yaml_is_parsed_and_written_off_the_event_loop(
    serve: Serve, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: dict[str, str] = {}

    def spy(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call_real(*args: Any, **kwargs: Any) -> Any:
            threads[name] = threading.current_thread().name
            return real(*args, **kwargs)

        return call_real

    monkeypatch.setattr(hive.api.desired, "parse_text", spy("parse", parse_text))
    monkeypatch.setattr(yaml, "safe_dump_all", spy("dump", yaml.safe_dump_all))
    async with serve() as (_manager, url), aiohttp.ClientSession() as http:
        code, _ = await call(
            http, "PUT", url + "/v1/desired/queen", body=two_models(tiny_model),
            content_type="application/yaml",
        )  # fmt: skip
        assert code == 200
        code, _ = await call(http, "GET", url + "/v1/desired/queen", accept="application/yaml")
        assert code == 200
    loop_thread = threading.main_thread().name
    assert set(threads) == {"parse", "dump"}
    assert loop_thread not in threads.values(), threads
