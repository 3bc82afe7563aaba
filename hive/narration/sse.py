"""Server-Sent Events framing, the `/v1/events` stream over the narration bus, and a
worker log followed line by line."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from hive.model.events import Event
from hive.narration.bus import Gap, Subscription


def sse_frame(data: dict[str, Any] | str, *, event_id: int | None = None) -> bytes:
    payload = (
        data
        if isinstance(data, str)
        else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    )
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}data: {payload}\n\n".encode()


def event_frame(item: Event | Gap) -> bytes:
    if isinstance(item, Gap):
        # No id: a client that reconnects resumes after the last event it really got.
        return sse_frame(item.as_data())
    return sse_frame(item.model_dump(mode="json"), event_id=item.id)


async def open_sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    return response


async def stream_subscription(
    request: web.Request, subscription: Subscription, *, keepalive: float
) -> web.StreamResponse:
    """Write events to the client until it goes away; a comment line every `keepalive` s."""
    response = await open_sse(request)
    await response.write(b": connected\n\n")
    try:
        while not subscription.closed:
            batch = await subscription.next_batch(wait=keepalive)
            transport = request.transport
            if transport is None or transport.is_closing():
                # The client went away: serialize nothing for it (after 100 workers stop,
                # one batch is hundreds of events, on a loop that the exiting workers
                # already starve).
                break
            if not batch:
                await response.write(b": keep-alive\n\n")
                continue
            await response.write(b"".join(event_frame(item) for item in batch))
    except (ConnectionResetError, ConnectionError):
        pass
    return response


def _read_from(path: Path, position: int, limit: int = 1 << 20) -> tuple[int, bytes]:
    """The file's size, and up to `limit` bytes from `position`."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            if size <= position:
                return size, b""
            fh.seek(position)
            return size, fh.read(min(size - position, limit))
    except FileNotFoundError:
        return 0, b""


async def stream_file_lines(
    request: web.Request,
    *,
    path: Path,
    start: int,
    initial: list[str],
    stopped: Callable[[], bool],
    interval: float = 0.25,
    keepalive: float = 15.0,
) -> web.StreamResponse:
    """`tail -f` as SSE: the `initial` lines, then each line of `path` after byte `start`
    as `data: {"line": ...}`. A file that shrank was rotated (copytruncate): read from 0."""
    response = await open_sse(request)
    await response.write(b"".join(sse_frame({"line": line}) for line in initial))
    position = start
    pending = b""
    quiet = 0.0
    try:
        while not stopped():
            size, chunk = await asyncio.to_thread(_read_from, path, position)
            if size < position:
                position, pending = 0, b""
                size, chunk = await asyncio.to_thread(_read_from, path, 0)
            if chunk:
                position += len(chunk)
                *lines, pending = (pending + chunk).split(b"\n")
                frames = [sse_frame({"line": ln.decode("utf-8", "replace")}) for ln in lines]
                if frames:
                    await response.write(b"".join(frames))
                    quiet = 0.0
            elif quiet >= keepalive:
                await response.write(b": keep-alive\n\n")
                quiet = 0.0
            await asyncio.sleep(interval)
            quiet += interval
    except (ConnectionResetError, ConnectionError):
        pass
    return response
