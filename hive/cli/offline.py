"""The offline tools: `hive validate` (manifests checked, nothing else read) and `hive plan`
(what hive would do against a home: hive/cli/plan.py observes it)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hive.cli.common import EXIT_CHANGES, EXIT_ERRORS, EXIT_OK, home_note
from hive.model.ids import SourceName
from hive.settings import Settings


def _read(paths: list[Path]) -> tuple[list[Any], list[str]]:
    from hive.sources.directory import read_manifests

    result = read_manifests(paths, source=SourceName("cli"))
    return list(result.records), [str(p) for p in result.problems]


def cmd_validate(args: argparse.Namespace) -> int:
    records, problems = _read(args.paths)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
        return EXIT_ERRORS
    print(f"ok: {len(records)} record(s) valid")
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    from hive.cli.plan import plan_all

    records, problems = _read(args.paths)
    for problem in problems:
        print(problem)
    if problems:
        return EXIT_ERRORS
    settings = Settings.from_env(home=args.home)
    home_note(settings.home)
    lines = plan_all(records, settings=settings)
    for line in lines:
        print(line)
    if not lines:
        print(f"nothing to do: {settings.home} matches {len(records)} record(s)")
        return EXIT_OK
    return EXIT_CHANGES
