"""The controller: its workers take keys from the queue and hand each to the reconciler of
its kind, one at a time per key; it owns retries, as controller-runtime's does. A
`BatchReconciler` (the Worker one) gets the keys of its kind that are ready together in
one call, each key still its own action with its own outcome.

A reconciler returns a `Result` (come back after `requeue_after` seconds, or on the next
event), or raises. An error is a `HiveError` (anything else is a bug: logged with its
traceback and reported as `InternalError`). A transient one brings the key back after the
queue's per-key back-off (1, 2, 4 … up to 300 s by default), and a key asked for again
meanwhile (a resync, a watch) still waits out its back-off, unless its record changed; a
`PermanentError` waits for the record to change. Either way the reconciler's `failed`
records the failure in its own words (status and narration). A reconcile that returns
ends the key's streak.

Each reconcile is counted, timed and (when it raised) counted as an error, by kind
(`ReconcileMetrics`, exported on `/metrics`); a batch's time is shared by its keys.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Protocol, runtime_checkable

from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict

from hive.core.clock import Clock
from hive.core.store import Store
from hive.errors import HiveError, InternalError, PermanentError
from hive.model.ids import Kind, ObjectKey
from hive.model.text import show_text
from hive.runtime.metrics import ReconcileMetrics
from hive.runtime.queue import WorkQueue
from hive.runtime.status_store import StatusStore

log = logging.getLogger(__name__)


class Result(BaseModel):
    """What a reconcile asks of the queue: come back after `requeue_after` seconds (None:
    only when something changes). `in_progress`: what it did has no outcome yet (a
    download waiting for a slot, a spawn that runs on its own), so the key's failure
    streak goes on until a reconcile ends with one (controller-runtime's `Requeue`,
    which does not `Forget` either)."""

    model_config = ConfigDict(frozen=True)

    requeue_after: float | None = None
    in_progress: bool = False


class Reconciler(Protocol):
    """One per kind of record (Model, Worker)."""

    @property
    def kind(self) -> Kind: ...

    async def reconcile(self, key: ObjectKey) -> Result:
        """Observe, decide, act for `key`, reading the world afresh; raise on failure."""
        ...

    def failed(
        self, key: ObjectKey, error: HiveError, *, attempt: int, retry_in: float | None
    ) -> None:
        """Record and narrate that reconciling `key` failed: `attempt` failures in a row,
        tried again in `retry_in` seconds (None: a permanent failure, which waits for
        the record to change)."""
        ...


@runtime_checkable
class BatchReconciler(Reconciler, Protocol):
    """A reconciler that also takes the keys of its kind ready at once, each still one
    action per key: an outcome per key, in order (a `Result`, or what its reconcile
    raised)."""

    async def reconcile_batch(self, keys: Sequence[ObjectKey]) -> list[Result | Exception]: ...


#: The most keys a batch holds: a batch runs without yielding to the loop.
BATCH = 32


class _Failure(BaseModel):
    model_config = ConfigDict(frozen=True)

    generation: int
    permanent: bool


class Controller:
    def __init__(
        self,
        *,
        queue: WorkQueue,
        store: Store,
        statuses: StatusStore,
        clock: Clock,
        reconcilers: Iterable[Reconciler],
        workers: int,
        metrics: ReconcileMetrics | None = None,
    ) -> None:
        self._queue = queue
        self._store = store
        self._statuses = statuses
        self._clock = clock
        self._reconcilers = {r.kind: r for r in reconcilers}
        self._workers = workers
        #: Counted for /metrics (the manager's; a controller of its own in a unit test).
        self._metrics = metrics or ReconcileMetrics(CollectorRegistry())
        for kind in self._reconcilers:
            self._metrics.declare(kind.value)
        #: Keys whose last reconcile failed, and at which generation of their record.
        self._failures: dict[ObjectKey, _Failure] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for _ in range(self._workers):
            self._tasks.append(asyncio.create_task(self._work(), name="reconcile worker"))

    async def stop(self) -> None:
        """Ends the workers (the queue is shut down first by the caller: none takes more).
        A worker that died of a bug is logged, never raised: hive's stop goes on."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("a reconcile worker had died")
        self._tasks.clear()

    def expedite(self, key: ObjectKey) -> None:
        """Someone asked for `key` explicitly (an API deletion): it runs at its next turn,
        whatever its back-off (the streak ends, as when its record changes)."""
        if key in self._failures:
            self._succeeded(key)

    async def _work(self) -> None:
        while (raw := await self._queue.get()) is not None:
            keys = [ObjectKey(raw)]
            reconciler = self._reconcilers[keys[0].kind]
            if isinstance(reconciler, BatchReconciler):
                # The keys of its kind ready now come along (B6: 100 Worker records
                # removed at once get their SIGTERMs in one tight loop).
                more = self._queue.take(f"{keys[0].kind.value}/", limit=BATCH - 1)
                keys += [ObjectKey(k) for k in more]
            try:
                if len(keys) == 1:
                    await self.process(keys[0])
                else:
                    assert isinstance(reconciler, BatchReconciler)
                    await self._process_batch(reconciler, keys)
            finally:
                for key in keys:
                    self._queue.done(key)
            # A reconcile that never awaited (a spawn, a SIGTERM) and a queue with keys
            # waiting would otherwise run a whole burst without letting health checks, the
            # API or the event stream in.
            await asyncio.sleep(0)

    async def process(self, key: ObjectKey) -> None:
        """One reconcile of `key`, with its retry bookkeeping."""
        if self._still_failing(key):
            return
        reconciler = self._reconcilers[key.kind]
        began = self._clock.monotonic()
        try:
            result = await reconciler.reconcile(key)
        except Exception as exc:
            self._count(key, began, share=1, error=exc)
            self._failed(key, reconciler, exc)
            return
        self._count(key, began, share=1, error=None)
        self._settled(key, result)

    async def _process_batch(self, reconciler: BatchReconciler, keys: list[ObjectKey]) -> None:
        """Keys of one kind reconciled together, each with its own retry bookkeeping."""
        ready = [key for key in keys if not self._still_failing(key)]
        began = self._clock.monotonic()
        try:
            outcomes = await reconciler.reconcile_batch(ready)
        except Exception as exc:  # a bug in the batch itself: each key failed with it
            outcomes = [exc] * len(ready)
        for key, outcome in zip(ready, outcomes, strict=True):
            error = outcome if isinstance(outcome, Exception) else None
            self._count(key, began, share=len(ready), error=error)
            if isinstance(outcome, Exception):
                self._failed(key, reconciler, outcome)
            else:
                self._settled(key, outcome)

    def _count(self, key: ObjectKey, began: float, *, share: int, error: Exception | None) -> None:
        """One reconcile of `key` for the metrics: its share of the time since `began`."""
        reason = None
        if error is not None:
            reason = error.reason if isinstance(error, HiveError) else InternalError.reason
        seconds = (self._clock.monotonic() - began) / share
        self._metrics.observe(key.kind.value, seconds, error=reason)

    def _settled(self, key: ObjectKey, result: Result) -> None:
        if not result.in_progress:
            self._succeeded(key)
        if result.requeue_after is not None:
            self._queue.add_after(key, result.requeue_after)

    def _still_failing(self, key: ObjectKey) -> bool:
        """A key that failed waits out its back-off (or, permanent, a new record) unless
        its record changed since: then it starts afresh, at once."""
        failure = self._failures.get(key)
        if failure is None:
            return False
        if self._store.desired(key) is None or self._store.generation(key) != failure.generation:
            self._succeeded(key)
            return False
        if failure.permanent:
            return True
        remaining = self._queue.backing_off(key)
        if remaining > 0:
            self._queue.add_after(key, remaining)
            return True
        return False

    def _failed(self, key: ObjectKey, reconciler: Reconciler, exc: Exception) -> None:
        if isinstance(exc, HiveError):
            error = exc
        else:
            log.error("reconcile of %s failed", key, exc_info=exc)
            error = InternalError.of(exc, show_text(str(exc)))
        permanent = isinstance(error, PermanentError)
        self._failures[key] = _Failure(generation=self._store.generation(key), permanent=permanent)
        if permanent:
            self._queue.forget(key)
            reconciler.failed(key, error, attempt=1, retry_in=None)
            return
        delay = self._queue.add_rate_limited(key)
        attempt = self._queue.failures(key)
        self._statuses.retrying(
            key, failures=attempt, next_retry=self._clock.now() + timedelta(seconds=delay)
        )
        reconciler.failed(key, error, attempt=attempt, retry_in=delay)

    def _succeeded(self, key: ObjectKey) -> None:
        self._failures.pop(key, None)
        self._queue.forget(key)
        self._statuses.succeeded(key)
