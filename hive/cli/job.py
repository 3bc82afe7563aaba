"""`hive job OPERATION key=value…`: one of rbee's job operations (`POST /v1/jobs`), its
narration followed (`GET /v1/jobs/{id}/stream`) and printed line by line, a progress bar
for downloads; exit 0 on `[DONE]`, 1 on `[ERROR]` or `[CANCELLED]`; Ctrl-C cancels the job
(`DELETE /v1/jobs/{id}`) and exits 130."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from typing import Any

from hive.cli.common import EXIT_ERRORS, EXIT_OK, api_message, client_options, fail, token_of
from hive.errors import ApiError, HiveError
from hive.model.views import JobEnd, JobLine

EXIT_FAILED, EXIT_INTERRUPTED = 1, 130
#: Keys whose `a,b` value is a list (rbee's kill operations take a pid or name, or lists).
LIST_KEYS = frozenset({"pid", "pids", "name", "names"})
PROGRESS = "model_download_progress"


def register(sub: Any) -> None:
    job = sub.add_parser(
        "job",
        help="run one of rbee's job operations and follow its narration",
        description='POST {"operation": OPERATION, "hive_id": ..., key: value, ...} to a '
        "running hive's job API (hive_id: the hive's own unless given), then print each "
        "line the job narrates until it ends: exit 0 on [DONE], 1 on [ERROR] (printed) or "
        "[CANCELLED]; downloads show a progress bar on a terminal. Ctrl-C cancels the job "
        "and exits 130. Values: digits are integers (device=0), `a,b` is a list for "
        "pid and name(s) (pid=41,42), key:=JSON takes any JSON (model:='\"123\"', "
        "count:=2). Examples: `hive job model_list`, `hive job worker_spawn "
        "model=tiny-llama worker=cpu device=0`, `hive job worker_process_delete pid=4242`.",
    )
    job.add_argument("operation", help="model_list, model_download, worker_spawn, …")
    job.add_argument("fields", nargs="*", metavar="key=value", help="the operation's fields")
    client_options(job)
    job.set_defaults(func=cmd_job)


def _scalar(text: str) -> int | str:
    return int(text) if text.isascii() and text.isdigit() else text


def parse_fields(fields: list[str]) -> dict[str, Any]:
    """`key=value` and `key:=json` into the operation's fields; ValueError says which."""
    out: dict[str, Any] = {}
    for field in fields:
        key, sep, value = field.partition("=")
        if not sep or not key or key == ":":
            raise ValueError(f"{field!r} is not key=value (or key:=JSON)")
        if key.endswith(":"):
            key = key[:-1]
            try:
                out[key] = json.loads(value)
            except ValueError as exc:
                raise ValueError(f"{key}:= takes JSON: {exc}") from None
        elif key in LIST_KEYS and "," in value:
            out[key] = [_scalar(v) for v in value.split(",") if v]
        else:
            out[key] = _scalar(value)
    return out


class _Screen:
    """Lines on stdout; on a terminal, a rich progress bar per download beneath them."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(highlight=False, soft_wrap=True)
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    def event(self, event: JobLine) -> None:
        message = event.message or event.human or event.formatted or ""
        done, total = event.data.get("bytes_downloaded"), event.data.get("total_bytes")
        if event.action == PROGRESS and self.console.is_terminal and isinstance(done, int):
            self._bar(event.object or event.target or "", done, total)
            return
        self.line(message)

    def _bar(self, what: str, done: int, total: Any) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        if self._progress is None:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._progress.start()
        task = self._tasks.get(what)
        if task is None:
            task = self._tasks[what] = self._progress.add_task(what or "download", total=None)
        self._progress.update(task, completed=done, total=total if isinstance(total, int) else None)

    def line(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, markup=False)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


async def _run(args: argparse.Namespace, fields: dict[str, Any], screen: _Screen) -> int:
    from hive.client import HiveClient

    async with HiveClient(args.url, token=token_of(args)) as hive:
        if "hive_id" not in fields:
            fields = {"hive_id": (await hive.status()).hive_id, **fields}
        accepted = await hive.submit_job({"operation": args.operation, **fields})
        try:
            async for item in hive.job_stream(accepted.job_id):
                if isinstance(item, JobLine):
                    screen.event(item)
                    continue
                screen.close()
                return _ended(item, accepted.job_id)
        except asyncio.CancelledError:  # Ctrl-C: the job is cancelled too
            screen.close()
            with contextlib.suppress(HiveError):
                await hive.cancel_job(accepted.job_id)
            print(f"hive: job {accepted.job_id} cancelled (Ctrl-C)", file=sys.stderr)
            return EXIT_INTERRUPTED
    screen.close()
    print(
        f"hive: the stream of job {accepted.job_id} ended without [DONE] (did hive stop?)",
        file=sys.stderr,
    )
    return EXIT_FAILED


def _ended(end: JobEnd, job_id: str) -> int:
    if end.outcome == "done":
        return EXIT_OK
    if end.outcome == "error":
        return fail(f"job {job_id} failed: {end.reason}", EXIT_FAILED)
    return fail(f"job {job_id} was cancelled", EXIT_FAILED)


def cmd_job(args: argparse.Namespace) -> int:
    try:
        fields = parse_fields(args.fields)
    except ValueError as exc:
        return fail(str(exc))
    screen = _Screen()
    try:
        return asyncio.run(_run(args, fields, screen))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except ApiError as exc:
        if api_message(exc) == "POST /v1/jobs: Not Found":  # the route itself is not there
            return fail(f"the hive at {args.url} has no job API (POST /v1/jobs: 404)")
        return fail(api_message(exc), EXIT_ERRORS)
    finally:
        screen.close()
