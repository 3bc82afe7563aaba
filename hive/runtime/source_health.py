"""Each source's health, as Flux's kustomize-controller gates on it: a source is `Ready`
only once every object it declares has converged, `Reconciling` until then (the objects
still pending named), `Stalled` when it cannot move without a change (an invalid commit, a
missing path, a refused emptying).

An object has converged when its status has observed the record's generation and it is
what the record asks: a Model `Available` (or `Absent` for `state: absent`), a Worker
`Running` and healthy (or stopped for `state: stopped`). An object `Degraded` (a worker in
CrashLoopBackOff, a model whose download failed) counts as failing: hive keeps retrying,
so the source is `Reconciling` and not Ready, with the reason `HealthCheckFailed`. A
record another source owns is failing too (`Conflict`): the source did not get its way.

Kept incrementally: every status write and every changed record places one key (O(number
of sources)); a read costs the few objects it names. `source_ready` is narrated when a
source becomes Ready (for a git source: the revision, and how long since it applied),
`source_unhealthy` when its first object starts failing."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from hive.core.clock import Clock
from hive.core.store import SourceState, Store
from hive.model.events import Level
from hive.model.ids import ObjectKey, SourceName
from hive.model.manifests import ModelManifest, WorkerManifest
from hive.model.status import ConditionType, ModelPhase, ObjectStatus, WorkerPhase
from hive.narration.bus import Bus
from hive.runtime.status_store import StatusStore

#: How many pending or failing objects a condition's message names.
NAMED = 10
#: Outcomes of a git sync that leave a commit which cannot be applied as it is.
_STALLED = {
    "invalid": "InvalidManifests",
    "path-missing": "PathMissing",
    "refused-empty": "RefusedEmpty",
}


class SourceCondition(BaseModel):
    """A source's condition: Ready, Reconciling or Stalled, as Flux shows them."""

    model_config = ConfigDict(frozen=True)

    type: str
    status: str
    reason: str
    message: str = ""


class _Health:
    """One source's objects that have not converged: why each is pending, or failing."""

    def __init__(self) -> None:
        self.pending: dict[ObjectKey, str] = {}
        self.failing: dict[ObjectKey, str] = {}
        self.ready = False
        self.unhealthy = False
        #: When the source's set last changed (how long convergence took).
        self.changed_at: datetime | None = None


class SourceHealth:
    def __init__(self, *, store: Store, statuses: StatusStore, bus: Bus, clock: Clock) -> None:
        self._store = store
        self._statuses = statuses
        self._bus = bus
        self._clock = clock
        self._health: dict[SourceName, _Health] = {}
        statuses.on_write(self.object_written)

    # -- what moves it -------------------------------------------------------------------
    def object_written(self, key: ObjectKey) -> None:
        """`key`'s status was written: place it, and tell what changed."""
        self._announce(self._place(key))

    def records_changed(self, keys: Iterable[ObjectKey]) -> None:
        """A source replaced its set (`keys` changed or changed hands)."""
        now = self._clock.now()
        names: set[SourceName] = set()
        for key in keys:
            names |= self._place(key)
        for name in names:
            self._of(name).changed_at = now
        self._announce(names)

    def _of(self, name: SourceName) -> _Health:
        health = self._health.get(name)
        if health is None:
            health = self._health[name] = _Health()
        return health

    def _place(self, key: ObjectKey) -> set[SourceName]:
        """Put `key` where it belongs now; the sources whose health it touched."""
        touched = {n for n, h in self._health.items() if key in h.pending or key in h.failing}
        for name in touched:
            self._health[name].pending.pop(key, None)
            self._health[name].failing.pop(key, None)
        claimants = self._store.claimants(key)
        for i, name in enumerate(claimants):
            health = self._of(name)
            touched.add(name)
            if i > 0:
                health.failing[key] = f"owned by {claimants[0]}"
                continue
            pending, failing = self._judge(key)
            if failing is not None:
                health.failing[key] = failing
            elif pending is not None:
                health.pending[key] = pending
        return touched

    def _judge(self, key: ObjectKey) -> tuple[str | None, str | None]:
        """(why `key` is pending, why it is failing): both None once it has converged."""
        record = self._store.desired(key)
        status = self._statuses.get(key)
        if record is None:
            return None, None
        if status is None:
            return "not reconciled yet", None
        if status.observedGeneration < self._store.generation(key):
            return f"generation {self._store.generation(key)} not observed yet", None
        degraded = status.condition(ConditionType.DEGRADED)
        if degraded is not None and degraded.status == "True":
            return None, f"{status.phase}: {degraded.reason}"
        if _converged(record.manifest, status):
            return None, None
        return f"{status.phase}" + (f" ({status.message})" if status.message else ""), None

    def _announce(self, names: Iterable[SourceName]) -> None:
        for name in names:
            health = self._of(name)
            state = self._state(name)
            if state is None:
                continue
            ready = not health.pending and not health.failing and not state.errors
            if ready and not health.ready:
                self._tell_ready(state, health)
            unhealthy = bool(health.failing)
            if unhealthy and not health.unhealthy:
                key, why = sorted(health.failing.items())[0]
                self._bus.emit(
                    "source_unhealthy",
                    f"{name}: {key} is failing ({why}); the source is not Ready until it converges",
                    level=Level.WARNING,
                    data={"source": name, "object": str(key), "reason": why},
                )
            health.ready, health.unhealthy = ready, unhealthy

    def _tell_ready(self, state: SourceState, health: _Health) -> None:
        revision = state.git.lastAppliedRevision if state.git else None
        took = (
            f" in {(self._clock.now() - health.changed_at).total_seconds():.1f} s"
            if health.changed_at is not None
            else ""
        )
        what = f"revision {revision}" if revision else "its records"
        self._bus.emit(
            "source_ready",
            f"{state.name}: {what} converged: {state.records} object(s) Available or Running{took}",
            data={"source": state.name, "revision": revision, "objects": state.records},
        )

    def _state(self, name: SourceName) -> SourceState | None:
        return next((s for s in self._store.sources() if s.name == name), None)

    # -- what /v1/status shows -----------------------------------------------------------
    def conditions(self, state: SourceState) -> tuple[SourceCondition, ...]:
        """`state`'s Ready, Reconciling and Stalled conditions now."""
        health = self._health.get(state.name) or _Health()
        git = state.git
        revision = git.lastAppliedRevision if git else None
        of = f"revision {revision}" if revision else "the records in force"
        kept = f"revision {revision} stays" if revision else "the last good records stay"
        last = git.history[0] if git and git.history else None
        stalled_reason = None
        if last is not None and last.outcome in _STALLED and state.errors:
            stalled_reason = _STALLED[last.outcome]
        elif git is None and state.errors:
            stalled_reason = "InvalidManifests"
        if stalled_reason is not None:
            message = f"{state.errors[0]}; {kept} in force"
            return (
                _cond("Ready", "False", stalled_reason, message),
                _cond("Reconciling", "False", stalled_reason, ""),
                _cond("Stalled", "True", stalled_reason, message),
            )
        if state.errors:  # a fetch failed: retried every interval
            message = f"{state.errors[0]}; {kept} in force"
            return (
                _cond("Ready", "False", "FetchFailed", message),
                _cond("Reconciling", "False", "FetchFailed", ""),
                _cond("Stalled", "False", "FetchFailed", ""),
            )
        if git is not None and revision is None:
            message = "not fetched yet"
            return (
                _cond("Ready", "Unknown", "Progressing", message),
                _cond("Reconciling", "True", "Progressing", message),
                _cond("Stalled", "False", "Progressing", ""),
            )
        total = state.records
        if health.failing:
            message = f"{of}: {len(health.failing)} of {total} object(s) failing: " + _named(
                health.failing
            )
            if health.pending:
                message += f"; {len(health.pending)} pending: {_named(health.pending)}"
            return (
                _cond("Ready", "False", "HealthCheckFailed", message),
                _cond("Reconciling", "True", "HealthCheckFailed", message),
                _cond("Stalled", "False", "HealthCheckFailed", ""),
            )
        if health.pending:
            message = f"{of}: waiting for {len(health.pending)} of {total} object(s): " + _named(
                health.pending
            )
            return (
                _cond("Ready", "False", "Progressing", message),
                _cond("Reconciling", "True", "Progressing", message),
                _cond("Stalled", "False", "Progressing", ""),
            )
        message = f"{of}: {total} object(s) converged"
        return (
            _cond("Ready", "True", "Succeeded", message),
            _cond("Reconciling", "False", "Succeeded", ""),
            _cond("Stalled", "False", "Succeeded", ""),
        )

    def pending(self, name: SourceName) -> list[str]:
        """The objects of source `name` not converged yet, `Kind/name`, sorted."""
        health = self._health.get(name) or _Health()
        return sorted(str(k) for k in (*health.pending, *health.failing))


def _converged(manifest: object, status: ObjectStatus) -> bool:
    if isinstance(manifest, ModelManifest):
        wanted = ModelPhase.ABSENT if manifest.spec.state == "absent" else ModelPhase.AVAILABLE
        return status.phase == wanted
    if isinstance(manifest, WorkerManifest):
        if manifest.spec.state == "stopped":
            return status.phase == WorkerPhase.DEAD
        ready = status.condition(ConditionType.READY)
        return status.phase == WorkerPhase.RUNNING and ready is not None and ready.status == "True"
    return True


def _named(objects: dict[ObjectKey, str]) -> str:
    shown = sorted(objects.items())[:NAMED]
    text = ", ".join(f"{key} ({why})" for key, why in shown)
    return text + (f" and {len(objects) - NAMED} more" if len(objects) > NAMED else "")


def _cond(kind: str, status: str, reason: str, message: str) -> SourceCondition:
    return SourceCondition(type=kind, status=status, reason=reason, message=message)
