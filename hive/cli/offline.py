"""The offline tools: `hive validate` (manifests checked, nothing else read) and `hive plan`
(what hive would do against a home: hive/cli/plan.py observes it)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hive.cli import tables
from hive.cli.common import EXIT_CHANGES, EXIT_ERRORS, EXIT_OK, home_note
from hive.model.ids import SourceName
from hive.model.labels import parse_labels, split_labels
from hive.model.manifests import selected
from hive.settings import Settings


def read_paths(paths: list[Path]) -> tuple[list[Any], list[str]]:
    """The records under `paths` and every problem (`file:line: field: message`)."""
    from hive.sources.directory import read_manifests

    result = read_manifests(paths, source=SourceName("cli"))
    return list(result.records), [str(p) for p in result.problems]


def read_valid(paths: list[Path], *, refused: str | None = None) -> list[Any] | None:
    """The records under `paths`; or, when any is invalid, None after printing every
    problem (and `N problem(s) found` + `refused` on stderr, when given)."""
    records, problems = read_paths(paths)
    for problem in problems:
        print(problem)
    if not problems:
        return records
    if refused is not None:
        print(f"{len(problems)} problem(s) found{refused}", file=sys.stderr)
    return None


LABELS_HELP = (
    "the labels of a hive (gpu=a,hive.name=node-1): show what that hive applies, records "
    "whose spec.hiveSelector does not select it listed as not selected (default: every record)"
)


def labels_arg(text: str) -> dict[str, str]:
    """`--labels k=v,k2=v2`: the labels of the hive to show (hive.name and hive.hostname
    may be given, as that hive would have them)."""
    try:
        return parse_labels(split_labels(text), reserved=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _split(records: list[Any], labels: dict[str, str] | None) -> tuple[list[Any], list[Any]]:
    """The records a hive with `labels` applies, and the others (None: every record)."""
    chosen = [r for r in records if selected(r.manifest, labels)]
    return chosen, [r for r in records if not selected(r.manifest, labels)]


def _not_selected_lines(others: list[Any], labels: dict[str, str]) -> list[str]:
    return [
        f"not selected: {r.key} ({r.origin.where()}): its hiveSelector does not select "
        f"labels {tables.labels(labels)}"
        for r in others
    ]


def cmd_validate(args: argparse.Namespace) -> int:
    records = read_valid(args.paths, refused="")
    if records is None:
        return EXIT_ERRORS
    if args.labels is None:
        print(f"ok: {len(records)} record(s) valid")
        return EXIT_OK
    chosen, others = _split(records, args.labels)
    for line in _not_selected_lines(others, args.labels):
        print(line)
    print(
        f"ok: {len(records)} record(s) valid; {len(chosen)} apply to a hive with labels "
        f"{tables.labels(args.labels)}, {len(others)} not selected"
    )
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    from hive.cli.plan import plan_all

    records = read_valid(args.paths)
    if records is None:
        return EXIT_ERRORS
    settings = Settings.from_env(home=args.home)
    home_note(settings.home)
    records, others = _split(records, args.labels)
    if args.labels is not None:
        for line in _not_selected_lines(others, args.labels):
            print(line)
    lines = plan_all(records, settings=settings)
    for line in lines:
        print(line)
    if not lines:
        print(f"nothing to do: {settings.home} matches {len(records)} record(s)")
        return EXIT_OK
    return EXIT_CHANGES
