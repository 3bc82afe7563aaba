"""The `hive` command: serve, validate, plan, diff, stop-workers, get, logs, delete, apply,
events, job, source. Errors are one clear line.

The daemon's start is hive/cli/daemon.py, the offline tools hive/cli/offline.py (with
plan.py), the client commands hive/cli/remote.py (through `hive.client`)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hive import __version__
from hive.cli import apply, diff, events, job, source
from hive.cli.common import HOME_HELP, client_options, fail
from hive.cli.daemon import cmd_serve, cmd_stop_workers
from hive.cli.git_options import add_git_options
from hive.cli.offline import LABELS_HELP, cmd_plan, cmd_validate, labels_arg
from hive.cli.remote import cmd_get, cmd_logs
from hive.errors import HiveError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hive")
    p.add_argument("--version", action="version", version=f"hive {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the daemon",
        description="Run the daemon: watch the --desired directories and keep the models "
        "and workers under --home equal to them, narrating every step on stderr; the HTTP "
        "API and the event stream on --host:--port. When hive exits, its workers keep "
        "running (the next hive on this home adopts them; `hive stop-workers` stops them) "
        "unless --stop-workers-on-exit.",
    )
    serve.add_argument(
        "--desired",
        action="append",
        type=Path,
        metavar="DIR",
        help="a directory of manifests to watch (repeatable)",
    )
    serve.add_argument(
        "--allow-empty",
        action="store_true",
        help="let a watched directory that held records go empty (deleting them all); "
        "default: refused unless it holds a .hive-allow-empty file (HIVE_ALLOW_EMPTY)",
    )
    serve.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="a YAML file of settings (the flags' names as keys, `git:` a list of sources; "
        "HIVE_CONFIG); HIVE_* variables and flags override it",
    )
    serve.add_argument("--home", type=Path, help=HOME_HELP)
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 7835)")
    serve.add_argument(
        "--resync-interval",
        type=float,
        metavar="SECONDS",
        help="seconds between full re-observations (default 30)",
    )
    serve.add_argument(
        "--token",
        help="bearer token every request but GET /health must carry (HIVE_TOKEN); required "
        "to bind beyond loopback",
    )
    serve.add_argument(
        "--cors-origin",
        action="append",
        metavar="ORIGIN",
        help="a browser origin (https://host:port) whose pages may call the API (repeatable; "
        "HIVE_CORS_ORIGINS); default: no CORS headers",
    )
    serve.add_argument(
        "--download-rate-limit",
        metavar="RATE",
        help="bandwidth cap for all downloads together, e.g. 20MB/s",
    )
    serve.add_argument(
        "--max-downloads", type=int, metavar="N", help="downloads at the same time (default 2)"
    )
    serve.add_argument(
        "--queen-url", metavar="URL", help="the Queen, passed to workers for their heartbeats"
    )
    serve.add_argument(
        "--worker-host", metavar="ADDR", help="address workers bind to (default 127.0.0.1)"
    )
    serve.add_argument(
        "--worker-ports", metavar="FIRST-LAST", help="ports for workers (default 9000-9999)"
    )
    serve.add_argument(
        "--gpu-probe", metavar="PROBE", help="auto (NVML, default), none, or fake:/path.json"
    )
    serve.add_argument(
        "--stop-workers-on-exit",
        action="store_true",
        help="stop every worker when hive exits (default: leave them running, as kubelet does)",
    )
    serve.add_argument(
        "--label",
        action="append",
        metavar="KEY=VALUE",
        help="a label of this hive, which records' spec.hiveSelector select on (repeatable; "
        "HIVE_LABELS=k=v,k2=v2); hive.name and hive.hostname are set by hive",
    )
    add_git_options(serve)
    serve.set_defaults(func=cmd_serve)

    validate = sub.add_parser("validate", help="check manifests offline (exit 0 ok, 2 errors)")
    validate.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    validate.add_argument("--labels", type=labels_arg, metavar="K=V,...", help=LABELS_HELP)
    validate.set_defaults(func=cmd_validate)

    plan = sub.add_parser(
        "plan", help="what hive would do against a home, offline (exit 0 none, 1 changes, 2 errors)"
    )
    plan.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    plan.add_argument("--home", type=Path, help=HOME_HELP)
    plan.add_argument("--labels", type=labels_arg, metavar="K=V,...", help=LABELS_HELP)
    plan.set_defaults(func=cmd_plan)

    stop = sub.add_parser(
        "stop-workers",
        help="stop the workers a hive left running in its home (`make stop`)",
        description="Stop the workers a hive left running in --home when it exited without "
        "--stop-workers-on-exit (or died): SIGTERM to each worker's process group, its "
        "runtime's grace, then SIGKILL. Only processes that are provably those workers "
        "(pid, start time and hive's markers, as adoption checks) are signalled. Refused "
        "while a hive serves that home.",
    )
    stop.add_argument("--home", type=Path, help=HOME_HELP)
    stop.set_defaults(func=cmd_stop_workers)

    get = sub.add_parser("get", help="show objects of a running hive")
    get.add_argument("what", choices=["models", "workers", "runtimes", "devices", "status"])
    get.add_argument(
        "-o",
        "--output",
        choices=["table", "wide", "json", "yaml"],
        default="table",
        help="table (default), wide (more columns), json or yaml",
    )
    client_options(get)
    get.set_defaults(func=cmd_get)

    logs = sub.add_parser("logs", help="print a worker's log (-f: follow it)")
    logs.add_argument("name")
    logs.add_argument("-f", "--follow", action="store_true", help="stream new lines")
    logs.add_argument("--tail", type=int, default=100, help="lines from the end (default 100)")
    client_options(logs)
    logs.set_defaults(func=cmd_logs)

    delete = sub.add_parser(
        "delete",
        help="delete a model (its api record and files) or a worker (its api record)",
        description=apply.DELETE_DESCRIPTION,
    )
    delete.add_argument("what", choices=["model", "worker"])
    delete.add_argument("name")
    delete.add_argument(
        "--source", default=apply.DEFAULT_SOURCE, help="the HTTP source whose record goes"
    )
    client_options(delete)
    delete.add_argument(
        "--force",
        action="store_true",
        help="delete it even if workers use it (they are stopped until it is back)",
    )
    delete.set_defaults(func=apply.cmd_delete)
    apply.register(sub)
    diff.register(sub)
    events.register(sub)
    job.register(sub)
    source.register(sub)
    for name, command in sub.choices.items():
        if command.description is None:  # `hive NAME --help` says what NAME does
            command.description = _help_of(sub, name)
    p.description = (
        f"hive: the per-machine daemon of an LLM serving fleet. Commands: "
        f"{', '.join(sub.choices)} (`hive COMMAND --help` for each). Errors are one clear line."
    )
    return p


def _help_of(sub: Any, name: str) -> str:
    text = next(a.help for a in sub._choices_actions if a.dest == name)
    return str(text[0].upper() + text[1:] + ".")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except HiveError as exc:
        return fail(exc.message)
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        return fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return fail(f"invalid setting {where}: {first['msg'].removeprefix('Value error, ')}")
    except Exception as exc:  # one line, not a traceback; HIVE_DEBUG=1 shows it
        if os.environ.get("HIVE_DEBUG"):
            raise
        return fail(f"internal error: {type(exc).__name__}: {exc} (set HIVE_DEBUG=1 for details)")
    return code


if __name__ == "__main__":
    sys.exit(main())
