"""The machine's latest reading as a live frame for `/v1/events?samples=true`: what the
dashboard's tables and cards show that no event tells (a worker's CPU %, memory and VRAM;
the machine's CPU, RAM, disk and GPUs), pushed once per system sample instead of polled.

One frame per sample, encoded once for every stream that asked for it: `event: sample`,
no `id` (a sample is not narration: it is not kept in the event buffer, not replayed, and
does not move a client's `Last-Event-ID`). Streams wait on `wait` and take `frame`."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import Any

from hive.model.machine import SystemSample
from hive.model.workers import WorkerMetrics
from hive.narration.sse import NextFrames


class SampleFeed:
    def __init__(self) -> None:
        #: The latest frame (empty before the first sample) and how many were published.
        self.frame = b""
        self.seq = 0
        self._changed = asyncio.Event()

    def publish(
        self,
        sample: SystemSample,
        *,
        workers: Mapping[str, WorkerMetrics | None],
        pids: Mapping[str, int],
    ) -> None:
        """Make `sample` the frame streams send next (`pids`: each worker's process;
        `workers`: what its own /metrics said, None when not scraped) and wake them."""
        self.frame = sample_frame(sample, workers=workers, pids=pids)
        self.seq += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self, seen: int) -> None:
        """Return once a frame newer than number `seen` is published."""
        while self.seq == seen:
            await self._changed.wait()


def sample_frame(
    sample: SystemSample,
    *,
    workers: Mapping[str, WorkerMetrics | None],
    pids: Mapping[str, int],
) -> bytes:
    processes = sample.processes
    data: dict[str, Any] = {
        "time": sample.taken_at.isoformat().replace("+00:00", "Z"),
        "cpu_percent": sample.cpu_percent,
        "memory_used_bytes": sample.memory_used_bytes,
        "memory_total_bytes": sample.memory_total_bytes,
        "disk_free_bytes": sample.disk_free_bytes,
        "disk_total_bytes": sample.disk_total_bytes,
        "load_average": list(sample.load_average),
        "gpus": [g.model_dump(mode="json") for g in sample.gpus],
        "workers": {},
    }
    for name, pid in sorted(pids.items()):
        process = processes.get(pid)
        if process is None:
            continue
        metrics = workers.get(name)
        data["workers"][name] = {
            "pid": pid,
            "cpu_percent": process.cpu_pct,
            "rss_bytes": process.rss_mb * (1 << 20),
            "vram_mb": process.vram_mb,
            "uptime_s": process.uptime_s,
            "tokens_per_second": metrics.avg_tokens_per_sec if metrics else None,
            "busy_slots": metrics.busy_slots if metrics else None,
        }
    body = json.dumps(data, separators=(",", ":"))
    return f"event: sample\ndata: {body}\n\n".encode()


def with_samples(events: NextFrames, feed: SampleFeed) -> NextFrames:
    """`events`' frames with the feed's: whichever comes first is written first; a call
    of `events` that a sample overtook is kept for the next turn (nothing is lost)."""
    pending: asyncio.Future[bytes | None] | None = None
    seen = feed.seq

    async def next_frames(within: float) -> bytes | None:
        nonlocal pending, seen
        if feed.seq != seen:
            seen = feed.seq
            return feed.frame
        if pending is None:
            pending = asyncio.ensure_future(events(within))
        waiter: asyncio.Future[bytes | None] = asyncio.ensure_future(_after(feed, seen))
        try:
            await asyncio.wait({pending, waiter}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pending.cancel()
            raise
        finally:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
        if pending.done():
            done, pending = pending, None
            return done.result()
        seen = feed.seq
        return feed.frame

    return next_frames


async def _after(feed: SampleFeed, seen: int) -> bytes | None:
    await feed.wait(seen)
    return None
