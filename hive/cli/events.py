"""`hive events [-f]`: a running hive's narration, one line per event as `hive serve`
prints it; with -f, followed through hive's restarts (`Last-Event-ID`, and from the start
of a new hive's events when it restarted)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime
from typing import Any

from hive.cli.common import EXIT_OK, api_message, client_options, fail, token_of
from hive.errors import ApiError, HiveUnreachable
from hive.model.events import Event, EventsDropped
from hive.model.ids import ObjectKey
from hive.narration.console import ConsolePrinter

#: Seconds between tries to reach a hive that went away (-f).
RETRY_DELAY = 1.0


def register(sub: Any) -> None:
    events = sub.add_parser(
        "events",
        help="print a running hive's events (-f: follow them)",
        description="Print the events a running hive holds (its last HIVE_EVENT_BUFFER, "
        "10,000 by default), one line each as `hive serve` prints them: time, level, object, "
        "[action], message. With -f, keep printing new ones; when hive goes away the stream "
        "is opened again once it is back (after the last event printed, or from the start "
        "of the new hive's events when it restarted). Ctrl-C stops.",
    )
    events.add_argument("-f", "--follow", action="store_true", help="follow new events")
    events.add_argument("--object", metavar="KIND/NAME", help="only this object's, e.g. Model/tiny")
    events.add_argument(
        "--since", type=int, metavar="ID", help="only events after this id (default: all held)"
    )
    client_options(events)
    events.set_defaults(func=cmd_events)


def _say(item: Event | EventsDropped, printer: ConsolePrinter) -> None:
    if isinstance(item, Event):
        printer(item)
    else:
        print(f"hive: {item.message}", file=sys.stderr, flush=True)


async def _held(args: argparse.Namespace, printer: ConsolePrinter) -> None:
    """The events hive holds after --since, up to the newest when asked; then return."""
    from hive.client import HiveClient

    async with HiveClient(args.url, token=token_of(args)) as hive:
        last = (await hive.status()).last_event_id
        since = args.since or 0
        if last <= since:
            return
        # Unfiltered, so that the newest event (of any object) ends the read.
        async for item in hive.events(since=since):
            if isinstance(item, EventsDropped) or args.object in (None, item.object):
                _say(item, printer)
            if isinstance(item, Event) and item.id >= last:
                return


async def _follow(args: argparse.Namespace, printer: ConsolePrinter) -> None:
    from hive.client import HiveClient

    after = args.since or 0
    started: datetime | None = None
    lost = False
    async with HiveClient(args.url, token=token_of(args)) as hive:
        while True:
            try:
                status = await hive.status()
                if started is not None and status.started_at != started:
                    after = 0  # a new hive numbers its events from 1 again
                if lost:
                    print(
                        f"hive: reconnected to {args.url} (hive started at "
                        f"{status.started_at.isoformat()}); events after {after}",
                        file=sys.stderr,
                        flush=True,
                    )
                started, lost = status.started_at, False
                async for item in hive.events(object=args.object, last_event_id=after):
                    if isinstance(item, Event):
                        after = item.id
                    _say(item, printer)
            except HiveUnreachable as exc:
                if started is None:
                    raise
                if not lost:
                    print(
                        f"hive: lost {args.url} ({exc.cause}); reconnecting every "
                        f"{RETRY_DELAY:g}s (Ctrl-C stops)",
                        file=sys.stderr,
                        flush=True,
                    )
                lost = True
            await asyncio.sleep(RETRY_DELAY)


def cmd_events(args: argparse.Namespace) -> int:
    if args.object is not None:
        try:
            ObjectKey.parse(args.object)
        except ValueError as exc:
            return fail(f"--object: {exc}")
    printer = ConsolePrinter(sys.stdout)
    try:
        asyncio.run((_follow if args.follow else _held)(args, printer))
    except KeyboardInterrupt:
        return EXIT_OK
    except ApiError as exc:
        return fail(api_message(exc))
    return EXIT_OK
