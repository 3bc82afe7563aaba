"""Server-Sent Events framing, and the `/v1/events` stream over the narration bus."""

from __future__ import annotations

import json
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
            if not batch:
                await response.write(b": keep-alive\n\n")
                continue
            await response.write(b"".join(event_frame(item) for item in batch))
    except (ConnectionResetError, ConnectionError):
        pass
    return response
