"""The routes the dashboard reads beside the rest of the API, on a real loopback hive: the
resource history of the machine and of a running scripted worker (with the performance
hive scrapes from it), the recent events of one object, and a hub repository's GGUF files
listed from the test hub."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from testkit.hub import Hub, use_hub_in_process
from tests.api.conftest import Serve
from tests.api.test_openapi import SPEC_PATH
from tests.conftest import apoll, install_scripted_runtime, model_yaml, worker_yaml

TOKEN = "dashboard-token-0123456789"


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    import yaml

    loaded = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


async def get(url: str, *, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
        return r.status, await r.json()


def one_scripted_worker(
    tmp_path: Path, tiny_model: Path, worker_ports: range, *, interval: float
) -> dict[str, Any]:
    """The tiny model and a scripted worker `w` serving llama.cpp-style /metrics, declared
    in `tmp_path/desired`; the settings of a hive that samples every `interval` s."""
    install_scripted_runtime(tmp_path / "home", metrics=True)
    desired = tmp_path / "desired"
    desired.mkdir()
    (desired / "model.yaml").write_text(model_yaml("tiny", f"file:{tiny_model}"))
    (desired / "worker.yaml").write_text(worker_yaml("w", "tiny"))
    return {
        "worker_ports": f"{worker_ports.start}-{worker_ports.stop - 1}",
        "stop_workers_on_exit": True,
        "system_sample_interval": interval,
        "metrics_interval": interval,
    }


async def test_worker_and_host_history(
    serve: Serve, tmp_path: Path, tiny_model: Path, worker_ports: range, spec: dict[str, Any]
) -> None:
    from tests.api.test_openapi import assert_answer

    settings = one_scripted_worker(tmp_path, tiny_model, worker_ports, interval=0.05)
    desired = tmp_path / "desired"
    async with serve(**settings, token=TOKEN) as (manager, url):

        async def sampled() -> dict[str, Any] | None:
            code, body = await get(url + "/v1/workers/w/history", token=TOKEN)
            assert code == 200, body
            samples = body["samples"]
            last = samples[-1] if samples else {}
            return body if last.get("rss_bytes") and last.get("tokens_per_second") else None

        body = await apoll(sampled, within=30, what="the worker's history to fill")
        assert body["interval_s"] == 10.0 and body["window_s"] == 900.0
        point = body["samples"][-1]
        assert point["rss_bytes"] > 1024 * 1024  # a Python process holds a few MiB
        assert point["cpu_percent"] >= 0
        assert point["tokens_per_second"] == 42.5  # the scripted worker's llama.cpp numbers
        assert point["busy_slots"] == 1.0
        assert point["vram_bytes"] is None  # no GPU on this machine's probe
        assert_answer(
            spec,
            "get",
            "/v1/workers/{name}/history",
            status=200,
            content_type="application/json",
            body=body,
        )

        code, host = await get(url + "/v1/history", token=TOKEN)
        assert code == 200 and host["samples"], host
        assert (
            0
            < host["samples"][-1]["memory_used_bytes"]
            <= host["samples"][-1]["memory_total_bytes"]
        )
        assert_answer(
            spec, "get", "/v1/history", status=200, content_type="application/json", body=host
        )

        # The token guards both; an unknown worker is a 404 naming it.
        assert (await get(url + "/v1/history"))[0] == 401
        assert (await get(url + "/v1/workers/w/history", token="x" * 20))[0] == 401
        code, missing = await get(url + "/v1/workers/nope/history", token=TOKEN)
        assert code == 404 and "nope" in missing["error"]["message"]
        assert_answer(
            spec,
            "get",
            "/v1/workers/{name}/history",
            status=404,
            content_type="application/json",
            body=missing,
        )

        # The worker removed from the desired state: once it is gone its ring is too.
        (desired / ".hive-allow-empty").touch()
        (desired / "worker.yaml").unlink()

        async def dropped() -> bool:
            code, _ = await get(url + "/v1/workers/w/history", token=TOKEN)
            return code == 404 and "w" not in manager.history.worker_names()

        await apoll(dropped, within=30, what="the removed worker's history to go")


async def test_recent_events_of_one_object(
    serve: Serve, tmp_path: Path, spec: dict[str, Any]
) -> None:
    from tests.api.test_openapi import assert_answer

    async with serve() as (manager, url):
        for i in range(30):
            manager.bus.narrate("Model/a", "test_action", f"a {i}")
            manager.bus.narrate("Model/b", "test_action", f"b {i}")
        code, body = await get(url + "/v1/events/recent?object=Model/a&limit=5")
        assert code == 200
        assert [e["message"] for e in body["items"]] == [f"a {i}" for i in range(25, 30)]
        assert body["last_id"] == manager.bus.last_id
        assert_answer(
            spec, "get", "/v1/events/recent", status=200, content_type="application/json", body=body
        )
        code, body = await get(url + "/v1/events/recent")  # all objects, 20 by default
        assert code == 200 and len(body["items"]) == 20
        assert body["items"][-1]["message"] == "b 29"
        code, body = await get(url + "/v1/events/recent?object=Nothing/a")
        assert code == 422 and body["error"]["message"].startswith("object:")
        code, body = await get(url + "/v1/events/recent?limit=-1")
        assert code == 422 and "limit" in body["error"]["message"]
        # Past a 64-bit integer: refused, as the spec's bound says (schemathesis found it).
        code, body = await get(url + f"/v1/events/recent?limit={2**63}")
        assert code == 422 and "limit" in body["error"]["message"]
        code, body = await get(url + f"/v1/events/recent?limit={2**63 - 1}")
        assert code == 200 and body["items"][-1]["message"] == "b 29"  # every event held


async def test_hub_files_lists_gguf_files_with_quantizations(
    serve: Serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: dict[str, Any]
) -> None:
    from tests.api.test_openapi import assert_answer

    async with Hub() as hub, serve() as (_, url):
        use_hub_in_process(monkeypatch, hub, tmp_path / "hf")
        repo = "org/Model-GGUF"
        hub.add_file(repo, "README.md", b"# model\n")
        hub.add_file(repo, "model-Q4_K_M.gguf", b"G" * 100)
        hub.add_file(repo, "model.IQ2_XS.gguf", b"G" * 50)
        hub.add_file(repo, "f16/model-F16-00001-of-00002.gguf", b"G" * 70)
        hub.add_file(repo, "f16/model-F16-00002-of-00002.gguf", b"G" * 30)
        hub.add_file(repo, "mmproj-model.gguf", b"G" * 10)

        code, body = await get(url + f"/v1/hub/files?repo={repo}")
        assert code == 200, body
        assert body["repo"] == repo and body["revision"] == "main" and not body["truncated"]
        files = {f["path"]: f for f in body["files"]}
        assert list(files) == sorted(files)
        assert set(files) == {
            "f16/model-F16-00001-of-00002.gguf",
            "mmproj-model.gguf",
            "model-Q4_K_M.gguf",
            "model.IQ2_XS.gguf",
        }
        assert files["f16/model-F16-00001-of-00002.gguf"] == {
            "path": "f16/model-F16-00001-of-00002.gguf",
            "size": 100,
            "quantization": "F16",
            "parts": 2,
            "parts_present": 2,
            "source": f"hf://{repo}/f16/model-F16-00001-of-00002.gguf",
        }
        assert files["model-Q4_K_M.gguf"]["quantization"] == "Q4_K_M"
        assert files["model-Q4_K_M.gguf"]["size"] == 100
        assert files["model.IQ2_XS.gguf"]["quantization"] == "IQ2_XS"
        assert files["mmproj-model.gguf"]["quantization"] is None
        assert body["quantizations"] == ["F16", "IQ2_XS", "Q4_K_M"]
        assert_answer(
            spec, "get", "/v1/hub/files", status=200, content_type="application/json", body=body
        )
        # hf:// forms are taken too.
        code, same = await get(url + f"/v1/hub/files?repo=hf://{repo}:Q4_K_M")
        assert code == 200 and same["files"] == body["files"]

        code, bad = await get(url + "/v1/hub/files?repo=not a repo")
        assert code == 400 and bad["error"]["message"].startswith("repo:")
        assert_answer(
            spec, "get", "/v1/hub/files", status=400, content_type="application/json", body=bad
        )
        assert (await get(url + "/v1/hub/files"))[0] == 400
        code, body = await get(url + "/v1/hub/files?repo=org/missing")
        assert code == 404, body
        assert_answer(
            spec, "get", "/v1/hub/files", status=404, content_type="application/json", body=body
        )

        # A gated repository: 403 with what to do; the token hive holds is never echoed.
        secret = "hf_" + "S" * 34
        monkeypatch.setenv("HF_TOKEN", secret)
        hub.require_token("another-token-entirely-0123456789")
        code, body = await get(url + f"/v1/hub/files?repo={repo}")
        assert code == 403 and body["error"]["code"] == "HubAccessDenied", body
        assert "HF_TOKEN" in body["error"]["message"]
        assert_answer(
            spec, "get", "/v1/hub/files", status=403, content_type="application/json", body=body
        )
        assert secret not in str(body)
        hub.require_token(None)

        # The hub failing (an answer huggingface_hub does not retry): 502 naming the hub.
        hub.fail_next(status=501, times=1, routes=("api",))
        code, body = await get(url + f"/v1/hub/files?repo={repo}")
        assert code == 502, body
        assert body["error"]["code"] == "HubUnreachable"
        assert "hub" in body["error"]["message"] and secret not in str(body)
        assert_answer(
            spec, "get", "/v1/hub/files", status=502, content_type="application/json", body=body
        )

        # No hub at all (nothing listens there): 502 too, after one retry, not 23 s of them.
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
        code, body = await get(url + f"/v1/hub/files?repo={repo}")
        assert code == 502 and "cannot reach the hub" in body["error"]["message"], body
        assert secret not in str(body)
