"""What the `hive` commands share: the exit codes, one-line errors, the note on a missing
home, and the options of every command that talks to a running hive (`--url`, `--token`)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hive.errors import ApiError
from hive.settings import DEFAULT_URL

EXIT_OK, EXIT_CHANGES, EXIT_ERRORS = 0, 1, 2
HOME_HELP = "state directory (default: $HIVE_HOME, else ~/.cache/hive; `make run` uses .hive-home)"


def fail(message: str, code: int = EXIT_ERRORS) -> int:
    print(f"hive: {message}", file=sys.stderr)
    return code


def home_note(home: Path) -> None:
    """`plan` and `stop-workers` read a home: say so when it does not exist (a wrong
    --home is the usual reason: `make run` serves .hive-home, not the default)."""
    if not home.is_dir():
        print(
            f"hive: home {home} does not exist: nothing observed there (pass --home or set "
            "HIVE_HOME to the home `hive serve` uses; `make run` uses .hive-home)",
            file=sys.stderr,
        )


def client_options(command: argparse.ArgumentParser) -> None:
    """`--url` and `--token`, for a command that talks to a running hive (its reads need
    the token too, when hive has one)."""
    command.add_argument("--url", default=DEFAULT_URL, help=f"hive's URL (default {DEFAULT_URL})")
    command.add_argument(
        "--token", help="the token hive was started with (default: $HIVE_TOKEN, if set)"
    )


def token_of(args: argparse.Namespace) -> str | None:
    """The token to send: --token, else $HIVE_TOKEN, else none."""
    token: str | None = args.token or os.environ.get("HIVE_TOKEN") or None
    return token


def api_message(exc: ApiError) -> str:
    """hive's own message (without the URL and status the client puts before it)."""
    message = exc.error.get("message")
    return str(message) if message else exc.message


def api_problems(exc: ApiError) -> list[str]:
    """Every problem of a 422 (`file:line: field: message`), or none."""
    problems = exc.error.get("problems")
    return [str(p) for p in problems] if isinstance(problems, list) else []
