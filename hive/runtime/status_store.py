"""The status store: the one place statuses live. Reconcilers write through it, the API and
the metrics read it.

A write is an update (phase, reason, message, conditions) merged into the previous status
by `merge_status`: it stamps the record's generation (`observedGeneration`), keeps a
condition's `lastTransitionTime` unless its status moved, adds the `Conflict` condition
of a key declared twice, and the retry streak the controller keeps (`failures`,
`nextRetry`). Watchers hear every phase change (the manager uses it to wake the Workers
of a Model that became Available).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

from hive.core.clock import Clock
from hive.core.status import merge_status
from hive.core.store import Store
from hive.model.ids import ObjectKey
from hive.model.status import ConditionType, ConditionUpdate, ObjectStatus, StatusUpdate

#: Called with the key, its status before and after (None: no status) when its phase moves.
PhaseWatcher = Callable[[ObjectKey, ObjectStatus | None, ObjectStatus | None], None]


class StatusStore:
    def __init__(self, *, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._statuses: dict[ObjectKey, ObjectStatus] = {}
        #: The retry streak of each key that is failing: failures in a row, next try.
        self._retries: dict[ObjectKey, tuple[int, datetime | None]] = {}
        self._watchers: list[PhaseWatcher] = []
        self._writes: list[Callable[[ObjectKey], None]] = []

    # -- reads -----------------------------------------------------------------------------
    def get(self, key: ObjectKey) -> ObjectStatus | None:
        return self._statuses.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._statuses

    def __len__(self) -> int:
        return len(self._statuses)

    def __iter__(self) -> Iterator[ObjectKey]:
        return iter(self._statuses)

    def items(self) -> list[tuple[ObjectKey, ObjectStatus]]:
        return list(self._statuses.items())

    def values(self) -> list[ObjectStatus]:
        return list(self._statuses.values())

    def __getitem__(self, key: ObjectKey) -> ObjectStatus:
        return self._statuses[key]

    # -- writes ----------------------------------------------------------------------------
    def watch(self, watcher: PhaseWatcher) -> None:
        self._watchers.append(watcher)

    def on_write(self, callback: Callable[[ObjectKey], None]) -> None:
        """Call `callback` with the key after every write or forget (phase moved or not:
        a new observedGeneration matters to whoever waits for convergence)."""
        self._writes.append(callback)

    def set(self, key: ObjectKey, update: StatusUpdate) -> ObjectStatus:
        """Merge `update` into `key`'s status; returns the new status."""
        conflicts = self._store.conflicts(key)
        if conflicts:
            declared_twice = ConditionUpdate(
                type=ConditionType.CONFLICT,
                status="True",
                reason="DeclaredTwice",
                message=conflicts[0].message,
            )
            update = update.model_copy(update={"conditions": (*update.conditions, declared_twice)})
        failures, next_retry = self._retries.get(key, (0, None))
        now = self._clock.now()
        if next_retry is not None and next_retry <= now:
            next_retry = None  # the retry is under way
        previous = self._statuses.get(key)
        status = merge_status(
            previous,
            update,
            generation=self._store.generation(key),
            now=now,
            failures=failures,
            next_retry=next_retry,
        )
        self._statuses[key] = status
        if previous is None or previous.phase != status.phase:
            self._tell(key, previous, status)
        for callback in self._writes:
            callback(key)
        return status

    def forget(self, key: ObjectKey) -> None:
        """`key` has no status any more (its record went, and nothing of it is left)."""
        previous = self._statuses.pop(key, None)
        self._retries.pop(key, None)
        if previous is not None:
            self._tell(key, previous, None)
            for callback in self._writes:
                callback(key)

    # -- the controller's retry streak -------------------------------------------------------
    def retrying(self, key: ObjectKey, *, failures: int, next_retry: datetime | None) -> None:
        """The controller counts a failure of `key`: statuses written from now on carry it
        (until `succeeded`)."""
        self._retries[key] = (failures, next_retry)

    def succeeded(self, key: ObjectKey) -> None:
        """The streak of `key` ended: its status says so at once."""
        if self._retries.pop(key, None) is None:
            return
        status = self._statuses.get(key)
        if status is not None:
            self._statuses[key] = status.model_copy(update={"failures": 0, "nextRetryTime": None})

    def _tell(
        self, key: ObjectKey, before: ObjectStatus | None, after: ObjectStatus | None
    ) -> None:
        for watcher in self._watchers:
            watcher(key, before, after)
