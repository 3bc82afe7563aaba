"""The system sampler: CPU, memory, the home's disk, load, the GPUs (through the GpuProbe) and
each worker process's use, read in a thread every `system_sample_interval` seconds. Requests
and heartbeats read `latest`, an immutable sample; nothing here runs inside a request."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from hive.core.clock import Clock
from hive.model.machine import ProcessSample, SystemSample
from hive.model.units import MB, MIB
from hive.observers.gpus import GpuProbe

log = logging.getLogger(__name__)

#: The address a UDP socket is pointed at to learn which local address routes outward; no
#: packet is sent (a UDP `connect` only picks a route).
_ROUTE_PROBE = ("10.255.255.255", 1)


@dataclass(frozen=True)
class _Seen:
    """What the previous sample read of a process, for rates."""

    at: float
    cpu_seconds: float
    read_bytes: int
    write_bytes: int


def primary_ip(bind_host: str) -> str:
    """The machine's address as others would reach it: the bind address when it names one,
    else the address of the outward route, else 127.0.0.1 (no network)."""
    if bind_host not in ("", "0.0.0.0", "::", "localhost"):
        return bind_host
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(_ROUTE_PROBE)
        return str(s.getsockname()[0])
    return "127.0.0.1"


def cpu_identity() -> tuple[str, str]:
    """The CPU's model name and vendor, from /proc/cpuinfo (Linux); generic elsewhere."""
    name, vendor = "", ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not name:
                name = value.strip()
            elif key == "vendor_id" and not vendor:
                vendor = value.strip()
            if name and vendor:
                break
    vendors = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD"}
    return name or "CPU", vendors.get(vendor, vendor or "unknown")


class SystemSampler:
    """Samples the machine on an interval; `latest` is the newest sample (None before the
    first, which `start` takes before it returns)."""

    def __init__(
        self,
        *,
        home: Path,
        bind_host: str,
        gpus: GpuProbe,
        interval: float,
        clock: Clock,
        processes: Callable[[], Mapping[int, psutil.Process]],
        on_sample: Callable[[SystemSample], None] | None = None,
    ) -> None:
        self._home = home
        self._bind_host = bind_host
        self._gpus = gpus
        self._interval = interval
        self._clock = clock
        #: The worker processes to sample, read on the loop (the worker table lives there).
        self._processes = processes
        #: Told each sample on the loop (the resource history: hive/observers/history.py).
        self._on_sample = on_sample
        self._seen: dict[tuple[int, float], _Seen] = {}
        self._cpu: tuple[str, str] | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.latest: SystemSample | None = None

    async def start(self) -> None:
        await self.sample_now()
        self._task = asyncio.create_task(self._loop(), name="system-sampler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def sample_now(self) -> SystemSample:
        """Take a sample now (in a thread), make it the latest, and return it."""
        async with self._lock:
            processes = dict(self._processes())
            sample = await asyncio.to_thread(self.read, processes)
            self.latest = sample
            if self._on_sample is not None:
                self._on_sample(sample)
            return sample

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.sample_now()
            except Exception:  # a bad reading must not end sampling
                log.exception("system sample failed")

    # -- the blocking part (a thread) ---------------------------------------------------
    def read(self, processes: Mapping[int, psutil.Process]) -> SystemSample:
        if self._cpu is None:
            self._cpu = cpu_identity()
        memory = psutil.virtual_memory()
        try:
            disk_total, _, disk_free = shutil.disk_usage(self._home)
        except OSError:
            disk_total = disk_free = 0
        gpus = self._gpus.gpus()
        vram = self._gpus.process_vram_bytes(list(processes)) if gpus else {}
        load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
        return SystemSample(
            taken_at=self._clock.now(),
            hostname=socket.gethostname(),
            ip_address=primary_ip(self._bind_host),
            cpu_name=self._cpu[0],
            cpu_vendor=self._cpu[1],
            cpu_cores=psutil.cpu_count() or 1,
            cpu_percent=psutil.cpu_percent(interval=None),
            memory_total_bytes=memory.total,
            memory_available_bytes=memory.available,
            memory_used_bytes=memory.total - memory.available,
            disk_total_bytes=disk_total,
            disk_free_bytes=disk_free,
            load_average=(round(load[0], 2), round(load[1], 2), round(load[2], 2)),
            system_uptime_seconds=max(0, int(time.time() - psutil.boot_time())),
            gpus=tuple(gpus),
            gpu_error=self._gpus.error,
            processes=self._read_processes(processes, vram),
        )

    def _read_processes(
        self, processes: Mapping[int, psutil.Process], vram: Mapping[int, int]
    ) -> dict[int, ProcessSample]:
        now = time.monotonic()
        seen: dict[tuple[int, float], _Seen] = {}
        out: dict[int, ProcessSample] = {}
        for pid, proc in processes.items():
            try:
                with proc.oneshot():
                    created = proc.create_time()
                    times = proc.cpu_times()
                    rss = proc.memory_info().rss
                    try:
                        io = proc.io_counters()
                        read_bytes, write_bytes = io.read_bytes, io.write_bytes
                    except (psutil.AccessDenied, AttributeError):
                        read_bytes = write_bytes = 0
            except psutil.Error:
                continue
            cpu_seconds = times.user + times.system
            key = (pid, created)
            before = self._seen.get(key)
            if before is not None and now > before.at:
                span = now - before.at
                cpu = 100.0 * (cpu_seconds - before.cpu_seconds) / span
                io_r = (read_bytes - before.read_bytes) / MB / span
                io_w = (write_bytes - before.write_bytes) / MB / span
            else:  # first seen: its whole life so far
                span = max(time.time() - created, 1e-3)
                cpu = 100.0 * cpu_seconds / span
                io_r, io_w = read_bytes / MB / span, write_bytes / MB / span
            seen[key] = _Seen(now, cpu_seconds, read_bytes, write_bytes)
            out[pid] = ProcessSample(
                pid=pid,
                cpu_pct=round(max(cpu, 0.0), 1),
                rss_mb=rss // MIB,
                io_r_mb_s=round(max(io_r, 0.0), 3),
                io_w_mb_s=round(max(io_w, 0.0), 3),
                uptime_s=max(0, int(time.time() - created)),
                vram_mb=vram.get(pid, 0) // MIB,
            )
        self._seen = seen  # processes gone since are forgotten
        return out
