"""What the client commands added for issue 15 share: `--url` and `--token` (default
HIVE_TOKEN), and an API error said as hive said it, on one line."""

from __future__ import annotations

import argparse
import os

from hive.errors import ApiError
from hive.settings import DEFAULT_URL


def add_remote_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=DEFAULT_URL, help=f"hive's URL (default {DEFAULT_URL})")
    parser.add_argument("--token", help="hive's token (default: HIVE_TOKEN)")


def token_of(args: argparse.Namespace) -> str | None:
    token: str | None = getattr(args, "token", None) or os.environ.get("HIVE_TOKEN")
    return token


def api_message(exc: ApiError) -> str:
    """hive's own message (without the URL and status the client puts before it)."""
    message = exc.error.get("message")
    return str(message) if message else exc.message


def api_problems(exc: ApiError) -> list[str]:
    """Every problem of a 422 (`file:line: field: message`), or none."""
    problems = exc.error.get("problems")
    return [str(p) for p in problems] if isinstance(problems, list) else []
