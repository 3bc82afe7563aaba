"""What a worker's spawn runs, and the launch itself: its command line and environment
(the runtime entry's templates, hive's markers), then, blocking (the spawner runs it in its
thread pool), the fork/exec and the state record, written before anything can lose track
of the process."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psutil

from hive.actuators import workers as proc
from hive.core.worker_plan import Launch
from hive.core.workers import cuda_visible_devices, render_command, spec_hash
from hive.model.manifests import WorkerSpec
from hive.model.runtimes import RuntimeEntry
from hive.model.text import redact_text
from hive.model.workers import WorkerState
from hive.settings import Settings


@dataclass(frozen=True)
class Command:
    """One run of a worker, decided: what runs, where it logs, what its record says."""

    worker_id: str
    argv: list[str]
    env: dict[str, str]
    log_file: Path
    #: The state record, less what only the running process can tell (pid, start time).
    record: dict[str, object]


def command(
    *,
    settings: Settings,
    queen_url: str | None,
    name: str,
    spec: WorkerSpec,
    launch: Launch,
    port: int,
    instance: str,
    now: datetime,
    restarts: int,
) -> Command:
    """The command line, environment and state record of worker `name`'s next run."""
    entry, meta = launch.entry, launch.meta
    worker_id = f"{name}-{uuid.uuid4().hex[:8]}"
    host, queen = settings.worker_host, queen_url or ""
    builtins = {
        "model_path": str(meta.path),
        "model": spec.model,
        "host": host,
        "port": str(port),
        "device": spec.device,
        "worker_id": worker_id,
        "queen_url": queen,
        "python": sys.executable,
        "binary": str(entry.path or ""),
        "entry_dir": str(Path(entry.origin).parent) if entry.origin != "built-in" else "",
    }
    argv, entry_env = render_command(entry, args=launch.args, builtins=builtins)
    env = proc.worker_env(
        base=dict(os.environ),
        extra={
            **entry_env,
            "HIVE_WORKER_ID": worker_id,
            "HIVE_WORKER_NAME": name,
            "HIVE_INSTANCE": instance,
            "HIVE_QUEEN_URL": queen,
            "CUDA_VISIBLE_DEVICES": cuda_visible_devices(spec.device),
        },
    )
    log_file = proc.log_path(settings.home, name)
    record: dict[str, object] = {
        "name": name,
        "worker_id": worker_id,
        "instance": instance,
        "host": host,
        "port": port,
        "argv": tuple(redact_text(a) for a in argv),  # a {queen_url} keeps no password
        "runtime": entry.id,
        "worker_type": worker_type(entry, spec.device),
        "model": spec.model,
        "model_path": meta.path,
        "model_sha256": meta.sha256,
        "device": spec.device,
        "spec_hash": spec_hash(spec, model_sha256=meta.sha256),
        "started_at": now,
        "restarts": restarts,
        "log_path": log_file,
        "args_adjusted": launch.adjusted,
    }
    return Command(worker_id=worker_id, argv=argv, env=env, log_file=log_file, record=record)


def run(
    run_as: Command, *, home: Path, now: datetime
) -> tuple[subprocess.Popen[bytes], psutil.Process, WorkerState]:
    """Blocking: fork/exec waits for the child to exec, which a busy machine delays. The
    state record is written before this returns; if it cannot be, the process is killed."""
    popen = proc.spawn(
        argv=run_as.argv,
        env=run_as.env,
        log_path=run_as.log_file,
        banner=f"{proc.stamp(now)} starting {run_as.worker_id}: "
        + redact_text(" ".join(run_as.argv)),
    )
    try:
        process = psutil.Process(popen.pid)
        state = WorkerState.model_validate(
            {**run_as.record, "pid": popen.pid, "create_time": process.create_time()}
        )
        proc.write_state(home, state)  # before anything can lose track of it
    except BaseException:
        popen.kill()
        popen.wait()
        raise
    return popen, process, state


def worker_type(entry: RuntimeEntry, device: str) -> str:
    """rbee's worker_type of a run: the entry's, except that a CPU device makes it `cpu`."""
    if device.startswith("CPU"):
        return "cpu"
    return entry.worker_type if entry.worker_type != "cpu" else "cuda"
