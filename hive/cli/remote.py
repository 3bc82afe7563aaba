"""The client commands `hive get` and `hive logs` (`hive delete`: hive/cli/apply.py): each
a request to a running hive through `hive.client.HiveClient` (run with `asyncio.run`), its
answer printed as a table (hive/cli/tables.py), JSON or YAML, or as one line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import yaml
from pydantic import BaseModel

from hive.cli.common import EXIT_OK, fail, token_of
from hive.cli.tables import (
    devices_table,
    models_table,
    runtimes_table,
    status_table,
    workers_table,
)
from hive.errors import ApiError, HiveUnreachable


async def _view(
    url: str, what: str, *, token: str | None = None, wide: bool = False
) -> tuple[str, Any]:
    """The table `hive get WHAT` prints (`wide`: with more columns), and the view as JSON
    (for `-o json|yaml`)."""
    from hive.client import HiveClient  # aiohttp: imported by the commands that use it

    async with HiveClient(url, token=token) as hive:
        if what == "models":
            models = await hive.models()
            return models_table(models, wide=wide), {"items": [_json(m) for m in models]}
        if what == "workers":
            workers = await hive.workers()
            return workers_table(workers, wide=wide), {"items": [_json(w) for w in workers]}
        if what == "runtimes":
            runtimes = await hive.runtimes()
            return runtimes_table(runtimes), _json(runtimes)
        if what == "devices":
            devices = await hive.devices()
            return devices_table(devices), _json(devices)
        status = await hive.status()
        return status_table(status), _json(status)


def _json(view: BaseModel) -> Any:
    return view.model_dump(mode="json")


def cmd_get(args: argparse.Namespace) -> int:
    wide = args.output == "wide"
    table, data = asyncio.run(_view(args.url, args.what, token=token_of(args), wide=wide))
    if args.output == "json":
        print(json.dumps(data, indent=2))
    elif args.output == "yaml":
        print(yaml.safe_dump(data, sort_keys=False), end="")
    else:
        print(table)
    return EXIT_OK


async def _logs(url: str, name: str, *, token: str | None, tail: int, follow: bool) -> None:
    from hive.client import HiveClient

    async with HiveClient(url, token=token) as hive:
        if not follow:
            sys.stdout.write(await hive.logs(name, tail=tail))
            return
        try:
            async for line in hive.follow_logs(name, tail=tail):
                print(line, flush=True)
        except ApiError:
            await hive.logs(name, tail=tail)  # raises with hive's message for the plain GET
            raise


def cmd_logs(args: argparse.Namespace) -> int:
    """`hive logs NAME [-f]`: the worker's log, and with -f every new line as it comes."""
    try:
        asyncio.run(
            _logs(args.url, args.name, token=token_of(args), tail=args.tail, follow=args.follow)
        )
    except KeyboardInterrupt:
        if not args.follow:
            raise
    except HiveUnreachable as exc:
        return fail(f"cannot reach hive at {exc.url}: {exc.cause}")
    return EXIT_OK
