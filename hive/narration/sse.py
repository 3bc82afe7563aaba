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
        return gap_frame(item)
    return sse_frame(item.model_dump(mode="json"), event_id=item.id)


def gap_frame(gap: Gap) -> bytes:
    # No id: a client that reconnects resumes after the last event it really got.
    return sse_frame(gap.as_data())


#: A stream that wrote this many events within BURST_WINDOW seconds is in a burst (1,000
#: events a second: 100 workers stopping at once, a benchmark; a model's whole download
#: narrates a few dozen).
BURST_FRAMES = 100
BURST_WINDOW = 0.1


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
    request: web.Request,
    subscription: Subscription,
    *,
    keepalive: float,
    flush_interval: float = 0.0,
) -> web.StreamResponse:
    """Write events to the client until it goes away; a comment line every `keepalive` s.

    Each write carries every event the client has not had (up to the bus's READ_LIMIT),
    each encoded once for all streams (`Bus.frames`), and waits until the client took it.
    In a burst (BURST_FRAMES events written within BURST_WINDOW seconds: far more than
    hive narrates at work), a stream that caught up pauses `flush_interval` seconds before
    its next write, so that the burst goes out in a few large writes per stream rather than
    one per turn of the loop; otherwise every event goes out at once."""
    response = await open_sse(request)
    await response.write(b": connected\n\n")
    loop = asyncio.get_running_loop()
    window_start, window_frames = loop.time(), 0
    try:
        while not subscription.closed:
            arrived = await subscription.ready(keepalive)
            transport = request.transport
            if transport is None or transport.is_closing():
                # The client went away: encode nothing for it (after 100 workers stop, a
                # batch is hundreds of events, on a loop the exiting workers starve).
                break
            if not arrived:
                await response.write(b": keep-alive\n\n")
                continue
            data, frames = subscription.take_frames(encode=event_frame, encode_gap=gap_frame)
            if data:
                await response.write(data)
            now = loop.time()
            if now - window_start > BURST_WINDOW:
                window_start, window_frames = now, 0
            window_frames += frames
            bursting = window_frames >= BURST_FRAMES
            if flush_interval > 0 and bursting and not subscription.behind:
                await asyncio.sleep(flush_interval)
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
