"""The system sampler on this real machine: the machine's readings, a real process's CPU,
memory and I/O rates, the GPU probe's GPUs, and a sample per interval in a thread."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil

from hive.core.clock import SystemClock
from hive.observers.gpus import FakeGpuProbe, NoGpuProbe
from hive.observers.system import SystemSampler, primary_ip
from tests.conftest import apoll, poll

#: A process that burns CPU and writes to a file until killed.
BUSY = """
import os, sys, time
with open(sys.argv[1], "wb") as f:
    while True:
        f.write(os.urandom(65536)); f.flush(); os.fsync(f.fileno())
        end = time.monotonic() + 0.01
        while time.monotonic() < end:
            pass
"""


def test_a_sample_reads_the_machine_and_a_worker_process(tmp_path: Path) -> None:
    gpus = tmp_path / "gpus.json"
    proc = subprocess.Popen([sys.executable, "-c", BUSY, str(tmp_path / "out")])
    try:
        handle = psutil.Process(proc.pid)
        (tmp_path / "gpus.json").write_text(
            json.dumps(
                {
                    "gpus": [{"index": 0, "vram_total_mb": 1000, "vram_free_mb": 400}],
                    "processes": {str(proc.pid): 600},
                }
            )
        )
        sampler = SystemSampler(
            home=tmp_path,
            bind_host="127.0.0.1",
            gpus=FakeGpuProbe(gpus),
            interval=1.0,
            clock=SystemClock(),
            processes=lambda: {proc.pid: handle},
        )
        first = sampler.read({proc.pid: handle})
        assert first.cpu_cores == psutil.cpu_count()
        assert 0 < first.memory_available_bytes <= first.memory_total_bytes
        assert 0 < first.disk_free_bytes <= first.disk_total_bytes
        assert first.ip_address == "127.0.0.1"
        assert [g.device for g in first.gpus] == ["GPU-0"]
        seen = first.processes[proc.pid]
        assert seen.vram_mb == 600

        def busy() -> bool:  # a process sampled right after its fork may not have loaded yet
            later = sampler.read({proc.pid: handle}).processes[proc.pid]
            return later.cpu_pct > 1 and later.io_w_mb_s > 0 and later.rss_mb > 0

        poll(busy, timeout=20, what="the process's CPU, memory and write rate")
    finally:
        proc.kill()
        proc.wait()


def test_a_gone_process_is_left_out(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    handle = psutil.Process(proc.pid)
    proc.wait()
    sampler = SystemSampler(
        home=tmp_path,
        bind_host="0.0.0.0",
        gpus=NoGpuProbe(),
        interval=1.0,
        clock=SystemClock(),
        processes=dict,
    )
    assert sampler.read({proc.pid: handle}).processes == {}


def test_a_wildcard_bind_reports_an_address_of_this_machine() -> None:
    address = primary_ip("0.0.0.0")
    mine = {a.address for addrs in psutil.net_if_addrs().values() for a in addrs}
    assert address in mine | {"127.0.0.1"}
    assert primary_ip("10.1.2.3") == "10.1.2.3"


async def test_the_sampler_takes_a_sample_each_interval(tmp_path: Path) -> None:
    sampler = SystemSampler(
        home=tmp_path,
        bind_host="127.0.0.1",
        gpus=NoGpuProbe(),
        interval=0.02,
        clock=SystemClock(),
        processes=dict,
    )
    await sampler.start()
    try:
        first = sampler.latest
        assert first is not None  # start returns with a sample
        await apoll(
            lambda: sampler.latest is not None and sampler.latest.taken_at > first.taken_at,
            what="a newer sample",
        )
    finally:
        await sampler.stop()
