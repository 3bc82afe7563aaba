"""Actions: what the planner decides and the actuators carry out, one object at a time."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from hive.model.ids import Kind, ObjectKey
from hive.model.text import clip, show_url


class _Action(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    #: Why the planner chose this action, in words a user reads in `hive plan`.
    reason: str

    @property
    def key(self) -> ObjectKey:
        return ObjectKey.of(Kind.MODEL, self.name)


class ProvisionModel(_Action):
    """Bring the model's file into the catalog from its source."""

    type: Literal["ProvisionModel"] = "ProvisionModel"
    source: str
    #: The source made concrete: an absolute path for file:, the URL otherwise.
    resolved_source: str
    sha256: str | None = None


class DeleteModel(_Action):
    """Remove the model's directory (`state: absent`)."""

    type: Literal["DeleteModel"] = "DeleteModel"


class CleanupPartial(_Action):
    """Remove leftovers of an interrupted provisioning of a model no record wants."""

    type: Literal["CleanupPartial"] = "CleanupPartial"


class SyncModel(_Action):
    """Make a published model durable: fsync its files, then record that. With `verify`,
    hash them first: they were published by an earlier boot of the machine and never
    synced, so they may not be what was verified (the model is not used until they are)."""

    type: Literal["SyncModel"] = "SyncModel"
    verify: bool = False


Action = ProvisionModel | DeleteModel | CleanupPartial | SyncModel


class _WorkerAction(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    #: Why, in words a user reads in `hive plan`.
    reason: str

    @property
    def key(self) -> ObjectKey:
        return ObjectKey.of(Kind.WORKER, self.name)


class StartWorker(_WorkerAction):
    """Spawn the worker: its record wants it running and no process runs it."""

    type: Literal["StartWorker"] = "StartWorker"


class StopWorker(_WorkerAction):
    """SIGTERM, grace, SIGKILL of a running worker no record wants running."""

    type: Literal["StopWorker"] = "StopWorker"
    pid: int


class ReplaceWorker(_WorkerAction):
    """Stop the running process, then start one that matches the changed record."""

    type: Literal["ReplaceWorker"] = "ReplaceWorker"
    pid: int


class UnschedulableWorker(_WorkerAction):
    """The record wants it running, but it cannot start here now: the reason says why
    (its condition reason first: Unschedulable, UnknownRuntime, InvalidArgs, …)."""

    type: Literal["UnschedulableWorker"] = "UnschedulableWorker"


WorkerAction = StartWorker | StopWorker | ReplaceWorker | UnschedulableWorker


def describe_worker(action: WorkerAction) -> str:
    """One line for `hive plan`."""
    match action:
        case StartWorker():
            return f"start Worker/{action.name} ({action.reason})"
        case StopWorker():
            return f"stop Worker/{action.name}, PID {action.pid} ({action.reason})"
        case ReplaceWorker():
            return f"replace Worker/{action.name}, PID {action.pid} ({action.reason})"
        case UnschedulableWorker():
            return f"cannot start Worker/{action.name}: {action.reason}"


def describe(action: Action) -> str:
    """One line for `hive plan` and for narration (a source's URL redacted, each part
    bounded)."""
    match action:
        case ProvisionModel():
            source = show_url(action.source)
            return f"provision Model/{action.name} from {source} ({clip(action.reason)})"
        case DeleteModel():
            return f"delete Model/{action.name} ({clip(action.reason)})"
        case CleanupPartial():
            return f"clean up Model/{action.name} ({clip(action.reason)})"
        case SyncModel():
            verb = "verify and sync" if action.verify else "sync"
            return f"{verb} Model/{action.name} to disk ({clip(action.reason)})"
