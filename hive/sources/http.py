"""Sources written over HTTP: `api` (jobs, `hive apply`), `queen` (the Queen's
`PUT /v1/desired/queen`) and any other name a client PUTs to `/v1/desired/{name}`.

Each is one record set, written whole to `<home>/state/desired/<name>.json` (atomically,
before the store sees it), so a restarted hive starts with exactly what it had. Unlike a
watched directory, every change arrives whole and already validated: a request applies
completely or not at all, and a set that cannot be persisted is not applied.

A persisted file that cannot be read back (corrupted, or from a newer hive) is kept as it
is and reported on the source; the source then counts as not synced, so nothing is pruned
on its account until a PUT replaces the file.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hive.actuators.files import write_atomic
from hive.core.parse import Problem
from hive.core.store import ReplaceResult, Store
from hive.errors import Conflict, NotFound, TransientError, ValidationFailed
from hive.model.events import Level
from hive.model.ids import ObjectKey, SourceName, name_problem
from hive.model.manifests import MANIFEST_TYPES, Manifest, ModelManifest, Origin, Record
from hive.model.text import clip, show
from hive.narration.bus import Bus
from hive.sources.base import OnChange

log = logging.getLogger(__name__)

#: The sources every hive has: jobs and `hive apply` write `api`; the Queen writes `queen`.
API: SourceName = SourceName("api")
QUEEN: SourceName = SourceName("queen")
BUILT_IN = (API, QUEEN)
#: The most sources a client may create over HTTP (beyond the built-in ones).
MAX_SOURCES = 64
#: The most records one HTTP source may hold.
MAX_RECORDS = 10_000
FORMAT_VERSION = 1


def desired_dir(home: Path) -> Path:
    return home / "state" / "desired"


def http_source_problem(name: str) -> str | None:
    """Why `name` cannot name an HTTP source, or None. Directory (`dir:…`) and git
    (`git:…`) sources are named by hive and never written over HTTP."""
    if ":" in name:
        return (
            f"{show(name)} names a watched directory or git source; only plain names "
            "(api, queen, or your own) are written over HTTP"
        )
    problem = name_problem(name)
    return None if problem is None else f"source name {problem}"


def _check_records(records: Sequence[Record], *, source: SourceName) -> None:
    """What the store cannot check: one record per key, the origin is this source, and
    `file:` paths are absolute (there is no manifest file to be relative to)."""
    problems: list[Problem] = []
    seen: set[ObjectKey] = set()
    for index, record in enumerate(records):
        where = f"source {source}, record {index}"
        if record.key in seen:
            problems.append(Problem(file=where, message=f"{record.key} is declared twice"))
        seen.add(record.key)
        if record.origin.source != source:
            raise ValueError(f"record {record.key} belongs to {record.origin.source}")
        manifest = record.manifest
        if isinstance(manifest, ModelManifest) and manifest.spec.source.startswith("file:"):
            path = manifest.spec.source.removeprefix("file:")
            if not path.startswith("/"):
                problems.append(
                    Problem(
                        file=where,
                        field="spec.source",
                        message=f"{show(manifest.spec.source)}: a file: source sent over "
                        "HTTP must be an absolute path (file:/path/model.gguf); there is no "
                        "manifest file for a relative one to start from",
                    )
                )
    if len(records) > MAX_RECORDS:
        problems.append(
            Problem(
                file=f"source {source}",
                message=f"{len(records)} records; at most {MAX_RECORDS} are allowed in one "
                "source (split them over several sources)",
            )
        )
    if problems:
        raise ValidationFailed(
            f"{len(problems)} problem(s): {clip('; '.join(map(str, problems)))}",
            problems=[str(p) for p in problems],
        )


def _manifest_json(manifest: Manifest) -> dict[str, Any]:
    return manifest.model_dump(mode="json", exclude_none=True)


def _load(path: Path, *, source: SourceName) -> tuple[Record, ...]:
    """The records persisted in `path`; raises ValueError saying what is wrong."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read it: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
        raise ValueError(f"not a version {FORMAT_VERSION} record set")
    docs = data.get("records", [])
    if not isinstance(docs, list):
        raise ValueError(f"`records` is a {type(docs).__name__}, not a list")
    records = []
    for index, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise ValueError(f"record {index} is a {type(doc).__name__}, not a manifest")
        kind = doc.get("kind")
        manifest_type = MANIFEST_TYPES.get(kind) if isinstance(kind, str) else None
        if manifest_type is None:
            raise ValueError(f"record {index}: unknown kind {show(kind)}")
        try:
            manifest = manifest_type.model_validate(doc)
        except ValidationError as exc:
            raise ValueError(f"record {index}: {exc.errors()[0]['msg']}") from None
        except Exception as exc:  # whatever else a hand-edited file provokes
            raise ValueError(f"record {index}: {type(exc).__name__}: {exc}") from None
        records.append(Record(manifest=manifest, origin=Origin(source=source)))
    return tuple(records)


def _persisted_names(directory: Path) -> list[SourceName]:
    if not directory.is_dir():
        return []
    return [SourceName(p.stem) for p in sorted(directory.glob("*.json"))]


class HttpSource:
    """One record set written over HTTP, persisted whole, applied whole."""

    def __init__(
        self, name: SourceName, *, home: Path, store: Store, bus: Bus, on_change: OnChange
    ) -> None:
        self.name = name
        self.path = desired_dir(home) / f"{name}.json"
        self._store = store
        self._bus = bus
        self._on_change = on_change
        self._records: dict[ObjectKey, Record] = {}
        self._lock = asyncio.Lock()
        #: Deleted (DELETE /v1/desired/{name}) or never written: a write that waited on the
        #: lock meanwhile is a 404, and leaves no file behind.
        self.dropped = False
        #: Whether a write of this source ever succeeded (or a file was there at start).
        self.written = False
        store.register(name, kind="http", location=f"/v1/desired/{name}")

    def _check_alive(self) -> None:
        if self.dropped:
            raise NotFound(
                f"source {self.name} was deleted meanwhile; PUT /v1/desired/{self.name} "
                "creates it again"
            )

    def records(self) -> tuple[Record, ...]:
        return tuple(self._records.values())

    def get(self, key: ObjectKey) -> Record | None:
        return self._records.get(key)

    async def load(self) -> None:
        """Read the persisted set (at start). A missing file is an empty set; an unreadable
        one stays on disk and leaves the source unsynced (nothing pruned on its account)."""
        try:
            records = await asyncio.to_thread(_load, self.path, source=self.name)
        except FileNotFoundError:
            self._store.mark_synced(self.name)
            return
        except ValueError as exc:
            problem = Problem(
                file=str(self.path),
                message=f"{clip(str(exc))}; the file is kept as it is and nothing this "
                f"source declared is pruned: PUT /v1/desired/{self.name} to replace it",
            )
            self._store.set_errors(self.name, [problem])
            self._bus.emit(
                "source_error", str(problem), level=Level.ERROR, data={"source": self.name}
            )
            return
        self._records = {r.key: r for r in records}
        self.written = True
        self._store.mark_synced(self.name)
        self._on_change(self._store.replace(self.name, records))

    async def replace(
        self, records: Sequence[Record], *, allow_empty: bool = False
    ) -> ReplaceResult:
        """Make `records` this source's whole set. Emptying a source that has records needs
        `allow_empty` (an empty PUT is more often a mistake than a wish to stop everything)."""
        async with self._lock:
            self._check_alive()
            if not records and self._records and not allow_empty:
                raise Conflict(
                    f"source {self.name} has {len(self._records)} record(s) and this would "
                    "remove them all; ask with ?allowEmpty=true to empty it, or DELETE "
                    f"/v1/desired/{self.name}"
                )
            return await self._write({r.key: r for r in records}, records)

    async def upsert(self, records: Sequence[Record]) -> ReplaceResult:
        """Add records, or replace those with the same key."""
        result, _ = await self.swap(records)
        return result

    async def swap(
        self, records: Sequence[Record]
    ) -> tuple[ReplaceResult, dict[ObjectKey, Record | None]]:
        """`upsert`, and what each key held just before (taken under the lock, so a write
        in between cannot make it stale): what an undo puts back."""
        async with self._lock:
            self._check_alive()
            before = {r.key: self._records.get(r.key) for r in records}
            new = dict(self._records)
            new.update((r.key, r) for r in records)
            return await self._write(new, records), before

    async def remove(self, keys: Iterable[ObjectKey]) -> ReplaceResult:
        """Drop the records with these keys (keys it does not hold are ignored)."""
        async with self._lock:
            self._check_alive()
            gone = set(keys)
            new = {k: r for k, r in self._records.items() if k not in gone}
            return await self._write(new, ())

    async def _write(self, new: dict[ObjectKey, Record], sent: Sequence[Record]) -> ReplaceResult:
        _check_records(sent, source=self.name)
        records = list(new.values())
        _check_records(records, source=self.name)
        body = {
            "version": FORMAT_VERSION,
            "source": self.name,
            "records": [_manifest_json(r.manifest) for r in records],
        }
        data = json.dumps(body, indent=1, ensure_ascii=False).encode()
        try:
            await asyncio.to_thread(self._persist, data)
        except OSError as exc:
            raise TransientError(
                f"cannot save source {self.name} to {self.path}: {exc.strerror or exc}; "
                "nothing was applied (free space under hive's home, then ask again)"
            ) from None
        self._records = new
        self.written = True
        self._store.set_errors(self.name, [])
        self._store.mark_synced(self.name)
        result = self._store.replace(self.name, records)
        self._on_change(result)
        return result

    def _persist(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self.path, data, mode=0o600)

    async def drop(self, *, final: bool) -> ReplaceResult:
        """Remove every record and the persisted file (DELETE /v1/desired/{name}); `final`:
        the source itself goes too, and any write that waited for this is a 404."""
        async with self._lock:
            self._check_alive()
            self.dropped = final
            await asyncio.to_thread(self.path.unlink, missing_ok=True)
            self._records = {}
            self._store.set_errors(self.name, [])
            self._store.mark_synced(self.name)
            result = self._store.replace(self.name, [])
            self._on_change(result)
            return result

    async def abandon(self) -> bool:
        """Mark a source that was never written as dropped (its creator's first write
        failed); False when a write succeeded since, or it is gone already."""
        async with self._lock:
            if self.written or self.dropped:
                return False
            self.dropped = True
            return True


class HttpSources:
    """Every HTTP source: the built-in `api` and `queen`, and those clients created."""

    def __init__(self, *, home: Path, store: Store, bus: Bus, on_change: OnChange) -> None:
        self._home = home
        self._store = store
        self._bus = bus
        self._on_change = on_change
        self._sources: dict[SourceName, HttpSource] = {}
        for name in BUILT_IN:
            self._add(name)

    def _add(self, name: SourceName) -> HttpSource:
        source = HttpSource(
            name, home=self._home, store=self._store, bus=self._bus, on_change=self._on_change
        )
        self._sources[name] = source
        return source

    async def load(self) -> None:
        """Every persisted set, built-in or not (at start, before anything is pruned)."""
        found = await asyncio.to_thread(_persisted_names, desired_dir(self._home))
        for name in found:
            if name not in self._sources and http_source_problem(name) is None:
                self._add(name)
        for source in self._sources.values():
            await source.load()

    def names(self) -> list[SourceName]:
        return sorted(self._sources)

    def get(self, name: str) -> HttpSource | None:
        return self._sources.get(SourceName(name))

    def open(self, name: str) -> HttpSource:
        """The source called `name`, created (empty, not yet persisted) when new; a caller
        whose first write fails calls `forget` (no empty source is left behind)."""
        problem = http_source_problem(name)
        if problem is not None:
            raise ValidationFailed(problem)
        source = self._sources.get(SourceName(name))
        if source is not None:
            return source
        if len(self._sources) >= MAX_SOURCES + len(BUILT_IN):
            raise Conflict(
                f"hive already has {len(self._sources)} HTTP sources; DELETE one you no "
                "longer use (GET /v1/status lists them)"
            )
        source = self._add(SourceName(name))
        self._store.mark_synced(source.name)
        return source

    async def drop(self, name: str) -> ReplaceResult:
        """Delete source `name`'s records and file; the built-in ones stay, empty. A 404
        when there is no such source (or another DELETE took it first)."""
        source = self._sources.get(SourceName(name))
        if source is None:
            raise NotFound(
                f"no HTTP source {name} (GET /v1/desired lists them; PUT /v1/desired/{name} "
                "creates it)"
            )
        final = source.name not in BUILT_IN
        result = await source.drop(final=final)
        if final:
            self._unlist(source)
        return result

    async def forget(self, source: HttpSource) -> None:
        """A source `open` created whose first write failed: it goes again, unless a write
        since succeeded."""
        if source.name not in BUILT_IN and await source.abandon():
            self._unlist(source)

    def _unlist(self, source: HttpSource) -> None:
        if self._sources.get(source.name) is source:
            del self._sources[source.name]
            self._store.unregister(source.name)

    @property
    def api(self) -> HttpSource:
        return self._sources[API]
