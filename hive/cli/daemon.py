"""The daemon's start and its end: `hive serve` (bind, hold the home, run the manager and
the API) and `hive stop-workers` (stop the workers a hive left running in its home)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys

from hive import __version__
from hive.cli.common import EXIT_OK, fail, home_note
from hive.errors import HiveError, is_no_space
from hive.settings import Settings


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
        config=args.config,
        home=args.home,
        desired=tuple(args.desired) if args.desired else None,
        allow_empty=args.allow_empty or None,
        git=tuple(args.git) if getattr(args, "git", None) else None,
        host=args.host,
        port=args.port,
        resync_interval=args.resync_interval,
        token=args.token,
        cors_origins=tuple(args.cors_origin) if args.cors_origin else None,
        download_rate_limit=args.download_rate_limit,
        max_downloads=args.max_downloads,
        queen_url=args.queen_url,
        worker_host=args.worker_host,
        worker_ports=args.worker_ports,
        gpu_probe=args.gpu_probe,
        stop_workers_on_exit=args.stop_workers_on_exit or None,
        labels=args.label,
    )
    if not _is_loopback(settings.host) and not settings.token:
        return fail(
            f"refusing to listen on {settings.host} without a token: anyone who can reach it "
            "could change this machine; pass --token (or HIVE_TOKEN), or bind 127.0.0.1"
        )
    try:
        # Bind first: a hive that cannot listen must not touch its home at all.
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        sock = socket.create_server((settings.host, settings.port), family=family)
    except OSError as exc:
        return fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}")
    try:
        lock = hold_home(settings.home)  # held (open) until this process ends
    except HiveError as exc:
        sock.close()
        return fail(exc.message)
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
        return fail(f"cannot start: {full.message}")
    finally:
        os.close(lock)
    return EXIT_OK


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def cmd_stop_workers(args: argparse.Namespace) -> int:
    """`hive stop-workers`: stop the workers a hive left running in its home, holding the
    home's lock throughout (no hive can start there and adopt them meanwhile)."""
    from hive.actuators.home_lock import SERVE, STOP_WORKERS, HomeInUse, hold
    from hive.actuators.stop_workers import stop_left_running

    settings = Settings.from_env(home=args.home)
    home = settings.home
    home_note(home)
    if not (home / "state").is_dir():  # no hive ever ran workers there: nothing to lock
        print(f"no worker left running in {home}")
        return EXIT_OK
    try:
        lock = hold(home, command=STOP_WORKERS)
    except HomeInUse as exc:
        if exc.command != SERVE:
            return fail(exc.message)
        return fail(
            f"a hive (pid {exc.pid or '?'}) is serving {home}: it would start its workers "
            "again; stop it first (Ctrl-C, or SIGTERM), with --stop-workers-on-exit to take "
            "them along"
        )
    try:
        stopped = stop_left_running(home, say=print, portable=settings.portable)
    finally:
        os.close(lock)
    print(f"{stopped} worker(s) stopped" if stopped else f"no worker left running in {home}")
    return EXIT_OK
