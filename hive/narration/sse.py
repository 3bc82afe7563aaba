"""Server-Sent Events: the framing, and the one writer of every stream hive serves
(`stream_frames`: keep-alives, a client that went away, hive stopping). Each stream
supplies only its frames: the `/v1/events` stream over the narration bus and a worker log
followed line by line here, a job's lines (api/jobs.py), rbee's telemetry (api/devices.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
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


#: What a stream sends next, waiting up to the given seconds for it: its frames, b"" when
#: nothing came meanwhile (the writer sends a keep-alive comment), None once the stream is
#: over (its last frames came in an earlier answer). The writer asks again only after it
#: wrote the last answer.
NextFrames = Callable[[float], Awaitable[bytes | None]]

KEEPALIVE = b": keep-alive\n\n"


def _never() -> bool:
    return False


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


def client_gone(request: web.Request) -> bool:
    """Whether the client closed its connection (nothing more reaches it)."""
    transport = request.transport
    return transport is None or transport.is_closing()


async def stream_frames(
    request: web.Request,
    next_frames: NextFrames,
    *,
    keepalive: float,
    stopped: Callable[[], bool] = _never,
    first: bytes = b"",
) -> web.StreamResponse:
    """Open the SSE answer, write `first`, then what `next_frames` gives, each write
    awaited, and a keep-alive comment when nothing came within `keepalive` seconds; until
    the source is over, `stopped()` (checked before each wait: a source wakes when it
    turns true), or the client went away (a lost connection is no error: nothing logged)."""
    response = await open_sse(request)
    try:
        if first:
            await response.write(first)
        while not stopped():
            data = await next_frames(keepalive)
            if data is None or client_gone(request):
                break
            await response.write(data or KEEPALIVE)
    except ConnectionError:
        pass
    with contextlib.suppress(ConnectionError, RuntimeError):
        await response.write_eof()
    return response


def subscription_frames(
    request: web.Request, subscription: Subscription, *, flush_interval: float = 0.0
) -> NextFrames:
    """The `/v1/events` stream's frames: every event the client has not had (up to the
    bus's READ_LIMIT), each encoded once for all streams (`Bus.frames`); over once the bus
    closed and every event was read. Nothing is encoded for a client that went away (after
    100 workers stop, a batch is hundreds of events, on a loop the exiting workers starve).

    In a burst (BURST_FRAMES events written within BURST_WINDOW seconds: far more than
    hive narrates at work), a stream that caught up pauses `flush_interval` seconds before
    its next write, so that the burst goes out in a few large writes per stream rather than
    one per turn of the loop; otherwise every event goes out at once."""
    loop = asyncio.get_running_loop()
    window_start, window_frames = loop.time(), 0
    pause = False

    async def next_frames(within: float) -> bytes | None:
        nonlocal window_start, window_frames, pause
        while True:
            if pause:
                pause = False
                await asyncio.sleep(flush_interval)
            if subscription.closed:
                return None
            if not await subscription.ready(within):
                return b""
            if client_gone(request):
                return None
            data, frames = subscription.take_frames(encode=event_frame, encode_gap=gap_frame)
            now = loop.time()
            if now - window_start > BURST_WINDOW:
                window_start, window_frames = now, 0
            window_frames += frames
            bursting = window_frames >= BURST_FRAMES
            pause = flush_interval > 0 and bursting and not subscription.behind
            if data:  # none when every event was for other objects: wait on
                return data

    return next_frames


async def stream_subscription(
    request: web.Request,
    subscription: Subscription,
    *,
    keepalive: float,
    flush_interval: float = 0.0,
) -> web.StreamResponse:
    """Write events to the client until it goes away or hive stops (`subscription_frames`),
    after a `: connected` comment; a comment line every `keepalive` s of quiet."""
    return await stream_frames(
        request,
        subscription_frames(request, subscription, flush_interval=flush_interval),
        keepalive=keepalive,
        first=b": connected\n\n",
    )


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


#: Waits up to the given seconds for hive to stop (at once when it has): whether it did.
UntilStopped = Callable[[float], Awaitable[bool]]


def file_line_frames(
    path: Path, *, start: int, stopped: UntilStopped, interval: float
) -> NextFrames:
    """The lines of `path` after byte `start`, each as `data: {"line": ...}`, read every
    `interval` seconds (over at once when hive stops). A file that shrank was rotated
    (copytruncate): read from 0."""
    position, pending = start, b""
    quiet, polled = 0.0, False

    async def next_frames(within: float) -> bytes | None:
        nonlocal position, pending, quiet, polled
        while True:
            if await stopped(interval if polled else 0.0):
                return None
            quiet += interval if polled else 0.0
            polled = True
            size, chunk = await asyncio.to_thread(_read_from, path, position)
            if size < position:
                position, pending = 0, b""
                size, chunk = await asyncio.to_thread(_read_from, path, 0)
            if chunk:
                position += len(chunk)
                *lines, pending = (pending + chunk).split(b"\n")
                frames = [sse_frame({"line": ln.decode("utf-8", "replace")}) for ln in lines]
                if frames:
                    quiet = 0.0
                    return b"".join(frames)
            elif quiet >= within:
                quiet = 0.0
                return b""

    return next_frames


async def stream_file_lines(
    request: web.Request,
    *,
    path: Path,
    start: int,
    initial: list[str],
    stopped: UntilStopped,
    interval: float = 0.25,
    keepalive: float = 15.0,
) -> web.StreamResponse:
    """`tail -f` as SSE: the `initial` lines, then each new line (`file_line_frames`)."""
    return await stream_frames(
        request,
        file_line_frames(path, start=start, stopped=stopped, interval=interval),
        keepalive=keepalive,
        first=b"".join(sse_frame({"line": line}) for line in initial),
    )
