"""One POST of JSON to the Queen, with a timeout; every way it can fail becomes one short,
redacted line (the reason the status and the events show), never an exception."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiohttp

from hive.model.text import show_text, show_url

#: Bytes of the Queen's answer read (an ack is a few dozen).
_MAX_ANSWER = 64 * 1024


def _cause(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        exc = exc.os_error
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno is not None:
        text = os.strerror(exc.errno) if exc.errno > 0 else exc.strerror
        return f"[Errno {exc.errno}] {text}"
    return show_text(str(exc)) or type(exc).__name__


async def post_json(
    session: aiohttp.ClientSession, url: str, body: Any, *, seconds: float
) -> tuple[int | None, str | None]:
    """POST `body` to `url`: the HTTP status (None without an answer) and, unless the Queen
    answered 2xx, why it failed."""
    try:
        async with session.post(
            url, json=body, timeout=aiohttp.ClientTimeout(total=seconds)
        ) as response:
            await response.content.read(_MAX_ANSWER)  # the ack; never more
            if 200 <= response.status < 300:
                return response.status, None
            why = f"POST {show_url(url)}: {response.status} {response.reason or ''}".rstrip()
            return response.status, why
    except asyncio.CancelledError:
        raise
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        return None, f"POST {show_url(url)}: {_cause(exc)}"
