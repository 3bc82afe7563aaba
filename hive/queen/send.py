"""One POST of JSON to the Queen, with a timeout; every way it can fail becomes one short,
redacted line (the reason the status and the events show), never an exception."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from hive.client import connection_cause
from hive.model.text import show_text, show_url

#: Bytes of the Queen's answer read (an ack is a few dozen).
_MAX_ANSWER = 64 * 1024


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
        return None, f"POST {show_url(url)}: {show_text(connection_cause(exc))}"
