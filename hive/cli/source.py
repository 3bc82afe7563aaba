"""`hive source suspend|resume|sync NAME`: a running hive's git source, through the typed
client (`POST /v1/sources/{name}/...`)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from hive.cli.common import EXIT_OK, client_options, token_of

EXIT_FAILED = 1


def register(sub: Any) -> None:
    source = sub.add_parser(
        "source",
        help="suspend, resume or sync a git source of a running hive",
        description="Suspend a git source (it fetches nothing and its records stay in "
        "force, e.g. for maintenance; not kept across a restart of hive), resume it (it "
        "fetches at once), or sync it now (exit 1 when the revision found was not applied). "
        "NAME as `hive get status` shows it, e.g. git:fleet.",
    )
    source.add_argument("action", choices=["suspend", "resume", "sync"])
    source.add_argument("name", metavar="NAME")
    client_options(source)
    source.set_defaults(func=cmd_source)


def cmd_source(args: argparse.Namespace) -> int:
    return asyncio.run(_source(args))


async def _source(args: argparse.Namespace) -> int:
    from hive.client import HiveClient

    async with HiveClient(args.url, token=token_of(args)) as hive:
        if args.action == "sync":
            answer = await hive.sync_source(args.name)
            print(
                f"{answer.source}: {answer.outcome} {answer.revision or '(no revision)'}; "
                f"in force: {answer.lastAppliedRevision or '(none)'}"
                + (f"; {answer.message}" if answer.message else "")
            )
            return EXIT_OK if answer.outcome == "applied" else EXIT_FAILED
        if args.action == "suspend":
            state = await hive.suspend_source(args.name)
        else:
            state = await hive.resume_source(args.name)
        print(f"{state.source}: {'suspended' if state.suspended else 'resumed'}")
        return EXIT_OK
