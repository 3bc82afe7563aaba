"""`/v1/desired`: desired state over HTTP, one record set per source (`api`, `queen`, or a
client's own name), on hive/sources/http.py.

`PUT` replaces a source's whole set and `DELETE` removes it, as the Queen needs; `PATCH`
(merge by `Kind/name`, as `kubectl apply` does) and the deletion of one record are hive's
own, for `hive apply` and `hive delete`: a client adds or removes objects without
reading and rewriting the whole set. A body applies whole or not at all: every problem
(line, field) is answered with 422 and nothing changes.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, NoReturn

import yaml
from aiohttp import web

from hive.api.params import bool_param
from hive.api.responses import json_response as _json
from hive.core.parse import Problem, parse_text
from hive.core.store import ReplaceResult
from hive.errors import NotFound, ValidationFailed
from hive.model.ids import Kind, ObjectKey, SourceName, name_problem
from hive.model.manifests import Manifest, Origin, Record
from hive.model.text import clip, redact_url, show
from hive.runtime.manager import Manager
from hive.sources.http import BUILT_IN, HttpSource, http_source_problem

#: Media types answered and read as YAML (the rest of the body is sniffed).
_YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


def _source_name(request: web.Request) -> SourceName:
    name = request.match_info["source"]
    problem = http_source_problem(name)
    if problem is not None:
        raise ValidationFailed(f"{request.method} /v1/desired/{{source}}: {problem}")
    return SourceName(name)


def _known(manager: Manager, name: SourceName) -> HttpSource:
    source = manager.http_sources.get(name)
    if source is None:
        raise NotFound(
            f"no HTTP source {name} (GET /v1/desired lists them; PUT /v1/desired/{name} creates it)"
        )
    return source


def _is_json(content_type: str, text: str) -> bool:
    """The body's format: its Content-Type, else what it starts with."""
    if content_type == "application/json" or content_type.endswith("+json"):
        return True
    if content_type in _YAML_TYPES:
        return False
    return text.lstrip()[:1] in ("{", "[")


async def _records(request: web.Request, source: SourceName) -> tuple[Record, ...]:
    """The body's records, each with an absolute `file:` source, or ValidationFailed with
    every problem located in the body (`PUT /v1/desired/queen:12: spec.source: …`)."""
    label = f"{request.method} /v1/desired/{source}"
    raw = await request.read()  # over the app's client_max_size: 413
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        _refuse([Problem(file=label, line=line, message="not UTF-8 text (send YAML or JSON)")])
    if _is_json(request.content_type, text):
        try:
            data = await asyncio.to_thread(json.loads, text)
        except ValueError as exc:
            at = getattr(exc, "lineno", None)
            message = f"malformed JSON: {clip(getattr(exc, 'msg', str(exc)))}"
            _refuse([Problem(file=label, line=at, message=message)])
        if not isinstance(data, dict | list):
            _refuse(
                [
                    Problem(
                        file=label,
                        message=f"the body is a {type(data).__name__}; send a manifest, a "
                        'list of manifests, or {"kind": "List", "items": [...]}',
                    )
                ]
            )
        text = text.replace("\t", " ")  # JSON allows tab indentation, YAML does not
    # A body of 1 MiB takes a second to parse: off the loop, which goes on answering.
    result = await asyncio.to_thread(parse_text, text, file=label, source=source, lists=True)
    if not result.ok:
        _refuse(list(result.problems))
    problems = []
    records = []
    for record in result.records:
        manifest = record.manifest
        spec_source = getattr(manifest.spec, "source", None)
        if isinstance(spec_source, str) and spec_source.startswith("file:"):
            path = spec_source.removeprefix("file:")
            if not path.startswith("/"):
                problems.append(
                    Problem(
                        file=label,
                        line=record.origin.line,
                        field="spec.source",
                        message=f"{show(spec_source)}: a file: source sent over HTTP must be "
                        "an absolute path (file:/path/model.gguf); there is no manifest file "
                        "for a relative one to start from (`hive apply` makes them absolute)",
                    )
                )
        # The origin is the source alone: as hive reads it back from its file at start.
        records.append(Record(manifest=manifest, origin=Origin(source=source)))
    if problems:
        _refuse(problems)
    return tuple(records)


def _refuse(problems: list[Problem]) -> NoReturn:
    raise ValidationFailed(
        f"{len(problems)} problem(s), nothing was applied: {clip('; '.join(map(str, problems)))}",
        problems=[str(p) for p in problems],
    )


def _summary(
    manager: Manager, source: HttpSource, result: ReplaceResult, **extra: Any
) -> dict[str, Any]:
    """What a change did: the set's size, the keys whose record in force changed, and
    every key of the set that another source owns or also declares."""
    conflicts = []
    for record in source.records():
        for note in manager.store.conflicts(record.key):
            conflicts.append(
                {
                    "key": note.key,
                    "owner": note.owner.source,
                    "other": note.other.source,
                    "message": note.message,
                }
            )
    return {
        "source": source.name,
        "records": len(source.records()),
        **extra,
        "changed": sorted(result.changed),
        "conflicts": conflicts,
    }


def _manifest_json(manifest: Manifest) -> dict[str, Any]:
    """A record as a client sent it, with a Model's source redacted (credentials and signed
    query values never leave hive)."""
    data = manifest.model_dump(mode="json", exclude_none=True)
    spec = data.get("spec", {})
    if isinstance(spec.get("source"), str):
        spec["source"] = redact_url(spec["source"])
    return data


def _yaml_text(manifests: list[dict[str, Any]]) -> str:
    """Up to 10,000 records as YAML documents (run in a thread: it takes a while)."""
    return yaml.safe_dump_all(manifests, sort_keys=False)


def _record_key(request: web.Request) -> ObjectKey:
    kind_text, name = request.match_info["kind"], request.match_info["name"]
    kinds = {k.value.lower(): k for k in Kind}
    kind = kinds.get(kind_text.lower())
    if kind is None:
        raise ValidationFailed(
            f"{show(kind_text)} is not a kind (use {' or '.join(k.value for k in Kind)})"
        )
    problem = name_problem(name)
    if problem is not None:
        raise ValidationFailed(f"{kind.value.lower()} name {problem}")
    return ObjectKey.of(kind, name)


class DesiredRoutes:
    """The handlers, on one manager."""

    def __init__(self, manager: Manager) -> None:
        self._manager = manager

    async def list_sources(self, request: web.Request) -> web.Response:
        manager = self._manager
        states = {s.name: s for s in manager.store.sources()}
        items = []
        for name in manager.http_sources.names():
            source = manager.http_sources.get(name)
            assert source is not None
            state = states[name]
            items.append(
                {
                    "name": name,
                    "records": len(source.records()),
                    "builtin": name in BUILT_IN,
                    "path": f"/v1/desired/{name}",
                    "errors": [str(p) for p in state.errors],
                }
            )
        return _json({"items": items})

    async def get_source(self, request: web.Request) -> web.Response:
        manager = self._manager
        source = _known(manager, _source_name(request))
        manifests = [_manifest_json(r.manifest) for r in source.records()]
        if any(t in request.headers.get("Accept", "") for t in ("yaml",)):
            text = await asyncio.to_thread(_yaml_text, manifests) if manifests else ""
            return web.Response(text=text, content_type="application/yaml")
        return _json({"source": source.name, "items": manifests})

    async def put_source(self, request: web.Request) -> web.Response:
        """The body becomes the source's whole set; an emptying one needs `?allowEmpty=true`."""
        manager = self._manager
        name = _source_name(request)
        allow_empty = bool_param(request.query.get("allowEmpty"), "allowEmpty")
        records = await _records(request, name)
        source = manager.http_sources.open(name)
        try:
            result = await source.replace(records, allow_empty=allow_empty)
        except BaseException:
            await manager.http_sources.forget(source)  # no empty source left behind
            raise
        return _json(_summary(manager, source, result))

    async def patch_source(self, request: web.Request) -> web.Response:
        """Each record of the body is added, or replaces the one with its `Kind/name`; the
        others stay. Each is answered `created`, `configured` or `unchanged`."""
        manager = self._manager
        name = _source_name(request)
        records = await _records(request, name)
        source = manager.http_sources.open(name)
        applied = []
        for record in records:
            before = source.get(record.key)
            outcome = (
                "created"
                if before is None
                else "unchanged"
                if before.manifest == record.manifest
                else "configured"
            )
            applied.append({"key": record.key, "result": outcome})
        try:
            result = await source.upsert(records)
        except BaseException:
            await manager.http_sources.forget(source)
            raise
        return _json(_summary(manager, source, result, applied=applied))

    async def delete_source(self, request: web.Request) -> web.Response:
        """The set and its file go (its records go, as when a file is deleted); `api` and
        `queen` stay, empty."""
        manager = self._manager
        name = _source_name(request)
        source = _known(manager, name)
        keys = sorted(r.key for r in source.records())
        result = await manager.http_sources.drop(name)
        return _json(
            {
                "source": name,
                "deleted": name not in BUILT_IN,
                "removed": keys,
                "changed": sorted(result.changed),
            }
        )

    async def delete_record(self, request: web.Request) -> web.Response:
        """One record of the source goes (`hive delete worker NAME`); 404 when the source does
        not hold it, naming the file or source that declares it if another does."""
        manager = self._manager
        name = _source_name(request)
        key = _record_key(request)
        source = _known(manager, name)
        if source.get(key) is None:
            owner = manager.store.desired(key)
            if owner is None:
                raise NotFound(f"source {name} does not declare {key}, and no other source does")
            raise NotFound(
                f"source {name} does not declare {key}: it is declared by {owner.origin.where()} "
                f"(source {owner.origin.source}); edit or delete it there"
            )
        result = await source.remove([key])
        return _json(_summary(manager, source, result, deleted=key))


def add_routes(app: web.Application, manager: Manager) -> None:
    routes = DesiredRoutes(manager)
    app.router.add_get("/v1/desired", routes.list_sources)
    app.router.add_get("/v1/desired/{source}", routes.get_source)
    app.router.add_put("/v1/desired/{source}", routes.put_source)
    app.router.add_patch("/v1/desired/{source}", routes.patch_source)
    app.router.add_delete("/v1/desired/{source}", routes.delete_source)
    app.router.add_delete("/v1/desired/{source}/{kind}/{name}", routes.delete_record)
