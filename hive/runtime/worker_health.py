"""The health monitor: one task per live worker polls its `/health` (fast while it starts,
then every few seconds), scrapes its metrics and rotates its log. What it sees goes into
the instance's `Health`; a change worth a status update wakes the worker's key in the
queue, where the worker reconciler decides (an unhealthy worker is stopped there)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import aiohttp

from hive.actuators import workers as proc
from hive.actuators.space import no_space
from hive.core.clock import Clock
from hive.errors import is_no_space
from hive.model.events import Level
from hive.model.runtimes import RuntimeEntry
from hive.model.units import megabytes
from hive.narration.bus import Bus
from hive.observers.health import HealthProbe, scrape
from hive.runtime.queue import WorkQueue
from hive.runtime.worker_table import Instance
from hive.runtime.worker_watch import ProcessWatcher
from hive.settings import Settings

log = logging.getLogger(__name__)


class HealthMonitor:
    def __init__(
        self,
        *,
        settings: Settings,
        clock: Clock,
        bus: Bus,
        queue: WorkQueue,
        watcher: ProcessWatcher,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._bus = bus
        self._queue = queue
        self._watcher = watcher
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
            headers={"User-Agent": "hive-health"},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def follow(self, instance: Instance, entry: RuntimeEntry | None) -> None:
        """Start watching the health of `instance` (its runtime `entry`: None when it is
        not in the catalog any more, for an adopted worker)."""
        task = asyncio.create_task(
            self._watch(instance, entry), name=f"health {instance.state.name}"
        )
        task.add_done_callback(self._ended)
        instance.health.task = task

    @staticmethod
    def _ended(task: asyncio.Task[None]) -> None:
        """A health task that died of a bug says so (it would otherwise go unseen, and the
        worker unprobed until its next start)."""
        if not task.cancelled() and task.exception() is not None:
            log.error("%s stopped", task.get_name(), exc_info=task.exception())

    @staticmethod
    def drop(instance: Instance) -> None:
        """The worker's process is gone: its health task ends."""
        if instance.health.task is not None:
            instance.health.task.cancel()

    @staticmethod
    async def stopped(instance: Instance) -> None:
        """Until its health task has ended (at hive's exit)."""
        task = instance.health.task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self, instance: Instance, entry: RuntimeEntry | None) -> None:
        state, health, settings = instance.state, instance.health, self._settings
        probe = HealthProbe(
            host=_connect_host(state.host),
            port=state.port,
            path=entry.health_path if entry else "/health",
        )
        base = f"http://{probe.host}:{probe.port}"
        metrics_url = base + entry.metrics_path if entry and entry.metrics_path else None
        next_scrape = 0.0
        # The log's size is looked at once per health_interval: a stat per probe of 100
        # starting workers was 3 % of hive's loop in B5.
        next_log_check = 0.0
        session = self._session
        assert session is not None, "open() first"
        while instance.proc.exit is None and instance.stop is None:
            starting = health.ready_at is None
            error = await probe.check(limit=settings.health_timeout)
            if instance.proc.exit is not None or instance.stop is not None:
                return
            if self._watcher.check_exit(instance):
                self._queue.add(instance.key)
                return
            health.checked_at = self._clock.now()
            now = self._clock.monotonic()
            if error is None:
                if starting:
                    health.ready_at = now
                    health.error = None  # the refusals while it was loading
                    self._say_ready(instance, seconds=now - instance.proc.started)
                    self._queue.add(instance.key)
                elif health.failures:
                    health.failures, health.error = 0, None
                    self._queue.add(instance.key)
            else:
                health.error = error
                if starting and now >= instance.proc.start_deadline:
                    health.start_timed_out = True
                    self._queue.add(instance.key)
                    return
                if not starting:
                    health.failures += 1
                    if health.failures >= settings.health_failure_threshold:
                        health.unhealthy = True
                        self._queue.add(instance.key)
                        return
                    self._queue.add(instance.key)
            if not starting and metrics_url and now >= next_scrape:
                next_scrape = now + settings.metrics_interval
                health.metrics = await scrape(
                    session, metrics_url, limit=settings.health_timeout, now=self._clock.now()
                )
            if now >= next_log_check:
                next_log_check = now + settings.health_interval
                await self._rotate(instance)
            interval = (
                settings.health_start_interval
                if health.ready_at is None
                else settings.health_interval
            )
            # On a shared grid: every worker is probed at the same instants, so one turn of
            # the event loop serves many answers (B7: idle CPU with 100 workers). An exit
            # cancels this task (see `drop`).
            clock = asyncio.get_running_loop().time()
            await asyncio.sleep(interval - clock % interval)

    def _say_ready(self, instance: Instance, *, seconds: float) -> None:
        state = instance.state
        adopted = instance.proc.adopted
        self._bus.narrate(
            instance.key,
            "worker_ready" if adopted else "worker_spawn_complete",
            f"✅ Adopted worker answers (PID: {state.pid}, port: {state.port})"
            if adopted
            else f"✅ Worker spawned (PID: {state.pid}, port: {state.port})",
            pid=state.pid,
            port=state.port,
            seconds=round(seconds, 3),
        )

    async def _rotate(self, instance: Instance) -> None:
        settings, path = self._settings, instance.state.log_path
        if not _log_big(path, settings.worker_log_max_bytes):
            return
        try:
            await asyncio.to_thread(
                proc.rotate_log,
                path,
                max_bytes=settings.worker_log_max_bytes,
                backups=settings.worker_log_backups,
            )
            instance.health.log_full = False
        except OSError as exc:
            if not is_no_space(exc):
                raise
            self._log_not_rotated(instance, exc)

    def _log_not_rotated(self, instance: Instance, exc: OSError) -> None:
        """A full disk refused the copy that rotates a worker's log: said once (a warning
        with reason InsufficientSpace); the log stays as it is until space is freed."""
        if instance.health.log_full:
            return
        instance.health.log_full = True
        error = no_space(
            exc,
            where=instance.state.log_path.parent,
            needed=f"a copy of the log ({megabytes(_size(instance.state.log_path))}) needed",
            kept="the log is not rotated (it keeps growing) until space is freed",
        )
        self._bus.narrate(
            instance.key,
            "worker_log_not_rotated",
            f"⚠️ {error.message}",
            level=Level.WARNING,
            reason=error.reason,
        )


def _log_big(path: Path, limit: int) -> bool:
    try:
        return path.stat().st_size > limit
    except OSError:
        return False


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _connect_host(host: str) -> str:
    """Where hive reaches a worker bound to `host` (a wildcard bind answers on loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
