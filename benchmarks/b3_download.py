"""B3 download throughput: a 1 GiB GGUF from the loopback hub (`testkit.hub.ThreadedHub`,
an LFS file behind the resolve -> CDN redirect), fetched by `hive serve` (hf:// source,
SHA-256 while streaming, GGUF header parse at the end; timed to Available, and to the
fsync that follows) and, interleaved in the same
rounds, by the peer that does the same work, `curl -sSL URL | tee FILE | openssl dgst
-sha256` (download, write and hash, pipelined over three processes), and as references
by `curl -L` (no hash; alone, and followed by an fsync of its file, hive's durability),
`huggingface_hub.hf_hub_download` (no hash check) and a plain aiohttp client with 1
stream and with 4 and 8 parallel `Range` parts (no hash).

Loopback only: it says what each client costs on this machine, nothing about a WAN link
(where per-connection throttling can make parallel parts pay off).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from benchmarks import (
    PYTHON,
    REPO,
    Row,
    Tree,
    get_json,
    hive_serve,
    log,
    main_thread_cpu,
    make_tiny_model,
    stop_process,
    thread_cpu,
)
from hive.client import HiveClient
from hive.model.events import Event
from testkit.hub import ThreadedHub, hf_env

BENCH = "B3 download"
HUB_REPO = "hive-bench/b3-GGUF"
HUB_FILE = "b3.Q4_K_M.gguf"
GIB = 1 << 30
MB = 1_000_000
MIN_FREE = 4 * GIB
PARTS = (4, 8)
STEP_TIMEOUT = 300.0

#: `hf_hub_download` in a fresh interpreter; times the call only (imports excluded).
HF_PEER = """
import json, resource, sys, time
from huggingface_hub import hf_hub_download
repo, name, endpoint, cache = sys.argv[1:5]
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
path = hf_hub_download(repo, name, endpoint=endpoint, cache_dir=cache)
t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
print(json.dumps({"seconds": t1 - t0, "cpu": cpu, "path": path}))
"""

#: A plain aiohttp client: the file preallocated, then `parts` GETs (one without `Range`,
#: else `Range` parts) written at their offsets with pwrite; no hashing. Imports excluded.
PARTS_PEER = """
import asyncio, json, os, resource, sys, time
import aiohttp

async def main(url, out, size, parts):
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.posix_fallocate(fd, 0, size)
        timeout = aiohttp.ClientTimeout(total=None, connect=30, sock_read=60)
        connector = aiohttp.TCPConnector(limit=parts)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            async def part(start, end):
                headers = {} if parts == 1 else {"Range": f"bytes={start}-{end - 1}"}
                async with session.get(url, headers=headers) as response:
                    if response.status != (200 if parts == 1 else 206):
                        raise RuntimeError(f"HTTP {response.status} for {headers}")
                    offset = start
                    async for chunk in response.content.iter_chunked(1 << 20):
                        view = memoryview(chunk)
                        while view:
                            n = os.pwrite(fd, view, offset)
                            offset += n
                            view = view[n:]
                    if offset != end:
                        raise RuntimeError(f"part {start}-{end} ended at {offset}")
            bounds = [(i * size // parts, (i + 1) * size // parts) for i in range(parts)]
            await asyncio.gather(*(part(a, b) for a, b in bounds))
    finally:
        os.close(fd)

url, out, size, parts = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
asyncio.run(main(url, out, size, parts))
t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
print(json.dumps({"seconds": t1 - t0, "cpu": cpu}))
"""


# -- inputs ------------------------------------------------------------------------------
def make_big_model(tiny: Path, path: Path, size: int) -> Path:
    """A valid GGUF of `size` bytes: the tiny model, then random (incompressible, never
    sparse) bytes; the GGUF parser ignores what follows the tensor data."""
    rng = random.Random(3)
    shutil.copy(tiny, path)
    with path.open("ab") as fh:
        left = size - path.stat().st_size
        while left > 0:
            n = min(left, 16 << 20)
            fh.write(rng.randbytes(n))
            left -= n
    return path


def model_manifest(name: str, source: str) -> str:
    return (
        f"apiVersion: hive/v1\nkind: Model\nmetadata:\n  name: {name}\nspec:\n  source: {source}\n"
    )


def warm_page_cache(directory: Path, size: int) -> None:
    """Write `size` bytes to a scratch file and delete it at once (its dirty pages are
    dropped, nothing reaches the disk), just before a client's transfer, so that the
    client writes into memory the VM's host has backed. This VM reports free pages to
    its host (virtio-balloon free page reporting, about 2 s after they are freed), and
    the first touch of a page the host took back costs the guest about 2 CPU-s per GiB
    of page cache: without this, a client that starts quickly after the previous one's
    file was deleted (curl) reuses backed pages and one that starts later (hive serve,
    which starts and resolves first) pays that cost. See docs/benchmarks.md, B3."""
    scratch = directory / ".warm"
    chunk = bytes(4 << 20)
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(0, size, len(chunk)):
            os.write(fd, chunk)
    finally:
        os.close(fd)
        scratch.unlink()


# -- subprocesses ------------------------------------------------------------------------
def run_child(argv: list[str], *, env: dict[str, str]) -> tuple[float, float, str]:
    """Run to completion: (wall seconds, CPU seconds user+sys from the child's rusage,
    stdout). Killed on timeout or on any error."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env={**os.environ, **env}
    )
    try:
        stdout, stderr = proc.communicate(timeout=STEP_TIMEOUT)
    finally:
        stop_process(proc)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited with {proc.returncode}: {stderr.decode()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, stdout.decode()


def hub_cpu(hub: ThreadedHub) -> float:
    """CPU seconds (user + system) of the hub's thread, in this process."""
    cpu = thread_cpu(psutil.Process(), hub.thread_id)
    if cpu is None:
        raise RuntimeError(f"B3: no thread {hub.thread_id} (the hub's) in this process")
    return cpu


# -- the clients -------------------------------------------------------------------------
@dataclass(frozen=True)
class Result:
    """One download: wall seconds and CPU seconds (user+sys) of the client; for hive,
    also the seconds until the model was on disk (`model_synced`)."""

    seconds: float
    cpu: float
    durable: float | None = None
    #: hive only: CPU seconds of its event loop's thread over the download.
    loop_cpu: float | None = None
    #: CPU seconds of the hub's thread (the server) while this client downloaded.
    server_cpu: float = 0.0


async def _hive_download(
    url: str, desired: Path, name: str, pid: int, warm: Callable[[], None]
) -> Result:
    """Drop the manifest; seconds from `model_download_start` to `model_download_complete`
    (the model is Available) and to `model_synced` (its bytes are fsynced) as read on
    /v1/events, and hive's CPU seconds from the write to `model_download_complete`."""
    proc = psutil.Process(pid)
    loop = asyncio.get_running_loop()
    marks: dict[str, asyncio.Future[float]] = {
        a: loop.create_future()
        for a in ("model_download_start", "model_download_complete", "model_synced")
    }
    connected = asyncio.Event()

    async def read(client: HiveClient) -> None:
        async for event in client.events(object=f"Model/{name}", on_open=connected.set):
            now = time.monotonic()
            mark = marks.get(event.action) if isinstance(event, Event) else None
            if mark is not None and not mark.done():
                mark.set_result(now)

    async with HiveClient(url) as client:
        reader = asyncio.create_task(read(client))
        try:
            await asyncio.wait_for(connected.wait(), 10)  # hive has subscribed the stream
            await asyncio.to_thread(warm)
            cpu0 = sum(proc.cpu_times()[:2])
            loop0 = main_thread_cpu(proc)
            (desired / f"{name}.yaml").write_text(
                model_manifest(name, f"hf://{HUB_REPO}/{HUB_FILE}")
            )
            start = await asyncio.wait_for(marks["model_download_start"], STEP_TIMEOUT)
            end = await asyncio.wait_for(marks["model_download_complete"], STEP_TIMEOUT)
            cpu1 = sum(proc.cpu_times()[:2])
            loop1 = main_thread_cpu(proc)
            synced = await asyncio.wait_for(marks["model_synced"], STEP_TIMEOUT)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
    return Result(
        seconds=end - start, cpu=cpu1 - cpu0, durable=synced - start, loop_cpu=loop1 - loop0
    )


def measure_hive(
    hub: ThreadedHub, root: Path, rnd: int, expected_sha: str, size: int, tree: Tree
) -> Result:
    work = root / f"hive-{rnd}"
    desired, home = work / "desired", work / "home"
    desired.mkdir(parents=True)
    try:
        env = hf_env(hub, work / "hf")
        with hive_serve(
            desired=desired, home=home, env=env, log_file=root / f"hive-{rnd}.log", tree=tree
        ) as (proc, url):
            name = f"b3-{rnd}"
            try:
                warm = functools.partial(warm_page_cache, root, size)
                result = asyncio.run(_hive_download(url, desired, name, proc.pid, warm))
            except TimeoutError:
                state = get_json(f"{url}/v1/models/{name}")
                raise RuntimeError(f"hive did not finish the download: {state}") from None
            meta = get_json(f"{url}/v1/models/{name}")["observed"]["metadata"]
            if meta["sha256"] != expected_sha or not meta["verified"] or not meta["synced"]:
                raise RuntimeError(f"hive's download is wrong: {meta}")
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure_curl(hub: ThreadedHub, root: Path, size: int, *, fsync: bool = False) -> Result:
    """curl, and with `fsync` then an fsync of its file (hive's durability, timed too)."""
    out = root / "curl.out"
    try:
        argv = ["curl", "-sS", "-L", "-o", str(out), hub.resolve_url(HUB_REPO, HUB_FILE)]
        warm_page_cache(root, size)
        t0 = time.perf_counter()
        wall, cpu, _ = run_child(argv, env=hf_env(hub))
        if fsync:
            fd = os.open(out, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            wall = time.perf_counter() - t0
        if out.stat().st_size != size:
            raise RuntimeError(f"curl wrote {out.stat().st_size} bytes, not {size}")
        return Result(seconds=wall, cpu=cpu)
    finally:
        out.unlink(missing_ok=True)


def measure_pipeline(hub: ThreadedHub, root: Path, size: int, expected_sha: str) -> Result:
    """The peer that does hive's work: `curl -sSL URL | tee FILE | openssl dgst -sha256`,
    three processes connected by pipes as a shell connects them (download, write, hash,
    overlapped); wall time until all three exited, CPU from their rusage. The digest is
    checked against the hub's."""
    out = root / "pipeline.out"
    env = {**os.environ, **hf_env(hub)}
    try:
        warm_page_cache(root, size)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        url = hub.resolve_url(HUB_REPO, HUB_FILE)
        curl = subprocess.Popen(["curl", "-sS", "-L", url], stdout=subprocess.PIPE, env=env)
        procs = [curl]
        try:
            assert curl.stdout is not None
            tee = subprocess.Popen(["tee", str(out)], stdin=curl.stdout, stdout=subprocess.PIPE)
            procs.append(tee)
            curl.stdout.close()
            assert tee.stdout is not None
            dgst = subprocess.Popen(
                ["openssl", "dgst", "-sha256"], stdin=tee.stdout, stdout=subprocess.PIPE
            )
            procs.append(dgst)
            tee.stdout.close()
            digest, _ = dgst.communicate(timeout=STEP_TIMEOUT)
            codes = [p.wait(timeout=STEP_TIMEOUT) for p in procs]
        finally:
            for p in procs:
                stop_process(p)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if any(codes):
            raise RuntimeError(f"curl | tee | openssl exited with {codes}")
        got = digest.decode().split()[-1]
        if got != expected_sha or out.stat().st_size != size:
            raise RuntimeError(f"the pipeline wrote {out.stat().st_size} bytes, sha256 {got}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return Result(seconds=wall, cpu=cpu)
    finally:
        out.unlink(missing_ok=True)


def measure_hf(hub: ThreadedHub, root: Path, size: int) -> Result:
    cache = root / "hf-cache"
    try:
        argv = [PYTHON, "-c", HF_PEER, HUB_REPO, HUB_FILE, hub.url, str(cache)]
        warm_page_cache(root, size)
        _, _, stdout = run_child(argv, env=hf_env(hub, root / "hf-home"))
        got = json.loads(stdout.strip().splitlines()[-1])
        if Path(got["path"]).stat().st_size != size:
            raise RuntimeError(f"hf_hub_download wrote {Path(got['path']).stat().st_size} bytes")
        return Result(seconds=got["seconds"], cpu=got["cpu"])
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(root / "hf-home", ignore_errors=True)


def measure_parts(hub: ThreadedHub, root: Path, size: int, parts: int) -> Result:
    out = root / f"parts-{parts}.out"
    try:
        url = hub.cdn_url(HUB_REPO, HUB_FILE)
        argv = [PYTHON, "-c", PARTS_PEER, url, str(out), str(size), str(parts)]
        warm_page_cache(root, size)
        _, _, stdout = run_child(argv, env=hf_env(hub))
        got = json.loads(stdout.strip().splitlines()[-1])
        if out.stat().st_size != size:
            raise RuntimeError(f"{parts} parts wrote {out.stat().st_size} bytes")
        return Result(seconds=got["seconds"], cpu=got["cpu"])
    finally:
        out.unlink(missing_ok=True)


# -- the benchmark -----------------------------------------------------------------------
PIPELINE = "curl | tee | openssl dgst -sha256"


def run(*, quick: bool, tree: Tree) -> list[Row]:
    size = 256 * (1 << 20) if quick else GIB
    rounds = 1 if quick else 3
    tmp_root = Path(tempfile.gettempdir())
    free = shutil.disk_usage(tmp_root).free
    if free < MIN_FREE:
        log(
            f"B3: skipped: {free / GIB:.1f} GiB free in {tmp_root}, "
            f"it needs {MIN_FREE / GIB:.0f} GiB"
        )
        return []
    samples: dict[str, list[Result]] = {}
    with tempfile.TemporaryDirectory(prefix="hive-bench-b3-") as tmp, ThreadedHub() as hub:
        root = Path(tmp)
        tiny = make_tiny_model(root / "tiny.gguf")
        log(f"B3: writing a {size / GIB:.2f} GiB GGUF (tiny model + random bytes)")
        big = make_big_model(tiny, root / "big.gguf", size)
        expected = hub.add_file(HUB_REPO, HUB_FILE, big).sha256  # hashes it once
        clients: dict[str, Callable[[int], Result]] = {
            "hive": lambda rnd: measure_hive(hub, root, rnd, expected, size, tree),
            PIPELINE: lambda _: measure_pipeline(hub, root, size, expected),
            "curl": lambda _: measure_curl(hub, root, size),
            "curl + fsync": lambda _: measure_curl(hub, root, size, fsync=True),
            "hf_hub_download": lambda _: measure_hf(hub, root, size),
        }
        for parts in (1, *PARTS):
            clients[f"aiohttp x{parts}"] = functools.partial(
                lambda _, n: measure_parts(hub, root, size, n), n=parts
            )
        log(f"B3: {rounds} round(s) of {', '.join(clients)}, interleaved")
        order = list(clients)
        for rnd in range(rounds):
            # Rotate the order so that no client always runs first (or after hive).
            for name in order[rnd % len(order) :] + order[: rnd % len(order)]:
                os.sync()  # the previous client's dirty pages are not this one's cost
                server0 = hub_cpu(hub)
                result = clients[name](rnd)
                result = dataclasses.replace(result, server_cpu=hub_cpu(hub) - server0)
                samples.setdefault(name, []).append(result)
                log(
                    f"B3 round {rnd + 1}: {name:32s} {result.seconds:6.2f} s "
                    f"{size / MB / result.seconds:7.0f} MB/s  cpu {result.cpu:5.2f} s"
                    f"  hub cpu {result.server_cpu:5.2f} s"
                    + (f"  on disk {result.durable:5.2f} s" if result.durable else "")
                    + (f"  loop cpu {result.loop_cpu:5.2f} s" if result.loop_cpu else "")
                )
            hub.clear_requests()
    return rows(samples, size, rounds)


def rows(samples: dict[str, list[Result]], size: int, rounds: int) -> list[Row]:
    def med(name: str, key: str) -> float:
        return float(statistics.median(getattr(r, key) for r in samples[name]))

    def mbps(name: str) -> float:
        return size / MB / med(name, "seconds")

    label = f"{size / GIB:g} GiB" if size >= GIB else f"{size >> 20} MiB"
    n = f"median of {rounds}"
    for name in samples:
        log(
            f"B3 {name:32s} median {mbps(name):6.0f} MB/s ({med(name, 'seconds'):.2f} s), "
            f"CPU {med(name, 'cpu') / (size / GIB):.2f} s/GiB"
        )
    hive_s = med("hive", "seconds")
    # Each client's throughput on a row of its own: the labels of the rows below stay the
    # same from run to run, so that `compare` can pair them.
    speeds = [
        Row(bench=BENCH, metric=f"{name} throughput, {label}, {n}", value=mbps(name), unit="MB/s")
        for name in samples
        if name != "hive"
    ]
    hive_disk = float(statistics.median(r.durable or 0.0 for r in samples["hive"]))
    out = [
        Row(
            bench=BENCH,
            metric=f"hive throughput, hf:// {label}, start -> complete, {n}",
            value=mbps("hive"),
            unit="MB/s",
        ),
        *speeds,
        Row(
            bench=BENCH,
            metric=f"hive time to Available, {label} (hash+GGUF parse incl.), {n}",
            value=hive_s,
            unit="s",
            peer=f"{PIPELINE} (download, write, hash)",
            peer_value=med(PIPELINE, "seconds"),
            goal="peer/hive >= 1.0",
        ),
        Row(
            bench=BENCH,
            metric=f"hive time to Available, {label} (hash+GGUF parse incl.), {n}",
            value=hive_s,
            unit="s",
            peer="curl -L (no hash; a reference)",
            peer_value=med("curl", "seconds"),
        ),
        Row(
            bench=BENCH,
            metric=f"hive time to on disk (model_synced), {label}, {n}",
            value=hive_disk,
            unit="s",
            peer="curl -L, then fsync (no hash)",
            peer_value=med("curl + fsync", "seconds"),
        ),
        Row(
            bench=BENCH,
            metric=f"hive time to Available, {label} (hash+GGUF parse incl.), {n}",
            value=hive_s,
            unit="s",
            peer="hf_hub_download (no hash)",
            peer_value=med("hf_hub_download", "seconds"),
            goal="peer/hive >= 1.0",
        ),
        Row(
            bench=BENCH,
            metric=f"hive time, {label}, {n}",
            value=hive_s,
            unit="s",
            peer="aiohttp 1 stream, CDN URL (no hash)",
            peer_value=med("aiohttp x1", "seconds"),
        ),
    ]
    per_gib = size / GIB
    for peer in (PIPELINE, "curl", "hf_hub_download", "aiohttp x1"):
        out.append(
            Row(
                bench=BENCH,
                metric=f"hive CPU (user+sys) per GiB, {n}",
                value=med("hive", "cpu") / per_gib,
                unit="s/GiB",
                peer=f"{peer} CPU per GiB",
                peer_value=med(peer, "cpu") / per_gib,
            )
        )
    loop = float(statistics.median(r.loop_cpu or 0.0 for r in samples["hive"]))
    out.append(
        Row(
            bench=BENCH,
            metric=f"hive event loop (main thread) CPU per GiB, {n}",
            value=loop / per_gib,
            unit="s/GiB",
        )
    )
    # Client and server share the machine's cores: neither can finish before all the CPU
    # that the pair spends is spent. This is that floor, for hive and for curl.
    cores = os.cpu_count() or 1
    for name in ("hive", PIPELINE, "curl"):
        floor = (med(name, "cpu") + med(name, "server_cpu")) / cores
        out.append(
            Row(
                bench=BENCH,
                metric=f"{name}: least time on {cores} cores, (client + hub CPU) / {cores}",
                value=floor,
                unit="s",
                peer=f"{name}'s time, {label}",
                peer_value=med(name, "seconds"),
                goal="peer/hive <= 1.15 (time / least time)" if name == "hive" else "",
                how="computed",
            )
        )
    one = med("aiohttp x1", "seconds")
    for parts in PARTS:
        name = f"aiohttp x{parts}"
        out.append(
            Row(
                bench=BENCH,
                metric=f"design: aiohttp 1 stream, {label}, {n}",
                value=one,
                unit="s",
                peer=f"aiohttp {parts} Range parts",
                peer_value=med(name, "seconds"),
                goal="loopback only",
            )
        )
    return out
