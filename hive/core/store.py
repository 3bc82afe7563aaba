"""The desired store: merges every source's record set, one owner per `Kind/name`.

Pure bookkeeping in memory; sources call `replace`, the runtime reads `desired`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from hive.core.clock import Clock
from hive.core.parse import Problem
from hive.model.gitsource import GitStatus
from hive.model.ids import Kind, ObjectKey, SourceName
from hive.model.manifests import Origin, Record, WorkerManifest, selected


class SourceState(BaseModel):
    """What `/v1/status` shows of a source."""

    model_config = ConfigDict(frozen=True)

    name: SourceName
    kind: str
    location: str
    synced: bool = False
    last_sync_time: datetime | None = None
    records: int = 0
    errors: tuple[Problem, ...] = ()
    #: Records this source declares whose spec.hiveSelector does not select this hive:
    #: not desired here, and no error (they are for other hives).
    not_selected: int = 0
    #: Their keys, sorted; the first `NOT_SELECTED_SHOWN` only (`not_selected` counts all).
    not_selected_keys: tuple[ObjectKey, ...] = ()
    #: A git source's revisions and last syncs (None for other sources).
    git: GitStatus | None = None


class ConflictNote(BaseModel):
    """A record that lost ownership of its key to another source's record."""

    model_config = ConfigDict(frozen=True)

    key: ObjectKey
    owner: Origin
    other: Origin

    @property
    def message(self) -> str:
        return (
            f"{self.key} is declared by {self.other.described()} "
            f"but is owned by {self.owner.described()}; "
            "the first owner keeps it: remove one of the two declarations"
        )


class ReplaceResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    #: Keys whose owning record changed (added, removed, or different).
    changed: frozenset[ObjectKey]
    new_conflicts: tuple[ConflictNote, ...] = ()
    #: Keys whose set of claiming sources changed without a new owning record (a conflict
    #: that ended, for one): their status needs another look.
    touched: frozenset[ObjectKey] = frozenset()


#: How many keys of unselected records a source's state lists.
NOT_SELECTED_SHOWN = 100


def _fingerprint(record: Record) -> str:
    m = record.manifest
    return json.dumps(
        [m.spec.model_dump(mode="json"), m.metadata.model_dump(mode="json")], sort_keys=True
    )


class Store:
    """Every source's last good record set, merged. Sources own their sets whole.

    The one place selectors apply, for every source: a record whose spec.hiveSelector does
    not select `labels` (this hive's) is counted on its source and otherwise left out, so it
    claims no key (another source may own that key for this hive). `labels` None: every
    record applies."""

    def __init__(self, *, clock: Clock, labels: Mapping[str, str] | None = None) -> None:
        self._clock = clock
        self.labels: dict[str, str] | None = None if labels is None else dict(labels)
        self._sources: dict[SourceName, SourceState] = {}
        self._records: dict[SourceName, dict[ObjectKey, Record]] = {}
        #: Sources that claim each key, in the order they claimed it; the first owns it.
        self._claims: dict[ObjectKey, list[SourceName]] = {}
        self._generations: dict[ObjectKey, tuple[int, str]] = {}
        #: The Workers whose owning record names each Model (a Model's reconcile asks for
        #: them: walking every record each time made thousands of Models quadratic).
        self._workers_by_model: dict[str, set[str]] = {}

    # -- sources -------------------------------------------------------------------------
    def register(self, name: SourceName, *, kind: str, location: str) -> None:
        if name in self._sources:
            raise ValueError(f"source {name!r} is registered twice")
        self._sources[name] = SourceState(name=name, kind=kind, location=location)
        self._records[name] = {}

    def unregister(self, name: SourceName) -> None:
        """Forget a source that holds no records (an HTTP source deleted by its client)."""
        if self._records.get(name):
            raise ValueError(f"source {name!r} still holds records")
        self._sources.pop(name, None)
        self._records.pop(name, None)

    def sources(self) -> list[SourceState]:
        return list(self._sources.values())

    @property
    def all_synced(self) -> bool:
        """True once every source has completed a first sync: only then may hive prune."""
        return all(s.synced for s in self._sources.values())

    def synced(self, name: SourceName) -> bool:
        return self._sources[name].synced

    def set_errors(self, name: SourceName, errors: Iterable[Problem]) -> None:
        self._sources[name] = self._sources[name].model_copy(update={"errors": tuple(errors)})

    def set_detail(self, name: SourceName, *, git: GitStatus) -> None:
        self._sources[name] = self._sources[name].model_copy(update={"git": git})

    def mark_synced(self, name: SourceName) -> None:
        self._sources[name] = self._sources[name].model_copy(
            update={"synced": True, "last_sync_time": self._clock.now()}
        )

    # -- records -------------------------------------------------------------------------
    def replace(self, name: SourceName, records: Iterable[Record]) -> ReplaceResult:
        """Make `records` the whole set of source `name`; returns the keys that changed.
        Records for other hives (their selector does not select this one) are left out."""
        new: dict[ObjectKey, Record] = {}
        skipped: set[ObjectKey] = set()
        for r in records:
            if selected(r.manifest, self.labels):
                new[r.key] = r
            else:
                skipped.add(r.key)
        old = self._records[name]
        before = {key: self.desired(key) for key in set(old) | set(new)}
        owners_before = {key: self.owner(key) for key in before}
        self._records[name] = new
        for key in set(old) - set(new):
            self._claims[key].remove(name)
            if not self._claims[key]:
                del self._claims[key]
        for key in set(new) - set(old):
            self._claims.setdefault(key, []).append(name)
        self._sources[name] = self._sources[name].model_copy(
            update={
                "records": len(new),
                "not_selected": len(skipped),
                "not_selected_keys": tuple(sorted(skipped)[:NOT_SELECTED_SHOWN]),
            }
        )

        changed: set[ObjectKey] = set()
        touched = (set(old) ^ set(new)) & set(before)
        conflicts: list[ConflictNote] = []
        for key, was in before.items():
            now = self.desired(key)
            if now != was:
                changed.add(key)
                if now is not None:
                    self._bump_generation(key, now)
                if key.kind is Kind.WORKER:
                    self._index_worker(key.name, was, now)
            newly_claimed = key in new and key not in old
            owner = self.owner(key)
            lost = newly_claimed and owner != name
            if lost or (owner != owners_before[key] and len(self._claims.get(key, ())) > 1):
                conflicts.extend(self._conflicts_of(key))
        return ReplaceResult(
            changed=frozenset(changed),
            new_conflicts=tuple(conflicts),
            touched=frozenset(touched - changed),
        )

    def _bump_generation(self, key: ObjectKey, record: Record) -> None:
        fingerprint = _fingerprint(record)
        generation, previous = self._generations.get(key, (0, ""))
        if previous != fingerprint:
            self._generations[key] = (generation + 1, fingerprint)

    def _index_worker(self, name: str, was: Record | None, now: Record | None) -> None:
        for record, keep in ((was, False), (now, True)):
            if record is None or not isinstance(record.manifest, WorkerManifest):
                continue
            model = record.manifest.spec.model
            names = self._workers_by_model.setdefault(model, set())
            if keep:
                names.add(name)
            else:
                names.discard(name)
                if not names:
                    del self._workers_by_model[model]

    def workers_naming(self, model: str) -> set[str]:
        """The Workers whose owning record names `model` (any `state`)."""
        return set(self._workers_by_model.get(model, ()))

    def owner(self, key: ObjectKey) -> SourceName | None:
        claims = self._claims.get(key)
        return claims[0] if claims else None

    def claimants(self, key: ObjectKey) -> tuple[SourceName, ...]:
        """The sources that declare `key` for this hive, the owner first."""
        return tuple(self._claims.get(key, ()))

    def desired(self, key: ObjectKey) -> Record | None:
        owner = self.owner(key)
        return None if owner is None else self._records[owner][key]

    def generation(self, key: ObjectKey) -> int:
        return self._generations.get(key, (0, ""))[0]

    def _conflicts_of(self, key: ObjectKey) -> list[ConflictNote]:
        claims = self._claims.get(key, [])
        if len(claims) < 2:
            return []
        owner = self._records[claims[0]][key].origin
        return [
            ConflictNote(key=key, owner=owner, other=self._records[s][key].origin)
            for s in claims[1:]
        ]

    def conflicts(self, key: ObjectKey) -> list[ConflictNote]:
        return self._conflicts_of(key)

    def declared_keys(self) -> set[ObjectKey]:
        return set(self._claims)

    def records(self) -> list[Record]:
        """The owning record of every key."""
        return [r for key in self._claims if (r := self.desired(key)) is not None]
