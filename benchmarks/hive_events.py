"""hive's event stream as B5, B6 and B12 read it: GET /v1/events through `hive.client` (the
one SSE reader), in a thread of its own, every event kept with the time it arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass

from hive.client import HiveClient
from hive.model.events import Event


@dataclass(frozen=True)
class Arrival:
    at: float  # time.monotonic() in this process, when the event arrived
    event: Event

    @property
    def hive_time(self) -> float:
        """The event's own timestamp (hive's wall clock), as seconds since the epoch."""
        return self.event.time.timestamp()


class EventStream:
    """GET /v1/events, read in a thread of its own, every event kept with its arrival.

    `pause` disconnects, so that hive serializes nothing for this client (B6: supervisord
    has no client to feed while its workers exit either); `resume` reconnects with
    `Last-Event-ID`, and hive replays what it narrated meanwhile from its buffer."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._cond = threading.Condition()
        self._events: list[Arrival] = []
        self._connected = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._client: HiveClient | None = None
        self._reader: asyncio.Task[None] | None = None
        self._last_id: int | None = None
        self._thread = threading.Thread(target=self._run, name="sse", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._wait_connected()

    def _wait_connected(self) -> None:
        if not self._connected.wait(30):
            raise RuntimeError(f"B5: no answer from {self._url}/v1/events: {self._error!r}")

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    def pause(self) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._stop_reading(), self._loop).result(10)

    def resume(self) -> None:
        assert self._loop is not None
        self._connected.clear()
        asyncio.run_coroutine_threadsafe(self._start_reading(), self._loop).result(10)
        self._wait_connected()

    def mark(self) -> int:
        with self._cond:
            return len(self._events)

    def since(self, index: int) -> list[Arrival]:
        with self._cond:
            return self._events[index:]

    def first_of_each(
        self, action: str, objects: set[str], *, since: int, timeout: float
    ) -> dict[str, Arrival]:
        """The first `action` event of each object, once every object has had one."""
        found: dict[str, Arrival] = {}
        position = since
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for arrival in self._events[position:]:
                    obj = arrival.event.object
                    if arrival.event.action == action and obj in objects:
                        found.setdefault(obj, arrival)
                position = len(self._events)
                if len(found) == len(objects):
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or self._error is not None:
                    raise RuntimeError(
                        f"B5: {len(found)} of {len(objects)} {action} events after "
                        f"{timeout:.0f}s ({self._error!r})"
                    )
                self._cond.wait(min(left, 1.0))

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        self._error = exc
        with self._cond:
            self._cond.notify_all()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with HiveClient(self._url) as client:
            self._client = client
            await self._start_reading()
            await self._stop.wait()
            await self._stop_reading()

    async def _start_reading(self) -> None:
        def done(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                self._failed(task.exception())  # type: ignore[arg-type]

        self._reader = asyncio.create_task(self._read())
        self._reader.add_done_callback(done)

    async def _stop_reading(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _read(self) -> None:
        """Every event, as it comes; hive's events-dropped notice (this reader fell
        behind) is skipped: a wait for the events it lost times out and says so."""
        assert self._client is not None
        stream = self._client.events(last_event_id=self._last_id, on_open=self._connected.set)
        async for item in stream:
            now = time.monotonic()
            if not isinstance(item, Event):
                continue
            self._last_id = item.id
            with self._cond:
                self._events.append(Arrival(now, item))
                self._cond.notify_all()
