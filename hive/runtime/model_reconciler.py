"""The Model reconciler: for one Model key, observe → plan → act, then record status and
narrate.

Level-triggered: it reads the store and the disk afresh each time, never an event's
payload. A failure is raised to the controller (hive/runtime/controller.py), which owns
the retries and calls `failed` so that it is recorded here, in a Model's words.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from hive.actuators.provision import (
    cleanup_partial,
    delete_model,
)
from hive.actuators.space import provisioning_no_space
from hive.core.clock import Clock
from hive.core.plan import plan_model
from hive.core.status import (
    model_absent,
    model_available,
    model_failed,
    model_working,
)
from hive.core.store import Store
from hive.errors import (
    Conflict,
    HiveError,
    InternalError,
    ObserveFailed,
    TransientError,
    is_no_space,
)
from hive.model.actions import (
    Action,
    CleanupPartial,
    DeleteModel,
    ProvisionModel,
    SyncModel,
    describe,
)
from hive.model.events import Level
from hive.model.ids import Kind, ObjectKey
from hive.model.manifests import ModelManifest, Record
from hive.model.observed import ObservedModel
from hive.model.provisioning import Cancelled
from hive.model.status import ModelPhase, ObjectStatus, StatusUpdate
from hive.model.text import clip, show_text, show_url
from hive.model.units import megabytes
from hive.narration.bus import Bus
from hive.observers.catalog import ModelCatalog, boot_id
from hive.runtime.controller import Result
from hive.runtime.model_actions import (
    SLOT_POLL,
    Downloads,
    ModelActions,
    Running,
    WaitingForSlot,
    rate_of,
)
from hive.runtime.status_store import StatusStore

log = logging.getLogger(__name__)
_PERMANENT_HINT = "retrying will not help: hive tries again when the record changes"


def _identity(record: Record | None) -> str | None:
    if record is None or not isinstance(record.manifest, ModelManifest):
        return None
    spec = record.manifest.spec
    return f"{spec.source}|{spec.sha256}|{spec.state}"


class DeleteRequest:
    """A `DELETE /v1/models/{name}` waiting for its reconcile: the workers it stops (named
    in the narration), and the answer the request awaits (None, or the error)."""

    def __init__(self, users: list[str]) -> None:
        self.users = users
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # The request may be gone (its client hung up): its error is not an unread one.
        self.done.add_done_callback(lambda f: f.cancelled() or f.exception())

    def end(self, error: BaseException | None = None) -> None:
        """Answer the request (once): done, or failed with `error`."""
        if self.done.done():
            return
        if error is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(error)


class ModelReconciler:
    kind = Kind.MODEL

    def __init__(
        self,
        *,
        store: Store,
        statuses: StatusStore,
        catalog: ModelCatalog,
        bus: Bus,
        clock: Clock,
        action_timeout: float,
        partial_ttl: float = 24 * 3600.0,
        file_roots: tuple[Path, ...] = (),
        downloads: Downloads,
        on_deleted: Callable[[str], None] | None = None,
    ) -> None:
        self._partial_ttl = partial_ttl
        self._store = store
        self._statuses = statuses
        self._catalog = catalog
        self._bus = bus
        self._clock = clock
        self._action_timeout = action_timeout
        self._running: dict[ObjectKey, Running] = {}
        #: Deletions asked for over the API, carried out by the key's next reconcile.
        self._deletions: dict[ObjectKey, DeleteRequest] = {}
        #: What each key was doing when it failed (its narration's verb), until `failed`.
        self._failing: dict[ObjectKey, Action | None] = {}
        self._actions = ModelActions(
            store=store,
            statuses=statuses,
            catalog=catalog,
            bus=bus,
            clock=clock,
            action_timeout=action_timeout,
            file_roots=file_roots,
            downloads=downloads,
        )
        #: Called with a model's name once `state: absent` has deleted its files (its
        #: workers are stopped).
        self._on_deleted = on_deleted

    def set_status(self, key: ObjectKey, update: StatusUpdate) -> ObjectStatus:
        return self._statuses.set(key, update)

    # -- cancellation --------------------------------------------------------------------
    def cancel_if_stale(self, key: ObjectKey) -> bool:
        """Stop an action whose record went away or changed; True if one was stopped."""
        running = self._running.get(key)
        if running is None or running.cancel.is_set():
            return False
        record = self._store.desired(key)
        if record is not None and self._store.generation(key) == running.generation:
            return False
        if record is not None and _identity(record) == running.identity:
            # Same bytes wanted: only, say, the rate limit changed. Apply it in flight.
            if running.throttle is not None:
                running.throttle.set_rate(rate_of(record))
            running.generation = self._store.generation(key)
            return False
        running.cancel.set()
        return True

    def cancel_all(self) -> None:
        """hive is stopping: every action is told to stop, every API deletion still
        waiting is answered."""
        for running in self._running.values():
            running.cancel.set()
        for request in self._deletions.values():
            request.end(TransientError("hive stopped before the deletion ran; ask again"))
        self._deletions.clear()

    # -- reconcile -----------------------------------------------------------------------
    def request_delete(self, name: str, *, users: list[str]) -> DeleteRequest:
        """Record that the API asks for `name`'s files to go (the caller enqueues the key,
        and awaits `done`): the deletion is the key's next action, so that it never runs
        beside a download or a check of the same model."""
        key = ObjectKey.of(Kind.MODEL, name)
        request = self._deletions.get(key)
        if request is None or request.done.done():
            request = self._deletions[key] = DeleteRequest(users)
        return request

    async def reconcile(self, key: ObjectKey) -> Result:
        if (request := self._deletions.pop(key, None)) is not None:
            await self._delete_requested(key, request)
        record = self._store.desired(key)
        generation = self._store.generation(key)
        try:
            observed = self._catalog.observe(key.name)
        except OSError as exc:
            self._failing[key] = None
            raise ObserveFailed(
                f"cannot read {key.name}'s directory: {show_text(str(exc))}"
            ) from exc
        actions = plan_model(
            key.name,
            record=record,
            observed=observed,
            prune_allowed=self._store.all_synced,
            now=self._clock.now(),
            partial_ttl=self._partial_ttl,
            boot=boot_id(),
        )
        if not actions:
            self._converged(key, record is not None, observed)
            return Result()
        action = actions[0]
        running = Running(generation, _identity(record))
        try:
            await self._execute(key, action, running)
        except WaitingForSlot as waiting:
            previous = self._statuses.get(key)
            if previous is None or previous.message != waiting.message:
                self._bus.narrate(key, "model_download_queued", waiting.message)
            self.set_status(
                key, model_working(ModelPhase.PENDING, "WaitingForSlot", waiting.message)
            )
            return Result(requeue_after=SLOT_POLL, in_progress=True)
        except Cancelled:
            self._bus.narrate(
                key,
                f"model_{self._verb(action)}_cancelled",
                "Stopped: the record changed or was removed",
            )
            if self._store.desired(key) is None:
                self._statuses.forget(key)
            return Result()
        except Exception as exc:
            self._failing[key] = action
            raise self._as_error(key, action, exc) from exc
        observed = self._catalog.observe(key.name)
        if isinstance(action, SyncModel) and observed is None:
            return Result(requeue_after=0.0)  # the check removed bad bytes: provision again
        self._converged(key, record is not None, observed)
        meta = observed.metadata if observed is not None else None
        if isinstance(action, ProvisionModel) and meta is not None and not meta.synced:
            return Result(requeue_after=0.0)  # published: now put it on disk
        return Result()

    async def _delete_requested(self, key: ObjectKey, request: DeleteRequest) -> None:
        """Carry out an API deletion; its outcome goes to the request, not to retries."""
        record = self._store.desired(key)
        if (
            record is not None
            and isinstance(record.manifest, ModelManifest)
            and record.manifest.spec.state == "present"
        ):
            # Declared since the request was checked: the record wins.
            request.end(
                Conflict(
                    f"{key} is declared present by {record.origin.described()}; "
                    "set `state: absent` there to delete it"
                )
            )
            return
        users = request.users
        self._bus.narrate(
            key,
            "model_delete_start",
            f"🗑️ Deleting model {key.name} (requested over the API"
            + (f"; stopping worker(s) {clip(', '.join(users))})" if users else ")"),
        )
        try:
            await asyncio.to_thread(delete_model, key.name, catalog=self._catalog)
        except asyncio.CancelledError:
            request.end(TransientError("hive stopped while deleting; ask again"))
            raise
        except Exception as exc:
            request.end(exc)
            return
        finally:
            if self._on_deleted is not None:
                self._on_deleted(key.name)  # its workers are stopped now, told why
        self._bus.narrate(key, "model_delete_complete", "✅ Model deleted successfully")
        request.end()

    def _converged(self, key: ObjectKey, wanted: bool, observed: ObservedModel | None) -> None:
        if not wanted:
            self._statuses.forget(key)
            return
        previous = self._statuses.get(key)
        if observed is None:
            self.set_status(key, model_absent("not on disk, as state: absent asks"))
            return
        meta = observed.metadata
        assert meta is not None
        message = f"{megabytes(meta.size)} at {show_url(meta.path)}"
        status = self.set_status(key, model_available(message))
        if previous is None or previous.phase != status.phase:
            self._bus.narrate(
                key,
                "model_available",
                f"✅ Model {key.name} is available ({message})",
                sha256=meta.sha256,
                size=meta.size,
                architecture=meta.architecture,
                quantization=meta.quantization,
            )

    @staticmethod
    def _verb(action: Action | None) -> str:
        match action:
            case ProvisionModel():
                return "download"
            case DeleteModel() | CleanupPartial():
                return "delete"
            case SyncModel():
                return "sync"
        return "reconcile"

    def _as_error(self, key: ObjectKey, action: Action, exc: Exception) -> HiveError:
        if is_no_space(exc):
            # The one place a full disk under the home (ENOSPC, EDQUOT, EFBIG, from any
            # write: the bytes, a sidecar, metadata.json) becomes InsufficientSpace.
            assert isinstance(exc, OSError)
            return self._no_space(key, action, exc)
        if isinstance(exc, HiveError):
            return exc
        log.exception("unexpected error while carrying out %s", describe(action))
        return InternalError.of(exc, show_text(str(exc)))

    def failed(
        self, key: ObjectKey, error: HiveError, *, attempt: int, retry_in: float | None
    ) -> None:
        """The controller's word that reconciling `key` failed: a Failed status, and
        `model_<verb>_failed` (download, delete, sync) saying when it is tried again."""
        action = self._failing.pop(key, None)
        verb = f"model_{self._verb(action)}_failed"
        if retry_in is None:
            # Retrying cannot help: the controller waits until the record changes.
            message = f"{error.message} ({_PERMANENT_HINT})"
            self.set_status(key, model_failed(error.reason, message))
            self._bus.narrate(
                key, verb, f"❌ {message}", level=Level.ERROR, reason=error.reason, permanent=True
            )
            return
        self.set_status(key, model_failed(error.reason, error.message))
        self._bus.narrate(
            key,
            verb,
            f"❌ {error.message} (attempt {attempt}; next in {retry_in:.0f}s)",
            level=Level.ERROR,
            reason=error.reason,
            permanent=False,
            retry_in_seconds=retry_in,
        )

    def _no_space(self, key: ObjectKey, action: Action, exc: OSError) -> HiveError:
        try:
            observed = self._catalog.observe(key.name)
        except OSError:
            observed = None
        return provisioning_no_space(
            exc, action=action, directory=self._catalog.directory(key.name), observed=observed
        )

    async def _execute(self, key: ObjectKey, action: Action, running: Running) -> None:
        self._running[key] = running
        try:
            match action:
                case ProvisionModel():
                    await self._actions.provision(key, action, running)
                case DeleteModel():
                    self.set_status(
                        key, model_working(ModelPhase.DELETING, "Deleting", "state: absent")
                    )
                    self._bus.narrate(key, "model_delete_start", f"🗑️ Deleting model {key.name}")
                    await self._actions.bounded(
                        asyncio.to_thread(delete_model, key.name, catalog=self._catalog), running
                    )
                    self._bus.narrate(key, "model_delete_complete", "✅ Model deleted successfully")
                    if self._on_deleted is not None:
                        self._on_deleted(key.name)
                case CleanupPartial():
                    await self._actions.bounded(
                        asyncio.to_thread(cleanup_partial, key.name, catalog=self._catalog),
                        running,
                    )
                    self._bus.narrate(
                        key, "model_partial_removed", f"Removed leftovers ({clip(action.reason)})"
                    )
                case SyncModel():
                    await self._actions.sync(key, action, running)
        finally:
            self._running.pop(key, None)
