"""The machinery under one download's body: the helper thread that writes and hashes the
bytes while the next arrive, and aborts the request in flight once the download's cancel
event is set (`Sink`); and the bandwidth limits that pace the receiving (`Throttle`).

The download's own thread (`hive.actuators.download.fetch_model`) receives; the sink is the
only other thread a download has, started and joined by it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from hive.actuators.files import write_all
from hive.actuators.http_get import HttpGet
from hive.core.ratelimit import TokenBucket

#: The receiver reads into buffers of this size, which the sink writes and hashes whole.
SINK_BUFFER = 4 * 1024 * 1024
#: Buffers per download: at most this many wait for the sink before the receiver does.
SINK_BUFFERS = 8
#: How often an idle sink looks at the cancel event (a blocked read is aborted then).
CANCEL_POLL = 0.1


class Sink:
    """A thread that writes the buffers the download's thread fills to their file and
    hashes them, in order, and hands each buffer back for the next read: SINK_BUFFERS
    buffers of SINK_BUFFER bytes at most (the receiver waits when all are taken). While it
    has nothing to write it watches `cancel`: once set, it aborts the request that `watch`
    named, so that a read blocked on a silent server returns at once.

    The first write error (ENOSPC, mostly) is raised to the receiver, by `buffer` and by
    `drain`; the buffers submitted after it are dropped. A context manager: the thread
    runs from `__enter__` to `__exit__`, which joins it. `written(n)` is told of each `n`
    bytes written (hive's download-bytes counter), from the sink's thread."""

    def __init__(
        self, cancel: threading.Event, *, written: Callable[[int], None] | None = None
    ) -> None:
        self._cancel = cancel
        self._written = written
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._made = 0
        self._full: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._error: Exception | None = None
        self._request: HttpGet | None = None
        self._thread = threading.Thread(target=self._run, name="hive-download-sink", daemon=True)

    def __enter__(self) -> Sink:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._full.put(None)
        self._thread.join()

    def watch(self, request: HttpGet | None) -> None:
        """The request that a cancellation aborts from now on (None: none in flight)."""
        self._request = request
        if request is not None and self._cancel.is_set():
            request.abort()

    def buffer(self) -> bytearray:
        """A buffer to read into (waits while the sink has them all)."""
        try:
            buffer = self._free.get_nowait()
        except queue.Empty:
            if self._made < SINK_BUFFERS:  # allocated as needed: a HEAD that fails needs none
                self._made += 1
                buffer = bytearray(SINK_BUFFER)
            else:
                buffer = self._free.get()
        if self._error is not None:
            self._free.put(buffer)
            raise self._error
        return buffer

    def submit(self, fd: int, hasher: Any, buffer: bytearray, size: int) -> None:
        """Write `buffer[:size]` to `fd` and hash it with `hasher`, after what came before."""
        self._full.put((fd, hasher, buffer, size))

    def give_back(self, buffer: bytearray) -> None:
        self._free.put(buffer)

    def drain(self) -> None:
        """Wait until every buffer submitted is written and hashed (then the file may be
        closed); raises the write's error, if one failed since the last drain."""
        drained = threading.Event()
        self._full.put(drained)
        drained.wait()
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _run(self) -> None:
        while True:
            try:
                item = self._full.get(timeout=CANCEL_POLL)
            except queue.Empty:
                request = self._request
                if request is not None and self._cancel.is_set():
                    request.abort()
                continue
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            fd, hasher, buffer, size = item
            if self._error is None:
                try:
                    with memoryview(buffer) as view, view[:size] as data:
                        write_all(fd, data)
                        hasher.update(data)
                    if self._written is not None:
                        self._written(size)
                except Exception as exc:
                    self._error = exc
            self._free.put(buffer)


#: What the sink's queue carries: bytes to write and hash, a drain's mark, or the end.
_Item = tuple[int, Any, bytearray, int] | threading.Event | None


class Throttle:
    """The hive-wide bandwidth limit and this download's own, both token buckets, used from
    the thread that receives. `set_rate` changes this download's limit while it runs (from
    the event loop)."""

    #: One lock for every bucket: the hive-wide one is shared by concurrent downloads.
    _lock = threading.Lock()

    def __init__(self, *, shared: TokenBucket | None, rate: int | None) -> None:
        self._shared = shared
        self._own = TokenBucket(rate=rate, burst=max(64 * 1024, (rate or 0) // 4))

    def set_rate(self, rate: int | None) -> None:
        with self._lock:
            self._own.set_rate(rate, now=time.monotonic())
            self._own.burst = max(64 * 1024, (rate or 0) // 4)

    def piece(self, size: int) -> int:
        """How many bytes to read at a time: all of `size` unlimited, else about a tenth
        of a second's worth, so that the pace is even and a new rate applies soon."""
        with self._lock:
            rates = [b.rate for b in (self._own, self._shared) if b is not None and b.rate]
        if not rates:
            return size
        return max(16 * 1024, min(size, int(min(rates) / 10)))

    def wait(self, n: int, cancel: threading.Event) -> None:
        """Spend n bytes' worth of tokens, waiting as long as the limits say (or until
        `cancel` is set)."""
        now = time.monotonic()
        with self._lock:
            delay = self._own.take(n, now=now)
            if self._shared is not None:
                delay = max(delay, self._shared.take(n, now=now))
        if delay > 0:
            cancel.wait(delay)
