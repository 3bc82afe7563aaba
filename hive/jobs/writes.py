"""The mutating jobs. None acts itself: each checks at once what it may do (a 404 for what
is not there, a 409 for an object another source owns, a 400 for what cannot be declared),
then writes records into the `api` source (persisted, surviving a restart) and follows the
objects until they converge, fail for good or the job is cancelled.

What a cancel (and an [ERROR]) undoes: the records the job *added or changed* in `api` go
back to what they were before (a record added is removed: a download in flight stops, a
worker being started is stopped), unless something else has changed them since. Records
the job *removed* stay removed (a stop under way goes on), and files a deletion removed
stay removed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from hive.api.views import observe_model, worker_names
from hive.errors import BadRequest, Conflict, HiveError, NotFound
from hive.jobs.follow import Check, Moved, Verdict, follow, model_available, workers_running
from hive.jobs.job import Job, JobFailed
from hive.jobs.names import (
    device_of,
    model_name_of,
    model_names,
    parse_device,
    source_of,
    worker_base,
)
from hive.jobs.names import (
    worker_names as new_worker_names,
)
from hive.jobs.operations import (
    ModelDelete,
    ModelDownload,
    ModelLoad,
    ModelUnload,
    WorkerKill,
    WorkerSpawn,
)
from hive.jobs.reads import worker_by_pid
from hive.model.ids import Kind, ObjectKey, name_problem
from hive.model.manifests import ModelManifest, Origin, Record, WorkerManifest
from hive.model.text import clip, redact_url, show
from hive.runtime.manager import Manager
from hive.sources.http import API

WriteOperation = ModelDownload | ModelDelete | ModelLoad | ModelUnload | WorkerSpawn | WorkerKill
Runner = Callable[[Job], Awaitable[None]]


def _owned_elsewhere(manager: Manager, key: ObjectKey) -> None:
    """409 when a source other than `api` owns `key` (a watched directory, git, the Queen):
    a job may only change what the API declared."""
    owner = manager.store.owner(key)
    if owner is None or owner == API:
        return
    record = manager.store.desired(key)
    where = record.origin.where() if record is not None else f"source {owner}"
    raise Conflict(
        f"{key} is declared by {where} (source {owner}); a job changes only what the API "
        f"declared: change it there"
    )


def _validated(kind: type[ModelManifest] | type[WorkerManifest], doc: dict[str, Any]) -> Record:
    """A record of the `api` source, or 400 naming each field the request got wrong."""
    try:
        manifest = kind.model_validate(doc)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc'])}: {clip(e['msg'].removeprefix('Value error, '))}"
            for e in exc.errors(include_url=False)[:20]
        ]
        raise BadRequest(problems[0], problems) from None
    return Record(manifest=manifest, origin=Origin(source=API))


@dataclass
class Writes:
    """What a job wrote into `api`, to undo on cancel or error."""

    manager: Manager
    job: Job
    #: Key → (the record before, the record this job wrote) for additions and changes.
    added: dict[ObjectKey, tuple[Record | None, Record]] = field(default_factory=dict)

    async def upsert(self, records: Sequence[Record]) -> None:
        _, before = await self.manager.api_source.swap(records)
        for record in records:
            first = self.added.get(record.key)
            self.added[record.key] = (
                before[record.key] if first is None else first[0],
                record,
            )
        for record in records:
            self.job.emit(
                "desired_state_written",
                f"{record.key} declared in source api (generation "
                f"{self.manager.store.generation(record.key)})",
                object=record.key,
                data={"source": API, "generation": self.manager.store.generation(record.key)},
            )

    async def remove(self, keys: Sequence[ObjectKey]) -> None:
        source = self.manager.api_source
        mine = [k for k in keys if source.get(k) is not None]
        if not mine:
            return
        await source.remove(mine)
        for key in mine:
            self.job.emit("desired_state_written", f"{key} removed from source api", object=key)

    async def undo(self) -> None:
        """Put back what this job added or changed, where nobody changed it since."""
        source = self.manager.api_source
        restore = [b for k, (b, a) in self.added.items() if b is not None and source.get(k) == a]
        drop = [k for k, (b, a) in self.added.items() if b is None and source.get(k) == a]
        if restore:
            await source.upsert(restore)
        if drop:
            await source.remove(drop)
        for key in [*drop, *(r.key for r in restore)]:
            self.job.emit(
                "desired_state_restored",
                f"{key}: the job's change was undone in source api",
                object=key,
            )


class WriteJob:
    """One mutating job: its checked plan (prepared at POST) and its run."""

    def __init__(self, manager: Manager, moved: Moved) -> None:
        self.manager = manager
        self.moved = moved
        #: Held while a spawn picks its workers' names and writes them.
        self._naming = asyncio.Lock()

    async def _run(
        self,
        job: Job,
        work: Callable[[Writes], Awaitable[tuple[list[ObjectKey], Check] | None]],
    ) -> None:
        """`work` writes, and says what to follow; on an error, or on a cancel a client
        asked for (`job.undo`; not hive's own stop), its additions go."""
        writes = Writes(self.manager, job)
        after = self.manager.bus.last_id
        try:
            followed = await work(writes)
            if followed is not None:
                keys, check = followed
                await follow(
                    job=job,
                    bus=self.manager.bus,
                    moved=self.moved,
                    keys=keys,
                    after=after,
                    check=check,
                )
        except JobFailed:
            await writes.undo()
            raise
        except HiveError as exc:  # a full disk, a set the source refuses: said, and undone
            await writes.undo()
            raise JobFailed(exc.message) from None
        except asyncio.CancelledError:
            if job.undo:
                await asyncio.shield(writes.undo())
            raise

    # -- models ----------------------------------------------------------------------------
    async def model_download(self, op: ModelDownload) -> Runner:
        source = source_of(op.model)
        name = op.name or model_name_of(op.model)
        problem = name_problem(name)
        if problem is not None:
            raise BadRequest(f"name: the model's name {problem}; send `name`")
        record = _validated(
            ModelManifest,
            {
                "apiVersion": "hive/v1",
                "kind": "Model",
                "metadata": {"name": name},
                "spec": {"source": source},
            },
        )
        key = record.key
        _owned_elsewhere(self.manager, key)
        if source.startswith("file:") and not source.removeprefix("file:").startswith("/"):
            raise BadRequest(
                f"model: {show(source)}: a file: source sent over HTTP must be an absolute "
                "path (file:///path/model.gguf)"
            )

        async def work(writes: Writes) -> tuple[list[ObjectKey], Check]:
            writes.job.emit(
                "model_download_start",
                f"📥 Downloading {name} from {show(source)} on hive "
                f"'{self.manager.settings.hive_id}'",
                object=key,
                data={"model": name, "source": redact_url(source)},
            )
            await writes.upsert([record])
            generation = self.manager.store.generation(key)
            return [key], model_available(self.manager.statuses, key, generation)

        return lambda job: self._run(job, work)

    async def _model(self, ref: str, refs: list[str]) -> str:
        """The name of the model `refs` name (declared or on disk); 404 otherwise."""
        for one in refs:
            for name in model_names(one):
                key = ObjectKey.of(Kind.MODEL, name)
                if self.manager.store.desired(key) is not None:
                    return name
                if await observe_model(self.manager, name) is not None:
                    return name
        raise NotFound(
            f"model {show(ref)} is neither declared nor on disk (model_list lists them; "
            "model_download adds one)"
        )

    async def model_delete(self, op: ModelDelete) -> Runner:
        """A model the API declared: its record goes, then its files by the API deletion
        path (the one DELETE /v1/models/{name} takes); an undeclared model on disk: that
        path alone. Refused while workers use it (kill them first)."""
        name = await self._model(op.ref, op.refs())
        key = ObjectKey.of(Kind.MODEL, name)
        _owned_elsewhere(self.manager, key)
        users = self.manager.workers_of(name, running=True)
        if users:
            raise Conflict(
                f"model {name} is used by worker(s) {clip(', '.join(users))}: stop them "
                "first (worker_process_delete, model_unload)"
            )

        async def work(writes: Writes) -> None:
            writes.job.emit(
                "model_delete_start",
                f"🗑️ Deleting model {name} on hive '{self.manager.settings.hive_id}'",
                object=key,
            )
            await writes.remove([key])
            after = self.manager.bus.last_id
            deleted = self.manager.delete_model(name, users=[])

            def check() -> Verdict:
                if not deleted.done():
                    return None
                error = deleted.exception()
                return True if error is None else f"{key}: {error}"

            await follow(
                job=writes.job,
                bus=self.manager.bus,
                moved=self.moved,
                keys=[key],
                after=after,
                check=check,
            )

        async def run(job: Job) -> None:
            await self._run(job, work)

        return run

    # -- workers ---------------------------------------------------------------------------
    def _runtime(self, worker: str, given: str | None) -> str:
        if given is not None:
            return given
        entries = [e for e in self.manager.runtimes.entries() if e.worker_type == worker]
        entries.sort(key=lambda e: (not e.available, e.id))
        if not entries:
            known = ", ".join(f"{e.id} ({e.worker_type})" for e in self.manager.runtimes.entries())
            raise BadRequest(
                f"worker: the worker catalog has no runtime of type {worker} (it has: "
                f"{known or 'none'}; GET /v1/runtimes); send `runtime` to name one"
            )
        return entries[0].id

    async def _spawn(
        self,
        *,
        model_ref: str,
        refs: list[str],
        worker: str,
        device: str,
        count: int,
        name: str | None,
        runtime: str | None,
        port: int | None,
        args: dict[str, Any],
        restart_policy: str | None = None,
    ) -> Runner:
        model = await self._model(model_ref, refs)
        runtime_id = self._runtime(worker, runtime)
        if port is not None and count > 1:
            raise BadRequest("port: one port cannot serve several workers; leave it out")
        if name is not None:
            problem = name_problem(name)
            if problem is not None:
                raise BadRequest(f"name: {problem}")
        base = name if name is not None else worker_base(model, device)
        spec: dict[str, Any] = {"model": model, "runtime": runtime_id, "device": device}
        if port is not None:
            spec["port"] = port
        if args:
            spec["args"] = args
        if restart_policy is not None:
            spec["restartPolicy"] = restart_policy

        def record_of(worker_name: str) -> Record:
            doc = {
                "apiVersion": "hive/v1",
                "kind": "Worker",
                "metadata": {"name": worker_name},
                "spec": spec,
            }
            return _validated(WorkerManifest, doc)

        record_of(base)  # a 400 for what no name mends, before anything runs
        if name is not None and count == 1:
            _owned_elsewhere(self.manager, record_of(name).key)

        async def work(writes: Writes) -> tuple[list[ObjectKey], Check]:
            # Names are picked and written under one lock: a job started meanwhile sees
            # these names as taken (two spawns of one model get two workers).
            async with self._naming:
                if name is not None and count == 1:
                    names = [name]
                else:
                    names = new_worker_names(base, count, taken=set(worker_names(self.manager)))
                records = [record_of(n) for n in names]
                for record in records:
                    _owned_elsewhere(self.manager, record.key)
                writes.job.emit(
                    "worker_spawn_start",
                    f"🚀 Spawning {count} worker(s) {clip(', '.join(names))} with model "
                    f"{model} on {device} ({runtime_id})",
                    data={
                        "workers": names,
                        "model": model,
                        "device": device,
                        "runtime": runtime_id,
                    },
                )
                await writes.upsert(records)
            generations = {r.key: self.manager.store.generation(r.key) for r in records}
            return list(generations), workers_running(self.manager.statuses, generations)

        return lambda job: self._run(job, work)

    async def worker_spawn(self, op: WorkerSpawn) -> Runner:
        return await self._spawn(
            model_ref=op.model,
            refs=[op.model],
            worker=op.worker,
            device=device_of(op.worker, op.device),
            count=op.count,
            name=op.name,
            runtime=op.runtime,
            port=op.port,
            args=dict(op.args),
            restart_policy=op.restart_policy,
        )

    async def model_load(self, op: ModelLoad) -> Runner:
        worker, device = parse_device(op.device)
        return await self._spawn(
            model_ref=op.ref,
            refs=op.refs(),
            worker=worker,
            device=device,
            count=1,
            name=None,
            runtime=op.runtime,
            port=op.port,
            args={},
        )

    def _stop(self, names: list[str], what: str) -> Runner:
        """Remove the `api` records of `names` (an undeclared process is stopped by its
        reconcile) and follow them until no process of any is left."""
        keys = [ObjectKey.of(Kind.WORKER, n) for n in names]
        for key in keys:
            _owned_elsewhere(self.manager, key)
        manager = self.manager

        async def work(writes: Writes) -> tuple[list[ObjectKey], Check] | None:
            pids = {n: i.state.pid for n, i in manager.workers.instances.items() if n in names}
            writes.job.emit(
                "worker_proc_del_start",
                f"🗑️ Stopping {what}"
                + (f" (PID {', '.join(map(str, pids.values()))})" if pids else ""),
                data={"workers": names, "pids": list(pids.values())},
            )
            await writes.remove(keys)
            for key in keys:
                manager.queue.add(key)

            def check() -> Verdict:
                left = [n for n in names if n in manager.workers.instances]
                return not left or None

            return keys, check

        return lambda job: self._run(job, work)

    async def worker_kill(self, op: WorkerKill) -> Runner:
        known = set(worker_names(self.manager))
        names: list[str] = []
        for target in op.targets():
            if isinstance(target, int):
                found = worker_by_pid(self.manager, target)
                if found is None:
                    raise NotFound(
                        f"no worker process has PID {target} on this hive "
                        "(worker_process_list lists them)"
                    )
            else:
                if target not in known:
                    raise NotFound(
                        f"no worker {show(target)} on this hive (worker_process_list lists them)"
                    )
                found = target
            if found not in names:
                names.append(found)
        return self._stop(names, f"worker(s) {clip(', '.join(names))}")

    async def model_unload(self, op: ModelUnload) -> Runner:
        name = await self._model(op.ref, op.refs())
        users = self.manager.workers_of(name)
        if not users:

            async def nothing(job: Job) -> None:
                job.emit("model_unload_none", f"No worker serves model {name}: nothing to stop")

            return nothing
        return self._stop(users, f"the worker(s) of model {name}: {clip(', '.join(users))}")

    async def prepare(self, op: WriteOperation) -> Runner:
        match op:
            case ModelDownload():
                return await self.model_download(op)
            case ModelDelete():
                return await self.model_delete(op)
            case ModelLoad():
                return await self.model_load(op)
            case ModelUnload():
                return await self.model_unload(op)
            case WorkerSpawn():
                return await self.worker_spawn(op)
            case WorkerKill():
                return await self.worker_kill(op)
