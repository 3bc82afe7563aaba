"""The job API end to end on a real loopback server, with rbee's request bodies byte for
byte: every operation to its stream's end marker, 400 with the field path, 409 naming
the owner, cancel, late and twice-opened streams, retention, metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hive.client import HiveClient
from hive.errors import ApiError
from hive.model.ids import ObjectKey
from hive.model.views import JobEnd, JobLine
from hive.runtime.manager import Manager
from testkit.hub import Hub, use_hub_in_process
from tests.api.conftest import Serve
from tests.conftest import apoll, install_scripted_runtime, model_yaml, worker_yaml

Lines = list[JobLine]


async def run_job(
    client: HiveClient, body: bytes | dict[str, Any], *, within: float = 30.0
) -> tuple[Lines, JobEnd]:
    """POST the job, follow its stream to its end marker."""
    created = await client.submit_job(body)
    assert created.sse_url == f"/v1/jobs/{created.job_id}/stream"
    return await read_stream(client, created.job_id, within=within)


async def read_stream(
    client: HiveClient, job_id: str, *, within: float = 30.0
) -> tuple[Lines, JobEnd]:
    lines: Lines = []

    async def read() -> JobEnd:
        async for item in client.job_stream(job_id):
            if isinstance(item, JobEnd):
                return item
            lines.append(item)
        raise AssertionError(f"the stream ended without a marker after {lines}")

    end = await asyncio.wait_for(read(), within)
    return lines, end


def actions(lines: Lines) -> list[str]:
    return [line.action for line in lines]


def of(lines: Lines, action: str) -> list[JobLine]:
    return [line for line in lines if line.action == action]


def write_files(desired: Path, files: dict[str, str]) -> None:
    desired.mkdir(exist_ok=True)
    for name, text in files.items():
        (desired / name).write_text(text)


def gb(path: Path) -> str:
    return f"{path.stat().st_size / 1e9:.2f} GB"


K = ObjectKey.parse
JSON = {"Content-Type": "application/json"}


@asynccontextmanager
async def hive_with(
    serve: Serve, desired: Path, files: dict[str, str] | None = None, **settings: Any
) -> AsyncIterator[tuple[Manager, str, HiveClient]]:
    write_files(desired, files or {})
    async with serve(**settings) as (manager, url), HiveClient(url) as client:
        yield manager, url, client


@pytest.fixture
def desired(tmp_path: Path) -> Path:
    return tmp_path / "desired"


def available(manager: Manager, name: str) -> Any:
    def check() -> bool:
        status = manager.statuses.get(K(f"Model/{name}"))
        return status is not None and status.phase == "Available"

    return check


# -- parsing and errors ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b'{"operation":"model_explode","hive_id":"localhost"}', "operation: 'model_explode'"),
        (b'{"hive_id":"localhost"}', "operation: missing"),
        (b"not json", "not JSON"),
        (b"[1, 2]", "operation: missing"),
        (
            b'{"operation":"worker_spawn","hive_id":"localhost","model":"m","worker":"gpu","device":0}',
            "worker: Input should be 'cpu', 'cuda' or 'metal'",
        ),
        (
            b'{"operation":"worker_spawn","hive_id":"localhost","model":"m","worker":"cpu","device":"0"}',
            "device: Input should be a valid integer",
        ),
        (b'{"operation":"worker_process_get","hive_id":"localhost","pid":-3}', "pid:"),
        (b'{"operation":"model_get","hive_id":"localhost","id":"a","ids":1}', "ids: not a field"),
        (b'{"operation":"model_get","hive_id":"localhost"}', "exactly one of"),
        (
            b'{"operation":"model_download","hive_id":"localhost","model":"nonsense"}',
            "model: 'nonsense' is neither a source",
        ),
    ],
)
async def test_bad_requests_get_400_with_the_field_path(
    serve: Serve, desired: Path, body: bytes, needle: str
) -> None:
    async with hive_with(serve, desired) as (manager, url, _), aiohttp.ClientSession() as http:
        async with http.post(url + "/v1/jobs", data=body, headers=JSON) as r:
            assert r.status == 400, await r.text()
            error = (await r.json())["error"]
        assert error["code"] == "BadRequest"
        assert any(needle in p for p in error["problems"]), error
        assert len(manager.http_sources.api.records()) == 0


async def test_any_hive_id_or_alias_is_this_hive_and_is_narrated_first(
    serve: Serve, desired: Path
) -> None:
    async with hive_with(serve, desired) as (manager, _url, client):
        lines, end = await run_job(client, b'{"operation":"model_list","hive_id":"queens-name"}')
        assert end.outcome == "done"
        assert lines[0].action == "hive_alias" and "'queens-name'" in lines[0].message
        assert lines[0].data == {"hive_id": "queens-name"}
        assert "model_list_start" in actions(lines)
        lines, end = await run_job(client, b'{"operation":"hive_check","alias":"elsewhere"}')
        assert end.outcome == "done" and "'elsewhere'" in lines[0].message
        own = manager.settings.hive_id
        for name in ("localhost", own):
            body = json.dumps({"operation": "model_list", "hive_id": name}).encode()
            lines, end = await run_job(client, body)
            assert end.outcome == "done" and "hive_alias" not in actions(lines)


async def test_an_oversized_operation_name_is_echoed_bounded(serve: Serve, desired: Path) -> None:
    body = json.dumps({"operation": "x" * 100_000}).encode()
    async with (
        hive_with(serve, desired) as (_, url, _c),
        aiohttp.ClientSession() as http,
        http.post(url + "/v1/jobs", data=body, headers=JSON) as r,
    ):
        assert r.status == 400
        assert len(await r.text()) < 2000


async def test_unknown_jobs_are_404(serve: Serve, desired: Path) -> None:
    async with hive_with(serve, desired) as (_, _url, client):
        for call in (client.job_stream("job-nope").__anext__(), client.cancel_job("job-nope")):
            with pytest.raises(ApiError) as info:
                await call
            assert info.value.status == 404


# -- reads -------------------------------------------------------------------------------------
async def test_read_jobs_stream_their_result_then_done(
    serve: Serve, desired: Path, tiny_model: Path
) -> None:
    files = {"m.yaml": model_yaml("tiny", f"file:{tiny_model}")}
    async with hive_with(serve, desired, files, gpu_probe="none") as (manager, _, client):
        await apoll(available(manager, "tiny"), what="tiny Available")
        lines, end = await run_job(client, b'{"operation":"model_list","hive_id":"localhost"}')
        assert end.outcome == "done"
        entry = of(lines, "model_list_entry")[0]
        assert entry.message == f"tiny | {gb(tiny_model)} | available"
        assert entry.actor == "hive" and entry.human == entry.message
        assert entry.formatted == (
            f"\x1b[1m{'hive':<40}\x1b[0m \x1b[2m{'model_list_entry':<20}\x1b[0m\n{entry.message}\n"
        )
        assert entry.job_id and entry.emitted_at_ms and entry.data["name"] == "tiny"

        lines, end = await run_job(
            client, b'{"operation":"model_get","hive_id":"localhost","id":"tiny"}'
        )
        assert end.outcome == "done"
        assert of(lines, "model_get_found")[0].message.startswith("✅ Model: tiny | Name: tiny")

        lines, end = await run_job(
            client, b'{"operation":"model_get","hive_id":"localhost","id":"nope"}'
        )
        assert end.outcome == "error" and "neither declared nor on disk" in end.reason

        lines, end = await run_job(client, b'{"operation":"device_list","hive_id":"localhost"}')
        assert end.outcome == "done"
        cpu = of(lines, "device_list_entry")[0]
        assert (cpu.data["id"], cpu.data["device_id"]) == ("CPU-0", 0)
        assert cpu.data["device_type"] == "cpu"
        assert cpu.message.startswith("CPU-0 | ")
        lines, end = await run_job(
            client, b'{"operation":"device_get","hive_id":"localhost","device_id":"CPU-0"}'
        )
        assert end.outcome == "done" and of(lines, "device_get_found")
        lines, end = await run_job(
            client, b'{"operation":"device_get","hive_id":"localhost","device_id":3}'
        )
        assert end.outcome == "error" and "no device 3" in end.reason
        # No GPU here: index 0 is the CPU, as device_list numbers it.
        lines, end = await run_job(
            client, b'{"operation":"device_get","hive_id":"localhost","device_id":0}'
        )
        assert end.outcome == "done", end
        assert of(lines, "device_get_found")[0].data["id"] == "CPU-0"

        lines, end = await run_job(client, b'{"operation":"hive_status","hive_id":"localhost"}')
        assert end.outcome == "done"
        assert of(lines, "hive_status")[0].data["hive_id"] == manager.settings.hive_id

        lines, end = await run_job(client, b'{"operation":"hive_check","alias":"localhost"}')
        assert end.outcome == "done" and actions(lines)[-1] == "hive_check_complete"

        lines, end = await run_job(
            client, b'{"operation":"worker_process_list","hive_id":"localhost"}'
        )
        assert end.outcome == "done" and of(lines, "worker_proc_list_empty")
        lines, end = await run_job(
            client, b'{"operation":"worker_process_get","hive_id":"localhost","pid":1}'
        )
        assert end.outcome == "error" and "no worker is PID 1" in end.reason


async def test_a_stream_opened_late_or_twice_replays_the_job(serve: Serve, desired: Path) -> None:
    async with hive_with(serve, desired) as (_, _u, client):
        created = await client.submit_job({"operation": "hive_check", "alias": "localhost"})
        first = await read_stream(client, created.job_id)  # the job has long ended
        second = await read_stream(client, created.job_id)
        assert first[1].outcome == second[1].outcome == "done"
        assert [x.model_dump() for x in first[0]] == [x.model_dump() for x in second[0]]
        assert actions(first[0])[0] == "test_start"


async def test_finished_jobs_are_forgotten_after_the_retention_and_beyond_the_bound(
    serve: Serve, desired: Path
) -> None:
    async with hive_with(serve, desired, jobs_kept=2) as (_m, _u, client):
        ids = []
        for _ in range(3):
            created = await client.submit_job({"operation": "hive_check"})
            await read_stream(client, created.job_id)
            ids.append(created.job_id)
        with pytest.raises(ApiError) as info:
            await client.job_stream(ids[0]).__anext__()
        assert info.value.status == 404
        await read_stream(client, ids[2])
    async with hive_with(serve, desired, job_retention=0) as (_m, _u, client):
        created = await client.submit_job({"operation": "hive_check"})

        async def gone() -> bool:
            try:
                await client.job_stream(created.job_id).__anext__()
            except ApiError as exc:
                return exc.status == 404
            return False

        await apoll(gone, what="the ended job to be forgotten")


# -- model_download -----------------------------------------------------------------------------
@pytest.fixture
async def hub(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model: Path
) -> AsyncIterator[Hub]:
    async with Hub() as h:
        h.add_file("meta-llama/Llama-2-7b", "llama-2-7b.Q4_K_M.gguf", tiny_model)
        use_hub_in_process(monkeypatch, h, tmp_path / "hf")
        yield h


async def test_model_download_from_the_hub_to_done_with_progress(
    serve: Serve, desired: Path, hub: Hub
) -> None:
    async with hive_with(serve, desired) as (manager, _u, client):
        lines, end = await run_job(
            client,
            b'{"operation":"model_download","hive_id":"localhost","model":"meta-llama/Llama-2-7b"}',
        )
        assert end.outcome == "done", (end, actions(lines))
        said = actions(lines)
        assert said[0] == "model_download_start"
        assert said.index("model_download_start") < said.index("model_download_complete")
        progress = of(lines, "model_download_progress")
        assert progress and progress[-1].message.startswith("Downloaded ")
        assert progress[-1].message.endswith("(100%)")
        assert progress[-1].object == "Model/llama-2-7b"
        record = manager.http_sources.api.get(K("Model/llama-2-7b"))
        assert record is not None
        assert record.manifest.spec.source == "hf://meta-llama/Llama-2-7b:Q4_K_M"  # type: ignore[union-attr]
        assert available(manager, "llama-2-7b")()


async def test_model_download_of_a_missing_repo_ends_in_error_and_undoes_its_record(
    serve: Serve, desired: Path, hub: Hub
) -> None:
    async with hive_with(serve, desired) as (manager, _u, client):
        lines, end = await run_job(
            client, b'{"operation":"model_download","hive_id":"localhost","model":"nobody/nothing"}'
        )
        assert end.outcome == "error"
        assert "not found" in end.reason
        assert "desired_state_restored" in actions(lines)
        assert manager.http_sources.api.records() == ()


async def test_cancel_mid_download_stops_it_and_removes_the_record(
    serve: Serve, desired: Path, hub: Hub, tmp_path: Path
) -> None:
    big = tmp_path / "big.gguf"
    with big.open("wb") as fh:
        fh.write(b"GGUF")
        fh.truncate(16 * 1024 * 1024)
    hub.add_file("big/model", "big.Q8_0.gguf", big)
    # 16 s for the whole file at hive's rate limit: the cancel comes first.
    async with hive_with(serve, desired, download_rate_limit="1MB/s") as (manager, _u, client):
        created = await client.submit_job(
            b'{"operation":"model_download","hive_id":"localhost","model":"big/model:Q8_0"}'
        )
        lines: Lines = []

        async def until_progress() -> None:
            async for item in client.job_stream(created.job_id):
                if isinstance(item, JobLine):
                    lines.append(item)
                    if item.action == "model_download_progress":
                        return

        await asyncio.wait_for(until_progress(), 30)
        cancelled = await client.cancel_job(created.job_id)
        assert cancelled.status == "cancelled"
        rest, end = await read_stream(client, created.job_id)
        assert end.outcome == "cancelled"
        assert "desired_state_restored" in actions(rest)
        assert manager.http_sources.api.records() == ()
        await apoll(
            lambda: any(
                e.action == "model_download_cancelled" for e in manager.bus.read(0, limit=10_000)[0]
            ),
            within=15,
            what="the download to stop",
        )
        # A second cancel of a cancelled job says so again; a finished job's is a 404 that
        # says it had ended (as rbee's hive answers).
        assert (await client.cancel_job(created.job_id)).status == "cancelled"
        done = await client.submit_job({"operation": "hive_check"})
        await read_stream(client, done.job_id)
        with pytest.raises(ApiError) as info:
            await client.cancel_job(done.job_id)
        assert info.value.status == 404
        assert "had already ended (done)" in str(info.value)


# -- ownership ----------------------------------------------------------------------------------
async def test_jobs_on_file_owned_objects_get_409_naming_the_owner(
    serve: Serve, desired: Path, tiny_model: Path, tmp_path: Path
) -> None:
    install_scripted_runtime(tmp_path / "home")
    files = {
        "m.yaml": model_yaml("tiny", f"file:{tiny_model}"),
        "w.yaml": worker_yaml("w1", "tiny", state="stopped"),
    }
    async with (
        hive_with(serve, desired, files) as (manager, url, _c),
        aiohttp.ClientSession() as http,
    ):
        await apoll(lambda: manager.store.desired(K("Worker/w1")), what="w1 declared")
        for body in (
            b'{"operation":"model_delete","hive_id":"localhost","id":"tiny"}',
            b'{"operation":"model_download","hive_id":"localhost","model":"file:///x/tiny.gguf","name":"tiny"}',
            b'{"operation":"worker_delete","hive_id":"localhost","name":"w1"}',
            b'{"operation":"worker_spawn","hive_id":"localhost","model":"tiny","worker":"cpu","device":0,"name":"w1"}',
        ):
            async with http.post(url + "/v1/jobs", data=body, headers=JSON) as r:
                assert r.status == 409, (body, await r.text())
                message = (await r.json())["error"]["message"]
            assert str(desired) in message and f"source dir:{desired}" in message, message
        assert manager.http_sources.api.records() == ()


# -- workers ------------------------------------------------------------------------------------
@pytest.fixture
def gpus(tmp_path: Path) -> Path:
    path = tmp_path / "gpus.json"
    one = {"index": 0, "name": "Fake A", "vram_total_mb": 24000, "vram_free_mb": 20000}
    path.write_text(json.dumps({"gpus": [one]}))
    return path


def install_runtimes(home: Path) -> None:
    """The scripted runtime as a cpu entry and as a cuda one."""
    install_scripted_runtime(home)
    cuda = install_scripted_runtime(home, runtime_id="scripted-cuda")
    entry = json.loads(cuda.read_text())
    cuda.write_text(json.dumps({**entry, "worker_type": "cuda"}))


async def test_worker_jobs_end_to_end(
    serve: Serve,
    desired: Path,
    tiny_model: Path,
    tmp_path: Path,
    gpus: Path,
    worker_ports: range,
) -> None:
    install_runtimes(tmp_path / "home")
    files = {"m.yaml": model_yaml("tiny", f"file:{tiny_model}")}
    settings = {
        "gpu_probe": f"fake:{gpus}",
        "worker_ports": f"{worker_ports.start}-{worker_ports.stop - 1}",
    }
    async with hive_with(serve, desired, files, **settings) as (manager, _u, client):
        await apoll(available(manager, "tiny"), within=20, what="tiny Available")
        lines, end = await run_job(
            client,
            b'{"operation":"worker_spawn","hive_id":"localhost","model":"tiny","worker":"cpu","device":0}',
        )
        assert end.outcome == "done", (end, actions(lines))
        said = actions(lines)
        for action in ("worker_spawn_start", "worker_spawn_health_check", "worker_spawn_complete"):
            assert action in said, said
        pid = manager.workers.instances["tiny-cpu-0"].state.pid
        port = manager.workers.instances["tiny-cpu-0"].state.port
        complete = of(lines, "worker_spawn_complete")[-1]
        assert complete.message == f"✅ Worker spawned (PID: {pid}, port: {port})"
        assert manager.http_sources.api.get(K("Worker/tiny-cpu-0")) is not None

        lines, end = await run_job(
            client, b'{"operation":"worker_process_list","hive_id":"localhost"}'
        )
        assert end.outcome == "done"
        assert (
            of(lines, "worker_proc_list_entry")[0].message == f"PID {pid} | tiny | CPU 0 | running"
        )
        lines, end = await run_job(
            client,
            f'{{"operation":"worker_process_get","hive_id":"localhost","pid":{pid}}}'.encode(),
        )
        assert end.outcome == "done" and of(lines, "worker_proc_get_found")[0].data["name"] == (
            "tiny-cpu-0"
        )

        # rbee's current model_load: a worker on the GPU, from the cuda runtime.
        lines, end = await run_job(
            client,
            b'{"operation":"model_load","hive_id":"localhost","id":"tiny","device":"cuda:0"}',
        )
        assert end.outcome == "done", (end, actions(lines))
        gpu_worker = manager.http_sources.api.get(K("Worker/tiny-gpu-0"))
        assert gpu_worker is not None
        assert gpu_worker.manifest.spec.runtime == "scripted-cuda"  # type: ignore[union-attr]
        assert gpu_worker.manifest.spec.device == "GPU-0"  # type: ignore[union-attr]

        # A device that is not there: unschedulable, [ERROR], and the record goes again.
        lines, end = await run_job(
            client,
            b'{"operation":"worker_spawn","hive_id":"localhost","model":"tiny","worker":"cuda","device":7}',
        )
        assert end.outcome == "error" and "Unschedulable" in end.reason, end
        assert manager.http_sources.api.get(K("Worker/tiny-gpu-7")) is None

        # A worker that crashes at once: [ERROR].
        lines, end = await run_job(
            client,
            {
                "operation": "worker_spawn",
                "model": "tiny",
                "worker": "cpu",
                "device": 0,
                "name": "crasher",
                "args": {"mode": "crash"},
            },
        )
        assert end.outcome == "error" and "crasher" in end.reason, end
        assert manager.http_sources.api.get(K("Worker/crasher")) is None

        # rbee's current worker_process_delete, by pid.
        lines, end = await run_job(
            client,
            f'{{"operation":"worker_process_delete","hive_id":"localhost","pid":{pid}}}'.encode(),
        )
        assert end.outcome == "done", (end, actions(lines))
        said = actions(lines)
        for action in ("worker_proc_del_start", "worker_proc_del_sigterm", "worker_proc_del_ok"):
            assert action in said, said
        assert "tiny-cpu-0" not in manager.workers.instances
        assert manager.http_sources.api.get(K("Worker/tiny-cpu-0")) is None

        # model_unload stops the workers of the model (the GPU one).
        lines, end = await run_job(
            client, b'{"operation":"model_unload","hive_id":"localhost","id":"tiny"}'
        )
        assert end.outcome == "done", (end, actions(lines))
        assert "worker_proc_del_ok" in actions(lines)
        assert not manager.workers.instances
        assert manager.http_sources.api.records() == ()


async def test_model_download_of_a_file_then_model_delete(
    serve: Serve, desired: Path, tiny_model: Path
) -> None:
    async with hive_with(serve, desired) as (manager, _u, client):
        lines, end = await run_job(
            client,
            {"operation": "model_download", "model": f"file://{tiny_model}", "name": "copy"},
        )
        assert end.outcome == "done", (end, actions(lines))
        assert await asyncio.to_thread(manager.catalog.observe, "copy") is not None
        lines, end = await run_job(
            client, b'{"operation":"model_delete","hive_id":"localhost","id":"copy"}'
        )
        assert end.outcome == "done", (end, actions(lines))
        assert of(lines, "model_delete_complete")
        assert await asyncio.to_thread(manager.catalog.observe, "copy") is None
        assert manager.http_sources.api.records() == ()
        with pytest.raises(ApiError) as info:
            await client.submit_job({"operation": "model_delete", "id": "copy"})
        assert info.value.status == 404


async def test_metrics_count_jobs_by_operation_and_outcome(serve: Serve, desired: Path) -> None:
    async with hive_with(serve, desired) as (_m, url, client), aiohttp.ClientSession() as http:
        await run_job(client, b'{"operation":"hive_check","alias":"localhost"}')
        await run_job(client, b'{"operation":"model_get","hive_id":"localhost","id":"nope"}')
        async with http.get(url + "/metrics") as r:
            text = await r.text()
    assert 'hive_jobs_total{operation="hive_check",outcome="done"} 1.0' in text
    assert 'hive_jobs_total{operation="model_get",outcome="error"} 1.0' in text
    assert "hive_jobs_running 0.0" in text
