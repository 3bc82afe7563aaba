"""`hive diff --url URL PATH...`: the manifests under PATH (read offline, as `hive validate`
reads them) against what a running hive declares (`/v1/models`, `/v1/workers`), as `flux
diff` compares a repository with a cluster. Exit 0 no difference, 1 differences, 2 errors."""

from __future__ import annotations

import argparse
import asyncio
import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hive.cli import tables
from hive.cli.common import EXIT_CHANGES, EXIT_ERRORS, EXIT_OK, client_options, fail, token_of
from hive.cli.offline import labels_arg, read_valid
from hive.errors import ApiError
from hive.model.manifests import selected, spec_view
from hive.model.views import ObjectView

DESCRIPTION = (
    "Compare the manifests under PATH (read offline, as `hive validate` reads them) with what "
    "the hive at --url declares, as `flux diff` does; print `+ Kind/name` for an object in "
    "PATH that the hive does not declare, `- Kind/name` for one the hive declares and PATH "
    "does not, `~ Kind/name` and a unified diff (hive's side `-`, PATH's `+`) of its labels "
    "and spec as YAML. Compared: what a manifest declares (metadata.labels and spec, every "
    "default filled in on both sides, so a default written or left out is no difference), "
    "not status. By default every object the hive declares, from any of its sources "
    "(watched directories, git, the API, the Queen); --source NAME compares with that one "
    "source only. The hive's API redacts secrets, so a Model's source URL with credentials "
    "is compared on its redacted form (PATH's side redacted the same way). Records in PATH "
    "whose spec.hiveSelector does not select the hive's labels (--labels, default: the "
    "hive's own from /v1/status) are left out. Exit 0 no difference, 1 differences, 2 "
    "errors (a bad manifest, each problem as file:line: field; the hive unreachable; 401)."
)


@dataclass(frozen=True)
class Declared:
    """What one side declares of an object: its labels and spec, and where (for the diff's
    header)."""

    labels: Mapping[str, str]
    spec: Mapping[str, Any]
    where: str

    def as_yaml(self) -> list[str]:
        data = {"labels": dict(self.labels), "spec": dict(self.spec)}
        return yaml.safe_dump(data, sort_keys=True, default_flow_style=False).splitlines()


@dataclass(frozen=True)
class Difference:
    """`+` in PATH only, `-` on the hive only, `~` on both, unequal (`diff`: its lines)."""

    mark: str
    key: str
    diff: tuple[str, ...] = ()


def compare(local: Mapping[str, Declared], remote: Mapping[str, Declared]) -> list[Difference]:
    """The differences, by key (`Model/a` before `Worker/a`)."""
    found: list[Difference] = []
    for key in sorted(local.keys() | remote.keys()):
        mine, theirs = local.get(key), remote.get(key)
        if theirs is None:
            found.append(Difference("+", key))
        elif mine is None:
            found.append(Difference("-", key))
        elif (dict(mine.labels), dict(mine.spec)) != (dict(theirs.labels), dict(theirs.spec)):
            lines = difflib.unified_diff(
                theirs.as_yaml(),
                mine.as_yaml(),
                fromfile=f"hive: {theirs.where}",
                tofile=f"path: {mine.where}",
                lineterm="",
            )
            found.append(Difference("~", key, tuple(lines)))
    return found


async def _hive_side(
    url: str, *, token: str | None
) -> tuple[dict[str, str], list[str], list[ObjectView]]:
    """The hive's labels, its sources' names, and every object it declares (a model on
    its disk without a record is not declared)."""
    from hive.client import HiveClient  # aiohttp: imported by the commands that use it

    async with HiveClient(url, token=token) as hive:
        status = await hive.status()
        views: list[ObjectView] = [*await hive.models(), *await hive.workers()]
    sources = [s.name for s in status.sources]
    return dict(status.labels), sources, [v for v in views if v.spec is not None]


def _remote(views: Iterable[ObjectView], source: str | None) -> dict[str, Declared]:
    out: dict[str, Declared] = {}
    for v in views:
        name = v.source.name if v.source else "?"
        if source is not None and name != source:
            continue
        where = f"{v.kind}/{v.name} (source {name})"
        out[f"{v.kind}/{v.name}"] = Declared(labels=v.labels, spec=v.spec or {}, where=where)
    return out


def cmd_diff(args: argparse.Namespace) -> int:
    records = read_valid(args.paths, refused=": nothing compared")
    if records is None:
        return EXIT_ERRORS
    try:
        hive_labels, sources, views = asyncio.run(_hive_side(args.url, token=token_of(args)))
    except ApiError as exc:
        if exc.status == 401:
            return fail(f"{exc.message} (pass --token or set HIVE_TOKEN)")
        raise
    names = sorted(set(sources) | {v.source.name for v in views if v.source})
    if args.source is not None and args.source not in names:
        return fail(
            f"the hive at {args.url} has no source {args.source!r} "
            f"(its sources: {', '.join(names) or 'none'})"
        )
    labels = args.labels if args.labels is not None else hive_labels
    chosen = [r for r in records if selected(r.manifest, labels)]
    local = {
        str(r.key): Declared(
            labels=r.manifest.metadata.labels,
            spec=spec_view(r.manifest),
            where=f"{r.key} ({r.origin.where()})",
        )
        for r in chosen
    }
    remote = _remote(views, args.source)
    differences = compare(local, remote)
    for d in differences:
        print(f"{d.mark} {d.key}")
        for line in d.diff:
            print(f"    {line}")
    compared = len(local.keys() | remote.keys())
    scope = f"source {args.source}" if args.source else "every source"
    left_out = len(records) - len(chosen)
    note = f"; {left_out} record(s) in PATH not selected by labels {tables.labels(labels)}"
    summary = f"{compared} object(s) compared with {args.url} ({scope}){note if left_out else ''}"
    if not differences:
        print(f"no difference: {summary}")
        return EXIT_OK
    counts = {m: sum(d.mark == m for d in differences) for m in "+-~"}
    print(
        f"{len(differences)} difference(s): {counts['+']} only in PATH, {counts['-']} only on "
        f"the hive, {counts['~']} changed; {summary}"
    )
    return EXIT_CHANGES


def register(sub: Any) -> None:
    diff = sub.add_parser(
        "diff",
        help="compare manifests with what a running hive declares (exit 0 none, 1 "
        "differences, 2 errors)",
        description=DESCRIPTION,
    )
    diff.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    client_options(diff)
    diff.add_argument(
        "--labels",
        type=labels_arg,
        metavar="K=V,...",
        help="the labels to select PATH's records with (spec.hiveSelector); default: the "
        "hive's own, as /v1/status shows them",
    )
    diff.add_argument(
        "--source",
        metavar="NAME",
        help="compare with this source of the hive only (as `hive get status` names it: "
        "dir:/etc/hive/desired, api, queen, a git source's name); default: every source",
    )
    diff.set_defaults(func=cmd_diff)
