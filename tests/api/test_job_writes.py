"""Mutating jobs under concurrency and failure: two spawns at once get two workers, an
explicit name never overwrites another worker, a HiveError inside a job is its [ERROR]
(not an internal error), and an undo restores what the key held right before the job's
write, whatever was written in between."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hive.client import HiveClient
from hive.core.clock import FakeClock
from hive.jobs.job import Job
from hive.jobs.writes import Writes
from hive.model.ids import ObjectKey
from hive.model.manifests import Origin, Record, WorkerManifest
from hive.sources.http import API
from tests.api.conftest import Serve
from tests.api.test_jobs import available, install_runtimes, read_stream
from tests.conftest import apoll, model_yaml

K = ObjectKey.parse


def spawn(**extra: object) -> dict[str, object]:
    return {"operation": "worker_spawn", "model": "tiny", "worker": "cpu", "device": 0, **extra}


def worker_record(name: str, port: int) -> Record:
    manifest = WorkerManifest.model_validate(
        {
            "apiVersion": "hive/v1",
            "kind": "Worker",
            "metadata": {"name": name},
            "spec": {"model": "tiny", "runtime": "scripted", "device": "CPU-0", "port": port},
        }
    )
    return Record(manifest=manifest, origin=Origin(source=API))


async def test_spawns_at_once_get_a_worker_each_and_a_name_never_overwrites(
    serve: Serve, tiny_model: Path, tmp_path: Path, worker_ports: range
) -> None:
    install_runtimes(tmp_path / "home")
    (tmp_path / "desired").mkdir()
    (tmp_path / "desired" / "m.yaml").write_text(model_yaml("tiny", f"file:{tiny_model}"))
    ports = f"{worker_ports.start}-{worker_ports.stop - 1}"
    async with (
        serve(gpu_probe="none", worker_ports=ports) as (manager, url),
        HiveClient(url) as client,
    ):
        await apoll(available(manager, "tiny"), within=20, what="tiny Available")
        created = await asyncio.gather(client.submit_job(spawn()), client.submit_job(spawn()))
        ends = [(await read_stream(client, c.job_id))[1] for c in created]
        assert [e.outcome for e in ends] == ["done", "done"], ends
        names = sorted(r.key for r in manager.http_sources.api.records())
        assert names == ["Worker/tiny-cpu-0", "Worker/tiny-cpu-0-2"]

        # An explicit name with a count skips the names taken, never rewrites them.
        job = await client.submit_job(spawn(name="tiny-cpu-0", count=2))
        _, end = await read_stream(client, job.job_id)
        assert end.outcome == "done", end
        names = sorted(r.key for r in manager.http_sources.api.records())
        assert names == [
            "Worker/tiny-cpu-0",
            "Worker/tiny-cpu-0-2",
            "Worker/tiny-cpu-0-3",
            "Worker/tiny-cpu-0-4",
        ]
        # hive's addition: the spawned Worker's restart policy.
        job = await client.submit_job(spawn(name="once", restart_policy="Never"))
        _, end = await read_stream(client, job.job_id)
        assert end.outcome == "done", end
        (once,) = [r for r in manager.http_sources.api.records() if r.name == "once"]
        assert isinstance(once.manifest, WorkerManifest)
        assert once.manifest.spec.restartPolicy == "Never"
        await manager.http_sources.api.replace([], allow_empty=True)
        await apoll(lambda: not manager.workers.instances, within=20, what="workers stopped")


async def test_a_hive_error_inside_a_job_is_its_error_not_an_internal_one(
    serve: Serve, tiny_model: Path, tmp_path: Path
) -> None:
    # The api source's file cannot be written (a directory stands where it goes).
    (tmp_path / "home" / "state" / "desired" / "api.json").mkdir(parents=True)
    async with serve(gpu_probe="none") as (manager, url), HiveClient(url) as client:
        job = await client.submit_job(
            {"operation": "model_download", "model": f"file:{tiny_model}", "name": "tiny"}
        )
        _, end = await read_stream(client, job.job_id)
        assert end.outcome == "error"
        assert end.reason.startswith("cannot save source api"), end.reason
        assert "internal error" not in end.reason
        assert manager.http_sources.api.records() == ()


async def test_an_undo_restores_what_the_key_held_right_before_the_jobs_write(
    serve: Serve,
) -> None:
    async with serve(gpu_probe="none") as (manager, _url):
        source = manager.http_sources.api
        first, put, mine = (
            worker_record("w", 40001),
            worker_record("w", 40002),
            worker_record("w", 40003),
        )
        await source.upsert([first])
        job = Job(job_id="job-t", operation="worker_spawn", clock=FakeClock(), max_events=50)
        writes = Writes(manager, job)
        async with source._lock:  # a PUT holds the source while the job asks to write
            putting = asyncio.create_task(source.replace([put]))
            writing = asyncio.create_task(writes.upsert([mine]))
            for _ in range(5):
                await asyncio.sleep(0)
        await putting
        await writing
        assert source.get(K("Worker/w")) == mine
        await writes.undo()
        assert source.get(K("Worker/w")) == put  # the PUT's record, not the one before it
