"""Adoption, at hive's start: the workers an earlier hive on this home left running (its
state record, the same pid and start time, this home's markers) are taken over without a
restart, and stale records are cleaned. `instance_id` is the marker: a random id per
home, carried by every worker as HIVE_INSTANCE."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

from hive.actuators import workers as proc
from hive.actuators.files import write_atomic
from hive.core.clock import Clock
from hive.model.events import Level
from hive.model.ids import Kind, ObjectKey
from hive.model.runtimes import RuntimeEntry
from hive.narration.bus import Bus
from hive.observers.processes import DEFAULT_GRACE, find_worker, read_states
from hive.observers.runtimes import RuntimeCatalog
from hive.runtime.worker_table import Instance, WorkerProcess, WorkerTable

#: Seconds an adopted worker whose runtime entry went has to answer its health check.
_START_TIMEOUT = 120.0


def instance_id(home: Path) -> str:
    """This home's id (made on first use)."""
    path = home / "state" / "instance-id"
    with contextlib.suppress(FileNotFoundError):
        if text := path.read_text().strip():
            return text
    path.parent.mkdir(parents=True, exist_ok=True)
    text = uuid.uuid4().hex
    write_atomic(path, text.encode())
    return text


def adopt(
    *,
    home: Path,
    instance: str,
    table: WorkerTable,
    runtimes: RuntimeCatalog,
    start_timeout: float | None,
    bus: Bus,
    clock: Clock,
) -> list[tuple[Instance, RuntimeEntry | None]]:
    """Every worker of this home still running, now in `table`, with its runtime entry
    (None: not in the catalog any more); `start_timeout` overrides the entries' own."""
    states, bad = read_states(home)
    for path, why in bad:
        bus.emit("worker_state_invalid", f"ignoring {path}: {why}", level=Level.WARNING)
        path.unlink(missing_ok=True)
    adopted = []
    for state in states:
        key = ObjectKey.of(Kind.WORKER, state.name)
        process, why = find_worker(state, instance=instance)
        table.histories[state.name] = table.history(state.name).model_copy(
            update={"restarts": state.restarts, "args_adjusted": state.args_adjusted}
        )
        if process is None:
            proc.remove_state(home, state.name)
            bus.emit(
                "worker_state_stale",
                f"Worker {state.name} (PID {state.pid}) is not running any more: {why}; "
                "its state record is removed",
                object=key,
            )
            continue
        now = clock.monotonic()
        entry = runtimes.get(state.runtime)
        timeout = start_timeout or (entry.start_timeout_seconds if entry else _START_TIMEOUT)
        found = Instance(
            proc=WorkerProcess(
                state=state,
                handle=process,
                adopted=True,
                started=now,
                start_deadline=now + timeout,
                grace=entry.grace_seconds if entry else DEFAULT_GRACE,
            )
        )
        table.instances[state.name] = found
        bus.emit(
            "worker_adopted",
            f"🤝 Adopted worker {state.name} (PID {state.pid}, port {state.port}) "
            "left running by an earlier hive",
            object=key,
            data={"pid": state.pid, "port": state.port},
        )
        adopted.append((found, entry))
    return adopted
