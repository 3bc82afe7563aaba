"""The `hive` command: serve, validate, plan, stop-workers, get, logs, delete. Errors are one
clear line."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hive import __version__
from hive.errors import ApiError, HiveError, is_no_space
from hive.model.ids import SourceName
from hive.model.units import megabytes, megabytes_of
from hive.settings import DEFAULT_URL, Settings

EXIT_OK, EXIT_CHANGES, EXIT_ERRORS = 0, 1, 2
HOME_HELP = "state directory (default: $HIVE_HOME, else ~/.cache/hive; `make run` uses .hive-home)"


def _fail(message: str, code: int = EXIT_ERRORS) -> int:
    print(f"hive: {message}", file=sys.stderr)
    return code


# -- serve -------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from aiohttp import web

    from hive.actuators.home_lock import hold as hold_home
    from hive.actuators.space import RECORDS, no_space
    from hive.api.app import create_app
    from hive.narration.console import RedactingFormatter
    from hive.runtime.manager import Manager

    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    settings = Settings.from_env(
        home=args.home,
        desired=tuple(args.desired) if args.desired else None,
        allow_empty=args.allow_empty or None,
        host=args.host,
        port=args.port,
        resync_interval=args.resync_interval,
        token=args.token,
        download_rate_limit=args.download_rate_limit,
        max_downloads=args.max_downloads,
        queen_url=args.queen_url,
        worker_host=args.worker_host,
        worker_ports=args.worker_ports,
        gpu_probe=args.gpu_probe,
        stop_workers_on_exit=args.stop_workers_on_exit or None,
    )
    if not _is_loopback(settings.host) and not settings.token:
        return _fail(
            f"refusing to listen on {settings.host} without a token: anyone who can reach it "
            "could change this machine; pass --token (or HIVE_TOKEN), or bind 127.0.0.1"
        )
    try:
        # Bind first: a hive that cannot listen must not touch its home at all.
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        sock = socket.create_server((settings.host, settings.port), family=family)
    except OSError as exc:
        return _fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}")
    try:
        lock = hold_home(settings.home)  # held (open) until this process ends
    except HiveError as exc:
        sock.close()
        return _fail(exc.message)
    manager = Manager(settings)
    app = create_app(manager)
    print(
        f"hive {__version__} serving on http://{settings.host}:{settings.port} "
        f"(pid {os.getpid()}, home {settings.home})",
        file=sys.stderr,
        flush=True,
    )
    try:
        web.run_app(
            app,
            sock=sock,
            print=None,
            access_log=None,
            handle_signals=True,
            shutdown_timeout=5,
            loop=asyncio.new_event_loop(),
        )
    except OSError as exc:
        if not is_no_space(exc):
            raise
        # A full home at start (hive's own records: its instance id, state): said as the
        # condition it is, with the room needed and free, not a bare "No space left".
        full = no_space(
            exc,
            where=settings.home,
            needed=f"{RECORDS} needed",
            kept="start hive again once space is freed",
        )
        return _fail(f"cannot start: {full.message}")
    finally:
        os.close(lock)
    return EXIT_OK


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


# -- validate and plan -------------------------------------------------------------------
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


def _home_note(home: Path) -> None:
    """`plan` and `stop-workers` read a home: say so when it does not exist (a wrong
    --home is the usual reason: `make run` serves .hive-home, not the default)."""
    if not home.is_dir():
        print(
            f"hive: home {home} does not exist: nothing observed there (pass --home or set "
            "HIVE_HOME to the home `hive serve` uses; `make run` uses .hive-home)",
            file=sys.stderr,
        )


def cmd_plan(args: argparse.Namespace) -> int:
    from hive.cli_plan import plan_all

    records, problems = _read(args.paths)
    for problem in problems:
        print(problem)
    if problems:
        return EXIT_ERRORS
    settings = Settings.from_env(home=args.home)
    _home_note(settings.home)
    lines = plan_all(records, settings=settings)
    for line in lines:
        print(line)
    if not lines:
        print(f"nothing to do: {settings.home} matches {len(records)} record(s)")
        return EXIT_OK
    return EXIT_CHANGES


def cmd_stop_workers(args: argparse.Namespace) -> int:
    """`hive stop-workers`: stop the workers a hive left running in its home, holding the
    home's lock throughout (no hive can start there and adopt them meanwhile)."""
    from hive.actuators.home_lock import SERVE, STOP_WORKERS, HomeInUse, hold
    from hive.actuators.stop_workers import stop_left_running

    home = Settings.from_env(home=args.home).home
    _home_note(home)
    if not (home / "state").is_dir():  # no hive ever ran workers there: nothing to lock
        print(f"no worker left running in {home}")
        return EXIT_OK
    try:
        lock = hold(home, command=STOP_WORKERS)
    except HomeInUse as exc:
        if exc.command != SERVE:
            return _fail(exc.message)
        return _fail(
            f"a hive (pid {exc.pid or '?'}) is serving {home}: it would start its workers "
            "again; stop it first (Ctrl-C, or SIGTERM), with --stop-workers-on-exit to take "
            "them along"
        )
    try:
        stopped = stop_left_running(home, say=print)
    finally:
        os.close(lock)
    print(f"{stopped} worker(s) stopped" if stopped else f"no worker left running in {home}")
    return EXIT_OK


# -- get ---------------------------------------------------------------------------------
def _fetch(url: str, path: str, *, method: str = "GET", token: str | None = None) -> Any:
    request = urllib.request.Request(url.rstrip("/") + path, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            error = json.load(exc)["error"]
            message = error["message"]
        except (ValueError, KeyError, TypeError):
            error, message = {}, exc.reason
        raise ApiError(f"{url}{path}: {exc.code} {message}", status=exc.code, error=error) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise HiveError(
            f"cannot reach hive at {url}: {reason} (is `hive serve` running?)"
        ) from None


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _size(n: int | None) -> str:
    """In the narration's unit (`megabytes`): the table and the log agree."""
    return "-" if n is None else megabytes(n)


def _progress(download: dict[str, Any] | None) -> str:
    """`45% 450 MB / 1,000 MB` for a partial download (as the log says it), `-` for none."""
    if not download:
        return "-"
    done, total = download["bytes_on_disk"], download.get("total_bytes")
    if not total:
        return _size(done)
    return f"{100 * done // total}% {megabytes_of(done, total)}"


def _models_table(items: list[dict[str, Any]]) -> str:
    rows = [["NAME", "PHASE", "SIZE", "PARTIAL", "ARCH", "QUANT", "SOURCE", "MESSAGE"]]
    for m in items:
        observed = m.get("observed") or {}
        meta = observed.get("metadata") or {}
        spec = m.get("spec") or {}
        status = m.get("status") or {}
        rows.append(
            [
                m["name"],
                status.get("phase", "-"),
                _size(meta.get("size") if meta.get("status") == "Available" else None),
                _progress(observed.get("download")),
                meta.get("architecture") or "-",
                meta.get("quantization") or "-",
                spec.get("source") or meta.get("source") or "-",  # redacted by hive
                status.get("message") or "",
            ]
        )
    return _table(rows)


def _status_table(data: dict[str, Any]) -> str:
    lines = [
        f"hive id {data['hive_id']} (HIVE_HIVE_ID, else the machine's hostname): "
        f"{data['status']}, up {data['uptime_seconds']}s, "
        f"home {data['home']}, synced: {'yes' if data['synced'] else 'no'}",
        "",
    ]
    rows = [["SOURCE", "SYNCED", "LAST SYNC", "RECORDS", "ERRORS"]]
    for s in data["sources"]:
        rows.append(
            [
                s["name"],
                "yes" if s["synced"] else "no",
                s["last_sync_time"] or "-",
                str(s["records"]),
                str(len(s["errors"])),
            ]
        )
    lines.append(_table(rows))
    for s in data["sources"]:
        lines.extend(f"  error: {e['text']}" for e in s["errors"])
    lines.append("")
    for kind, counts in data["objects"].items():
        summary = ", ".join(f"{n} {phase}" for phase, n in sorted(counts.items())) or "none"
        lines.append(f"{kind}s: {summary}")
    return "\n".join(lines)


def cmd_delete(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get("HIVE_TOKEN")
    path = f"/v1/models/{args.name}" + ("?force=true" if args.force else "")
    try:
        data = _fetch(args.url, path, method="DELETE", token=token)
    except ApiError as exc:
        users = exc.error.get("workers")
        if exc.reason != "ModelInUse" or not isinstance(users, list):
            raise
        listed = ", ".join(str(u) for u in users)
        return _fail(
            f"model {args.name} is not deleted: worker(s) {listed} use it. Remove or stop "
            f"them first, or run `hive delete model {args.name} --force` to delete it anyway "
            "(hive stops them; they start again once the model is back)"
        )
    removed = data.get("partial_bytes_removed") or 0
    extra = f" (with a partial download of {_size(removed)})" if removed else ""
    stopped = data.get("workers") or []
    if stopped:
        extra += f"; worker(s) {', '.join(stopped)} are stopped until it is back"
    print(f"model {data['deleted']} deleted{extra}")
    return EXIT_OK


def worker_status(status: dict[str, Any]) -> str:
    """STATUS as kubectl shows a pod's: what is wrong when something is (the Degraded
    reason: CrashLoopBackOff, Unschedulable, …), else the phase."""
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Degraded" and condition.get("status") == "True":
            return str(condition.get("reason") or status.get("phase", "-"))
    return str(status.get("phase", "-"))


def _workers_table(items: list[dict[str, Any]]) -> str:
    rows = [["NAME", "STATUS", "MODEL", "DEVICE", "PID", "PORT", "RESTARTS", "AGE", "MESSAGE"]]
    for w in items:
        observed = w.get("observed") or {}
        spec = w.get("spec") or {}
        status = w.get("status") or {}
        uptime = observed.get("uptime_seconds")
        rows.append(
            [
                w["name"],
                worker_status(status),
                observed.get("model") or spec.get("model") or "-",
                observed.get("device") or spec.get("device") or "-",
                str(observed.get("pid") or "-"),
                str(observed.get("port") or "-"),
                str(observed.get("restarts", 0)),
                f"{uptime}s" if uptime is not None else "-",
                status.get("message") or "",
            ]
        )
    return _table(rows)


def _runtimes_table(data: dict[str, Any]) -> str:
    rows = [["ID", "TYPE", "AVAILABLE", "ARGS", "ORIGIN"]]
    for r in data["items"]:
        rows.append(
            [
                r["id"],
                r["worker_type"],
                "yes" if r["available"] else f"no: {r['unavailable_reason']}",
                ",".join(sorted(r["args"])) or "-",
                r["origin"],
            ]
        )
    lines = [_table(rows)]
    lines.extend(f"  error: {e['path']}: {e['message']}" for e in data["errors"])
    return "\n".join(lines)


def cmd_logs(args: argparse.Namespace) -> int:
    """`hive logs NAME [-f]`: the worker's log, and with -f every new line as it comes."""
    path = f"/v1/workers/{args.name}/logs?tail={args.tail}"
    if not args.follow:
        request = urllib.request.Request(args.url.rstrip("/") + path)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                sys.stdout.write(response.read().decode("utf-8", "replace"))
        except urllib.error.HTTPError:
            _fetch(args.url, path)  # raises with hive's message
        except (urllib.error.URLError, OSError) as exc:
            return _fail(f"cannot reach hive at {args.url}: {getattr(exc, 'reason', exc)}")
        return EXIT_OK
    try:
        with urllib.request.urlopen(args.url.rstrip("/") + path + "&follow=1") as response:
            for raw in response:
                line = raw.decode("utf-8", "replace")
                if line.startswith("data: "):
                    print(json.loads(line[6:])["line"], flush=True)
    except urllib.error.HTTPError:
        _fetch(args.url, path)
    except KeyboardInterrupt:
        pass
    except (urllib.error.URLError, OSError) as exc:
        return _fail(f"cannot reach hive at {args.url}: {getattr(exc, 'reason', exc)}")
    return EXIT_OK


def cmd_get(args: argparse.Namespace) -> int:
    if args.what == "models":
        data = _fetch(args.url, "/v1/models")
        table = _models_table(data["items"])
    elif args.what == "workers":
        data = _fetch(args.url, "/v1/workers")
        table = _workers_table(data["items"])
    elif args.what == "runtimes":
        data = _fetch(args.url, "/v1/runtimes")
        table = _runtimes_table(data)
    else:
        data = _fetch(args.url, "/v1/status")
        table = _status_table(data)
    if args.output == "json":
        print(json.dumps(data, indent=2))
    elif args.output == "yaml":
        print(yaml.safe_dump(data, sort_keys=False), end="")
    else:
        print(table)
    return EXIT_OK


# -- main --------------------------------------------------------------------------------
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
        help="bearer token for mutating requests (HIVE_TOKEN); required to bind beyond loopback",
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
    serve.set_defaults(func=cmd_serve)

    validate = sub.add_parser("validate", help="check manifests offline (exit 0 ok, 2 errors)")
    validate.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    validate.set_defaults(func=cmd_validate)

    plan = sub.add_parser(
        "plan", help="what hive would do against a home, offline (exit 0 none, 1 changes, 2 errors)"
    )
    plan.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    plan.add_argument("--home", type=Path, help=HOME_HELP)
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
    get.add_argument("what", choices=["models", "workers", "runtimes", "status"])
    get.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    get.add_argument("--url", default=DEFAULT_URL, help=f"hive's URL (default {DEFAULT_URL})")
    get.set_defaults(func=cmd_get)

    logs = sub.add_parser("logs", help="print a worker's log (-f: follow it)")
    logs.add_argument("name")
    logs.add_argument("-f", "--follow", action="store_true", help="stream new lines")
    logs.add_argument("--tail", type=int, default=100, help="lines from the end (default 100)")
    logs.add_argument("--url", default=DEFAULT_URL, help=f"hive's URL (default {DEFAULT_URL})")
    logs.set_defaults(func=cmd_logs)

    delete = sub.add_parser("delete", help="delete a model's files (one no record wants)")
    delete.add_argument("what", choices=["model"])
    delete.add_argument("name")
    delete.add_argument("--url", default=DEFAULT_URL, help=f"hive's URL (default {DEFAULT_URL})")
    delete.add_argument("--token", help="hive's token (default: HIVE_TOKEN)")
    delete.add_argument(
        "--force",
        action="store_true",
        help="delete it even if workers use it (they are stopped until it is back)",
    )
    delete.set_defaults(func=cmd_delete)
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
        return _fail(exc.message)
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        return _fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return _fail(f"invalid setting {where}: {first['msg'].removeprefix('Value error, ')}")
    except Exception as exc:  # one line, not a traceback; HIVE_DEBUG=1 shows it
        if os.environ.get("HIVE_DEBUG"):
            raise
        return _fail(f"internal error: {type(exc).__name__}: {exc} (set HIVE_DEBUG=1 for details)")
    return code


if __name__ == "__main__":
    sys.exit(main())
