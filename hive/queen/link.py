"""The link to the Queen: found by `?queen_url=` or `--queen-url` (never before), it runs
the seed's push heartbeat every `queen_heartbeat_interval` s and rbee's ready callback
(retried after each of `queen_ready_delays`), and counts the telemetry stream's frames.
A Queen that is down costs back-off and one event per change of state; nothing here waits
on the event loop (HTTP with timeouts, the catalog read in a thread)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any, Literal

import aiohttp

from hive.core.capability_changes import Inventory, capability_changes
from hive.core.clock import Clock
from hive.model.events import Level
from hive.model.machine import QueenLinkView, SystemSample, TelemetryLink
from hive.model.queen import HiveReady
from hive.model.text import show_text, show_url
from hive.narration.bus import Bus
from hive.observers.catalog import ModelCatalog
from hive.queen import discovery
from hive.queen.push import heartbeat
from hive.queen.send import post_json
from hive.queen.tracker import Tracker
from hive.runtime.worker_table import WorkerTable
from hive.settings import Settings

log = logging.getLogger(__name__)

Via = Literal["flag", "capabilities", "persisted"]
_HOW = {
    "flag": "from --queen-url",
    "capabilities": "discovered by GET /v1/capabilities?queen_url=",
    "persisted": "as discovered before this hive restarted",
}
#: A Queen that answers these does not serve the route: it speaks the other generation.
_UNSUPPORTED = {404, 405}


class QueenLink:
    def __init__(
        self,
        *,
        settings: Settings,
        clock: Clock,
        bus: Bus,
        catalog: ModelCatalog,
        workers: WorkerTable,
        sample: Callable[[], SystemSample | None],
        started_at: datetime,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._bus = bus
        self._catalog = catalog
        self._workers = workers
        self._sample = sample
        self._started_at = started_at
        self.push = Tracker()
        self.ready = Tracker()
        #: rbee's telemetry stream: open subscriptions and frames written.
        self.subscribers = 0
        self.frames_sent = 0
        self.url: str | None = None
        self.via: Via | None = None
        self.discovered_at: datetime | None = None
        self._session: aiohttp.ClientSession | None = None
        self._push_task: asyncio.Task[None] | None = None
        self._ready_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._stopped = False

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Resume: the Queen of `--queen-url`, else the one an earlier hive discovered,
        else none (and no beat until one is discovered)."""
        self._session = aiohttp.ClientSession()
        if self._settings.queen_url:
            await self._connect(self._settings.queen_url, via="flag", at=self._clock.now())
            return
        found = await asyncio.to_thread(discovery.load, self._settings.home)
        if found is not None:
            await self._connect(found.queen_url, via="persisted", at=found.discovered_at)

    async def stop(self) -> None:
        """End the link: a discovery after this (a request still in flight) starts nothing."""
        async with self._lock:
            self._stopped = True
            await self._cancel()
            if self._session is not None:
                await self._session.close()
                self._session = None

    async def discover(self, url: str) -> None:
        """The Queen called `/v1/capabilities?queen_url=URL` (`url` checked already). The
        same Queen again: a new ready round unless one runs (as rbee does); another: the
        old link ends, the new one starts, and it is kept for a restarted hive."""
        async with self._lock:
            if self._stopped:
                return  # hive is stopping: nothing new starts
            if url == self.url:
                if self._ready_task is None or self._ready_task.done():
                    self._ready_task = self._spawn(self._ready_round(url), "queen-ready")
                if self._push_task is None or self._push_task.done():
                    self._push_task = self._spawn(self._push_loop(url), "queen-push")
                return
            now = self._clock.now()
            found = discovery.Discovered(queen_url=url, discovered_at=now)
            try:
                await asyncio.to_thread(discovery.save, self._settings.home, found)
            except OSError as exc:
                self._bus.emit(
                    "queen_url_not_saved",
                    f"the Queen's URL could not be saved under {self._settings.home} "
                    f"({show_text(exc.strerror or str(exc))}): heartbeats go on, but a "
                    "restarted hive waits to be discovered again",
                    level=Level.WARNING,
                )
            await self._connect(url, via="capabilities", at=now)

    async def _connect(self, url: str, *, via: Via, at: datetime) -> None:
        await self._cancel()
        self.push.reset()
        self.ready.reset()
        self.url, self.via, self.discovered_at = url, via, at
        shown = show_url(url)
        self._bus.emit(
            "queen_discovered",
            f"👑 Queen at {shown} ({_HOW[via]}): heartbeats start (push every "
            f"{self._settings.queen_heartbeat_interval:g}s, ready callback, telemetry stream)",
            data={"queen_url": shown, "via": via},
        )
        self._push_task = self._spawn(self._push_loop(url), "queen-push")
        self._ready_task = self._spawn(self._ready_round(url), "queen-ready")

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=name)
        task.add_done_callback(_log_crash)
        return task

    async def _cancel(self) -> None:
        for task in (self._push_task, self._ready_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._push_task = self._ready_task = None

    # -- the seed's push ------------------------------------------------------------------
    async def _inventory(self) -> Inventory:
        observed = await asyncio.to_thread(self._catalog.observe_all)
        return Inventory(
            models={
                name: o.metadata.size
                for name, o in observed.items()
                if o.metadata is not None and o.complete
            },
            workers={
                name: i.state.model for name, i in self._workers.instances.items() if i.stop is None
            },
        )

    async def _push_loop(self, url: str) -> None:
        """A beat now and every interval; a failing Queen is tried again after a delay that
        doubles from the interval up to `queen_backoff_cap`. `capability_changes` are
        counted from the inventory of the last beat the Queen acknowledged (2xx)."""
        settings = self._settings
        acked: Inventory | None = None
        failures = 0
        while True:
            try:
                acked = await self._beat(url, acked)
                failures = 0
            except _BeatFailed:
                failures += 1
            except Exception:  # a bug must not end the heartbeats: the next beat tries again
                log.exception("push heartbeat to the Queen failed")
                failures += 1
            interval = settings.queen_heartbeat_interval
            cap = max(interval, settings.queen_backoff_cap)
            await asyncio.sleep(
                min(interval * 2 ** min(failures - 1, 30), cap) if failures else interval
            )

    async def _beat(self, url: str, acked: Inventory | None) -> Inventory:
        """One push beat; the inventory it reported once the Queen acknowledged it."""
        inventory = await self._inventory()
        now = self._clock.now()
        beat = heartbeat(
            hive_id=self._settings.hive_id,
            now=now,
            started_at=self._started_at,
            sample=self._sample(),
            changes=capability_changes(acked, inventory),
        )
        status, failure = await self._post(url + "/v1/hive-heartbeat", beat.model_dump(mode="json"))
        changed = self.push.record(now, failure, unsupported=status in _UNSUPPORTED)
        if changed is not None:
            self._say("push", changed, url)
        if failure is not None:
            raise _BeatFailed(failure)
        return inventory

    # -- rbee's ready callback ------------------------------------------------------------
    def advertised_host(self) -> str:
        """This hive's host as the Queen should call it: the bind address, or for a
        wildcard bind the machine's outward address."""
        host = self._settings.host
        if host in ("", "0.0.0.0", "::"):
            sample = self._sample()
            host = sample.ip_address if sample is not None else socket.gethostname()
        return host

    def hive_url(self) -> str:
        host = self.advertised_host()
        return (
            f"http://[{host}]:{self._settings.port}"
            if ":" in host
            else (f"http://{host}:{self._settings.port}")
        )

    async def _ready_round(self, url: str) -> None:
        """`POST {queen}/v1/hive/ready` after each delay until one is acknowledged; then the
        Queen subscribes to `/v1/heartbeats/stream`. When all fail, hive waits for the
        Queen to call `/v1/capabilities?queen_url=` (as rbee's hive does)."""
        endpoint = url + "/v1/hive/ready"
        delays = self._settings.ready_delays
        for attempt, delay in enumerate(delays, 1):
            if delay > 0:
                await asyncio.sleep(delay)
            body = HiveReady(hive_id=self._settings.hive_id, hive_url=self.hive_url())
            status, failure = await self._post(endpoint, body.model_dump(mode="json"))
            unsupported = status in _UNSUPPORTED
            changed = self.ready.record(self._clock.now(), failure, unsupported=unsupported)
            if failure is None:
                self._bus.emit(
                    "queen_ready_sent",
                    f"✅ Queen at {show_url(url)} knows this hive is ready (attempt {attempt}); "
                    "it subscribes to /v1/heartbeats/stream",
                    data={"queen_url": show_url(url), "attempt": attempt},
                )
                return
            if changed is not None:
                self._say("ready", changed, url)
            if unsupported:
                return
        self._bus.emit(
            "queen_ready_gave_up",
            f"⏸️ {len(delays)} ready callbacks to {show_url(url)} failed; waiting for the Queen "
            "to call /v1/capabilities?queen_url=",
            level=Level.WARNING,
            data={"queen_url": show_url(url), "attempts": len(delays)},
        )

    # -- shared ---------------------------------------------------------------------------
    async def _post(self, endpoint: str, body: Any) -> tuple[int | None, str | None]:
        if self._session is None:  # stopped
            return None, "hive is stopping"
        return await post_json(self._session, endpoint, body, seconds=self._settings.queen_timeout)

    def _say(self, protocol: str, change: tuple[str, str], url: str) -> None:
        """One event for a change of a protocol's state."""
        before, state = change
        tracker = self.push if protocol == "push" else self.ready
        what = "heartbeat" if protocol == "push" else "ready"
        label = "push heartbeat" if protocol == "push" else "ready callback"
        shown = show_url(url)
        data: dict[str, Any] = {"protocol": protocol, "queen_url": shown}
        reason = tracker.last_failure_reason or "?"
        if state == "ok" and before == "idle":
            self._bus.emit(
                f"queen_{what}_started",
                f"💓 Queen at {shown} acknowledged the first {label}",
                data=data,
            )
        elif state == "ok":
            self._bus.emit(
                f"queen_{what}_restored",
                f"💚 Queen at {shown} answers the {label} again",
                data=data,
            )
        elif state == "failing":
            self._bus.emit(
                f"queen_{what}_failed",
                f"💔 {label} to the Queen failed: {reason}; hive goes on, and tries again "
                "with back-off",
                level=Level.WARNING,
                data={**data, "reason": reason},
            )
        elif state == "unsupported":
            self._bus.emit(
                "queen_protocol_unsupported",
                f"the Queen at {shown} does not serve the {label} ({reason}): it speaks the "
                "other generation of rbee's protocol",
                data={**data, "reason": reason},
            )

    # -- the telemetry stream (hive/api/devices.py serves it) -----------------------------
    def view(self) -> QueenLinkView:
        return QueenLinkView(
            url=show_url(self.url) if self.url else None,
            discovered_via=self.via,
            discovered_at=self.discovered_at,
            push=self.push.view(),
            ready=self.ready.view(),
            telemetry=TelemetryLink(subscribers=self.subscribers, frames_sent=self.frames_sent),
        )


class _BeatFailed(Exception):
    """A push beat the Queen did not acknowledge (the tracker has recorded why)."""


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("Queen link task %s ended", task.get_name(), exc_info=task.exception())
