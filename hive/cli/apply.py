"""`hive apply -f FILE|DIR` and `hive delete model|worker NAME`: desired state written into
a running hive's `api` source (`PATCH` and `DELETE` under `/v1/desired`, through
`hive.client`), as `kubectl apply` and `kubectl delete` do; manifests are read and checked
here first, with the same reader as `hive validate`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from hive.cli.common import (
    EXIT_ERRORS,
    EXIT_OK,
    api_message,
    api_problems,
    client_options,
    fail,
    token_of,
)
from hive.cli.tables import size
from hive.errors import ApiError
from hive.model.ids import SourceName
from hive.model.manifests import ModelManifest, Record
from hive.model.views import DesiredApplied, WorkerInfo

#: The source `hive apply` and `hive delete` write by default (jobs write it too).
DEFAULT_SOURCE = "api"


def register(sub: Any) -> None:
    """`hive apply` (its own parser); `hive delete` is registered with the other commands."""
    apply = sub.add_parser(
        "apply",
        help="declare the objects of manifest files in a running hive (its api source)",
        description="Read the manifests of each -f FILE or DIR (as `hive validate` does: "
        "every problem printed with file:line: field, exit 2, nothing sent), make relative "
        "file: sources absolute against each manifest's directory, and add them to the "
        "--source of a running hive (default api, kept under its home across restarts), "
        "replacing those of the same Kind/name; other objects stay. One line per object: "
        "`model/NAME created`, `configured` or `unchanged`. `hive delete` removes them.",
    )
    apply.add_argument(
        "-f",
        "--filename",
        dest="paths",
        action="append",
        type=Path,
        required=True,
        metavar="FILE|DIR",
        help="a manifest file, or a directory of them (repeatable)",
    )
    apply.add_argument(
        "--source",
        default=DEFAULT_SOURCE,
        help=f"the HTTP source to write (default {DEFAULT_SOURCE})",
    )
    client_options(apply)
    apply.set_defaults(func=cmd_apply)


def _absolute(record: Record) -> dict[str, Any]:
    """The record as JSON, a relative `file:` source made absolute against its manifest's
    directory (hive has no manifest file to resolve it against)."""
    from hive.core.plan import resolve_source

    data: dict[str, Any] = record.manifest.model_dump(mode="json", exclude_none=True)
    manifest = record.manifest
    if isinstance(manifest, ModelManifest) and manifest.spec.source.startswith("file:"):
        path = manifest.spec.source.removeprefix("file:")
        if not path.startswith("/"):
            resolved = resolve_source(manifest.spec.source, manifest_file=record.origin.file)
            data["spec"]["source"] = f"file:{resolved}"
    return data


async def _apply(args: argparse.Namespace, manifests: list[dict[str, Any]]) -> DesiredApplied:
    from hive.client import HiveClient

    async with HiveClient(args.url, token=token_of(args)) as hive:
        return await hive.apply(args.source, manifests)


def cmd_apply(args: argparse.Namespace) -> int:
    from hive.sources.directory import read_manifests

    result = read_manifests(args.paths, source=SourceName(args.source))
    if result.problems:
        for problem in result.problems:
            print(problem)
        print(f"{len(result.problems)} problem(s) found; nothing was applied", file=sys.stderr)
        return EXIT_ERRORS
    manifests = [_absolute(record) for record in result.records]
    try:
        applied = asyncio.run(_apply(args, manifests))
    except ApiError as exc:
        refused = api_problems(exc)
        for line in refused:
            print(line)
        if refused:
            return fail(
                f"hive refused the manifests ({len(refused)} problem(s)); nothing was applied"
            )
        return fail(api_message(exc))
    for item in applied.applied:
        kind, _, name = item.key.partition("/")
        print(f"{kind.lower()}/{name} {item.result}")
    for conflict in applied.conflicts:
        print(f"hive: warning: {conflict.message}", file=sys.stderr)
    return EXIT_OK


# -- hive delete ----------------------------------------------------------------------------
DELETE_DESCRIPTION = (
    "hive delete model NAME: when the --source (default api) declares the model, its record "
    "is removed first; then the model's files are deleted (a partial download too). A model "
    "that a watched directory declares is refused (edit its file); a model that workers use "
    "is refused, naming them, unless --force (they are stopped until it is back). "
    "hive delete worker NAME: the worker's record is removed from the --source, and hive "
    "stops its process; a worker that a watched directory declares is refused, naming its "
    "file."
)


def _uses(worker: WorkerInfo, model: str) -> bool:
    """Whether `worker` uses `model` as hive counts it for a deletion: a record naming it
    that is not `state: stopped`, or a process serving it."""
    spec = worker.spec or {}
    declared = spec.get("model") == model and spec.get("state") != "stopped"
    facts = worker.observed
    serving = facts is not None and facts.pid is not None and facts.model == model
    return declared or serving


class _InUse(Exception):
    def __init__(self, users: list[str]) -> None:
        super().__init__(", ".join(users))
        self.users = users


async def _delete_model(args: argparse.Namespace) -> list[str]:
    """What was done, one line each; raises ApiError as hive answered."""
    from hive.client import HiveClient

    said: list[str] = []
    async with HiveClient(args.url, token=token_of(args)) as hive:
        try:
            info = await hive.model(args.name)
        except ApiError as exc:
            if exc.status != 404:
                raise
            info = None
        declared = info is not None and info.source is not None and info.source.name == args.source
        if declared:
            users = [w.name for w in await hive.workers() if _uses(w, args.name)]
            if users and not args.force:  # refused before anything changes
                raise _InUse(users)
            await hive.delete_record(args.source, "Model", args.name)
            said.append(f"model {args.name}: record removed from source {args.source}")
        try:
            deleted = await hive.delete_model(args.name, force=args.force)
        except ApiError as exc:
            if exc.status == 404 and declared:
                said.append(f"model {args.name}: nothing of it was on disk")
                return said
            raise
    removed = deleted.partial_bytes_removed
    extra = f" (with a partial download of {size(removed)})" if removed else ""
    if deleted.workers:
        extra += f"; worker(s) {', '.join(deleted.workers)} are stopped until it is back"
    said.append(f"model {deleted.deleted} deleted{extra}")
    return said


async def _delete_worker(args: argparse.Namespace) -> DesiredApplied:
    from hive.client import HiveClient

    async with HiveClient(args.url, token=token_of(args)) as hive:
        return await hive.delete_record(args.source, "Worker", args.name)


def cmd_delete(args: argparse.Namespace) -> int:
    try:
        if args.what == "worker":
            asyncio.run(_delete_worker(args))
            print(f"worker {args.name} deleted from source {args.source}; hive stops its process")
            return EXIT_OK
        for line in asyncio.run(_delete_model(args)):
            print(line)
    except _InUse as exc:
        return _in_use(args.name, exc.users)
    except ApiError as exc:
        users = exc.error.get("workers")
        if exc.reason == "ModelInUse" and isinstance(users, list):
            return _in_use(args.name, [str(u) for u in users])
        return fail(api_message(exc))
    return EXIT_OK


def _in_use(name: str, users: list[str]) -> int:
    listed = ", ".join(users)
    return fail(
        f"model {name} is not deleted: worker(s) {listed} use it. Remove or stop them first, "
        f"or run `hive delete model {name} --force` to delete it anyway (hive stops them; "
        "they start again once the model is back)"
    )
