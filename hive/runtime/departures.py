"""Which models went, and why: the word the workers of a model are stopped with.

A model is gone when its file is no longer on disk (`rm -rf` by hand, a forced `DELETE`,
`state: absent` carried out) or when its record says `state: absent` (its files are about
to go). `ModelPresence` reports what it observes; the Worker reconciler asks why (as a
`ModelView`, see hive/core/worker_plan.py).
"""

from __future__ import annotations

from hive.core.store import Store
from hive.core.worker_plan import ABSENT, BY_API, REMOVED, ModelView, on_disk
from hive.model.ids import Kind, ObjectKey
from hive.model.manifests import ModelManifest
from hive.model.observed import ObservedModel

__all__ = ["ABSENT", "BY_API", "REMOVED", "Departures", "on_disk"]


class Departures:
    """What hive last saw of each model's presence, the models that went since (and why),
    and the API deletions in flight (so that their going is not told as a removal by
    hand)."""

    def __init__(self, *, store: Store) -> None:
        self._store = store
        self._present: set[str] = set()
        self._gone: dict[str, str] = {}
        self._by_api: set[str] = set()

    def deleting_by_api(self, name: str) -> None:
        """A `DELETE /v1/models/{name}` is about to remove the files."""
        self._by_api.add(name)

    def absent_by_record(self, name: str) -> bool:
        record = self._store.desired(ObjectKey.of(Kind.MODEL, name))
        return (
            record is not None
            and isinstance(record.manifest, ModelManifest)
            and record.manifest.spec.state == "absent"
        )

    def why(self, name: str) -> str:
        """Why the model is gone (or going), as the narration says it."""
        if name in self._by_api:
            return BY_API
        if self.absent_by_record(name):
            return ABSENT
        return self._gone.get(name, REMOVED)

    def observed(self, name: str, observed: ObservedModel | None) -> str | None:
        """Record what the catalog shows of `name` now; the reason if it just went (a model
        that was on disk and is not any more), else None."""
        if on_disk(observed):
            self._present.add(name)
            self._gone.pop(name, None)
            self._by_api.discard(name)
            return None
        if name not in self._present:
            return None
        self._present.discard(name)
        why = self.why(name)
        self._by_api.discard(name)
        self._gone[name] = why
        return why

    def gone(self, name: str) -> str | None:
        """Why a worker of `name` cannot run on it: the reason it went, or its record's
        `state: absent`; None for a model that is there, or that was never seen (a model
        not fetched yet is not "gone", nor one whose record wants it back after `state:
        absent`)."""
        if self.absent_by_record(name):
            return ABSENT
        why = self._gone.get(name)
        return None if why == ABSENT else why

    def view(self, name: str, observed: ObservedModel | None) -> ModelView:
        """What the workers of `name` are decided on (hive/core/worker_plan.py)."""
        return ModelView(name=name, observed=observed, gone=self.gone(name), why=self.why(name))

    def known(self) -> set[str]:
        """The models seen on disk, and those that went since."""
        return self._present | set(self._gone)

    def retain(self, used: set[str]) -> None:
        """Forget why models went that no worker uses any more (bounded memory)."""
        for name in set(self._gone) - used:
            del self._gone[name]
