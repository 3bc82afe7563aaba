"""The Model reconciler's actions that take time: provisioning (a `file:` copy, or a
download within the hive's download slots and bandwidth limits) and the sync of a published
model, each in a thread of its own, bounded by the action timeout and stopped by its one
cancel event. Progress and narration come from those threads and are handed to the event
loop once each.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import Counter

from hive.actuators.download import Narrate, fetch_model
from hive.actuators.provision import mark_stopped, provision_file, sync_model, why_stopped
from hive.actuators.transfer import Throttle
from hive.core.clock import Clock
from hive.core.ratelimit import TokenBucket
from hive.core.status import model_working
from hive.core.store import Store
from hive.errors import ActionTimeout
from hive.model.actions import ProvisionModel, SyncModel
from hive.model.events import Level
from hive.model.ids import ObjectKey
from hive.model.manifests import ModelManifest, Record, parse_rate
from hive.model.provisioning import Progress, ProgressFn, ProvisionOutcome
from hive.model.status import ModelPhase
from hive.model.text import clip, show_url
from hive.model.units import megabytes, megabytes_of
from hive.narration.bus import Bus
from hive.observers.catalog import ModelCatalog
from hive.runtime.status_store import StatusStore

T = TypeVar("T")
PROGRESS_INTERVAL = 0.25


class WaitingForSlot(Exception):
    """Every download slot is taken: the key comes back a little later."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


#: Seconds between looks for a free download slot.
SLOT_POLL = 0.5


class Running:
    """An action under way: its generation, what it is about, and what stops it."""

    def __init__(self, generation: int, identity: str | None) -> None:
        self.generation = generation
        #: What the action is about (source, checksum, state): a new generation with the same
        #: identity (a new rate limit, new labels) does not restart the action.
        self.identity = identity
        self.cancel = threading.Event()
        self.throttle: Throttle | None = None


def rate_of(record: Record | None) -> int | None:
    if record is None or not isinstance(record.manifest, ModelManifest):
        return None
    download = record.manifest.spec.download
    return parse_rate(download.rateLimit) if download and download.rateLimit else None


class Downloads:
    """What downloads share: the slots, the hive-wide bandwidth bucket and the counter of
    bytes written (`/metrics`). Each download makes its own requests from its own thread
    (`fetch_model`): no HTTP session is shared."""

    def __init__(self, *, limit: int, rate: int | None, written: Counter | None = None) -> None:
        self.limit = limit
        self.slots = asyncio.Semaphore(limit)
        self.bucket = TokenBucket(rate=rate, burst=max(64 * 1024, (rate or 0) // 4))
        #: Not registered anywhere unless given (the manager's `hive_download_bytes`).
        self.written = written or Counter("hive_download_bytes", "Bytes written.", registry=None)

    def count_written(self, n: int) -> None:
        """`n` more bytes of a download are on disk (called from its helper thread)."""
        self.written.inc(n)


class ModelActions:
    def __init__(
        self,
        *,
        store: Store,
        statuses: StatusStore,
        catalog: ModelCatalog,
        bus: Bus,
        clock: Clock,
        action_timeout: float,
        file_roots: tuple[Path, ...],
        downloads: Downloads,
    ) -> None:
        self._store = store
        self._statuses = statuses
        self._catalog = catalog
        self._bus = bus
        self._clock = clock
        self._action_timeout = action_timeout
        self._file_roots = file_roots
        self._downloads = downloads

    async def bounded(self, work: Coroutine[object, object, T], running: Running) -> T:
        """Await an actuator's work (a thread) within the action timeout. On timeout or
        shutdown, set its cancel event and wait for it to end, so no two attempts ever
        overlap. A record that changes sets the same event (`cancel_if_stale`): the work
        raises `Cancelled` itself."""
        task = asyncio.ensure_future(work)
        try:
            return await asyncio.wait_for(asyncio.shield(task), self._action_timeout)
        except (TimeoutError, asyncio.CancelledError) as exc:
            running.cancel.set()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task
            if isinstance(exc, TimeoutError):
                raise ActionTimeout(
                    f"gave up after {self._action_timeout:g}s (action timeout)"
                ) from None
            raise

    async def provision(self, key: ObjectKey, action: ProvisionModel, running: Running) -> None:
        if not action.source.startswith("file:"):
            self._slot_or_wait()  # before any narration: a queued download has not started
        self._statuses.set(
            key, model_working(ModelPhase.DOWNLOADING, "Provisioning", clip(action.reason))
        )
        source = show_url(action.source)
        self._bus.narrate(
            key,
            "model_download_start",
            f"📥 Downloading {key.name} from {source} ({clip(action.reason)})",
            source=source,
            resolved_source=show_url(action.resolved_source),
        )
        loop = asyncio.get_running_loop()
        last = [0.0]
        first: list[tuple[float, int]] = []  # when and where this session's bytes began

        def progress(p: Progress) -> None:
            # Called from the one thread that moves the bytes (a copy's, a download's): at
            # most every PROGRESS_INTERVAL, the one hand-over to the event loop.
            now = self._clock.monotonic()
            if not first:
                first.append((now, p.done))
            finished = p.total > 0 and p.done >= p.total
            if now - last[0] < PROGRESS_INTERVAL and not finished:
                return
            last[0] = now
            began, base = first[0]
            loop.call_soon_threadsafe(self._progress, key, p, now - began, p.done - base)

        if action.source.startswith("file:"):
            outcome = await self.bounded(
                asyncio.to_thread(
                    provision_file,
                    action,
                    catalog=self._catalog,
                    now=self._clock.now(),
                    cancel=running.cancel,
                    progress=progress,
                    roots=self._file_roots,
                ),
                running,
            )
        else:
            outcome = await self._download(key, action, running, progress)
        meta = outcome.metadata
        n = len(meta.files)
        checked = (
            (
                f"SHA-256 of all {n} parts match the hub's checksums"
                if n > 1
                else f"SHA-256 {meta.sha256} matches the expected checksum"
            )
            if meta.verified
            else f"SHA-256 {meta.sha256} recorded (nothing to check it against: no "
            "spec.sha256, no hub checksum)"
        )
        self._bus.narrate(
            key,
            "model_download_verified",
            checked,
            sha256=meta.sha256,
            verified=meta.verified,
        )
        self._bus.narrate(
            key,
            "model_download_complete",
            f"✅ Download complete ({outcome.method}, {megabytes(meta.size)})",
            method=outcome.method,
            size=meta.size,
        )

    async def sync(self, key: ObjectKey, action: SyncModel, running: Running) -> None:
        """fsync a published model (it stays Available meanwhile), or first hash it again
        when an earlier boot published it (then it is Pending until the check is done)."""
        if action.verify:
            self._statuses.set(
                key, model_working(ModelPhase.PENDING, "Verifying", clip(action.reason))
            )
            self._bus.narrate(
                key, "model_verify_start", f"🔍 Checking {key.name}: {clip(action.reason)}"
            )
        began = self._clock.monotonic()
        bad = await self.bounded(
            asyncio.to_thread(
                sync_model,
                key.name,
                catalog=self._catalog,
                verify=action.verify,
                cancel=running.cancel,
            ),
            running,
        )
        if bad is not None:
            self._bus.narrate(key, "model_verify_failed", f"❌ {bad}", level=Level.WARNING)
            return
        took = self._clock.monotonic() - began
        self._bus.narrate(
            key,
            "model_synced",
            f"💾 {key.name} is on disk ({'hashed again and ' if action.verify else ''}"
            f"fsynced in {took:.1f}s)",
            verified_again=action.verify,
            seconds=round(took, 3),
        )

    def _slot_or_wait(self) -> Downloads:
        """The downloads, if a slot is free now; else WaitingForSlot, so the key comes back
        later without holding a reconcile worker (copies and deletions go on meanwhile)."""
        downloads = self._downloads
        if downloads.slots.locked():
            raise WaitingForSlot(
                f"waiting for a download slot ({downloads.limit} downloads at a time; "
                "see HIVE_MAX_DOWNLOADS)"
            )
        return downloads

    async def _download(
        self,
        key: ObjectKey,
        action: ProvisionModel,
        running: Running,
        progress: ProgressFn,
    ) -> ProvisionOutcome:
        """A network source, within the hive's download slots and bandwidth limits."""
        downloads = self._slot_or_wait()
        async with downloads.slots:
            self._statuses.set(
                key, model_working(ModelPhase.DOWNLOADING, "Downloading", clip(action.reason))
            )
            running.throttle = Throttle(
                shared=downloads.bucket, rate=rate_of(self._store.desired(key))
            )

            loop = asyncio.get_running_loop()

            def narrate(action_name: str, message: str, **data: Any) -> None:
                # Called from the download's thread; the bus is the event loop's. What it
                # narrates comes before its outcome: both go through the loop's one queue.
                emit = functools.partial(self._bus.narrate, key, action_name, message, **data)
                loop.call_soon_threadsafe(emit)

            directory = self._catalog.directory(key.name)
            try:
                return await self._download_bounded(action, directory, running, progress, narrate)
            except BaseException as exc:
                mark_stopped(directory, why_stopped(exc))
                raise

    async def _download_bounded(
        self,
        action: ProvisionModel,
        directory: Path,
        running: Running,
        progress: ProgressFn,
        narrate: Narrate,
    ) -> ProvisionOutcome:
        """`fetch_model` in a thread of its own, stopped by `running.cancel` alone (a
        changed record, the action timeout, shutdown); the timeout waits for it to end.
        Not the loop's default pool: a download holds its thread as long as it lasts."""
        assert running.throttle is not None
        work = functools.partial(
            fetch_model,
            action,
            directory=directory,
            now=self._clock.now(),
            cancel=running.cancel,
            throttle=running.throttle,
            progress=progress,
            narrate=narrate,
            written=self._downloads.count_written,
        )
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hive-download")

        async def in_thread() -> ProvisionOutcome:
            return await asyncio.get_running_loop().run_in_executor(executor, work)

        try:
            return await self.bounded(in_thread(), running)
        finally:
            executor.shutdown(wait=False)  # its thread ended: `_bounded` waits for it

    def _progress(self, key: ObjectKey, p: Progress, elapsed: float, moved: int) -> None:
        """`moved` bytes in `elapsed` seconds of this session (not counting a resumed prefix)."""
        speed = moved / elapsed if elapsed > 0 else 0.0
        eta = (p.total - p.done) / speed if speed > 0 else 0.0
        pct = f"{100 * p.done // p.total}%" if p.total else "size unknown"
        self._bus.narrate(
            key,
            "model_download_progress",
            f"Downloaded {megabytes_of(p.done, p.total)} ({pct})",
            bytes_downloaded=p.done,
            total_bytes=p.total,
            speed_bytes_per_sec=int(speed),
            eta_seconds=int(eta),
        )
