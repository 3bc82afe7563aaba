"""B1 reaction: from writing a manifest file to the first SSE event about its Model.

The real `hive serve` runs as a subprocess; this process writes one new Model manifest per
trial (atomically, as editors do, and plainly) and reads GET /v1/events (`hive.client`).
The peer is a
polling watcher (os.scandir + stat every second, like kubelet's static-pod file source)
measured on the same writes; kubelet's 20 s and Flux's 60 s intervals are extrapolated.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import tempfile
import threading
import time
from pathlib import Path

from benchmarks import (
    Row,
    Tree,
    hive_serve,
    log,
    make_tiny_model,
    model_manifest,
    summary,
    write_atomic,
    write_plain,
)
from hive.client import HiveClient
from hive.model.events import Event

POLL_INTERVAL = 1.0
KUBELET_INTERVAL = 20.0
FLUX_INTERVAL = 60.0
TRIAL_TIMEOUT = 10.0


class SseReader:
    """Reads /v1/events through `hive.client`; notes when the first event, and
    `model_available`, of an object arrive (time.monotonic, the clock the writer and the
    poller use). `connected` is set once hive has subscribed the stream."""

    def __init__(self, client: HiveClient) -> None:
        self._client = client
        self.connected = asyncio.Event()
        self._first: dict[str, asyncio.Future[float]] = {}
        self._available: dict[str, asyncio.Future[float]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._read())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def expect(self, obj: str) -> tuple[asyncio.Future[float], asyncio.Future[float]]:
        loop = asyncio.get_running_loop()
        self._first[obj] = loop.create_future()
        self._available[obj] = loop.create_future()
        return self._first[obj], self._available[obj]

    async def _read(self) -> None:
        async for event in self._client.events(on_open=self.connected.set):
            now = time.monotonic()
            if not isinstance(event, Event) or event.object is None:
                continue
            first = self._first.get(event.object)
            if first is not None and not first.done():
                first.set_result(now)
            available = self._available.get(event.object)
            if available is not None and not available.done() and event.action == "model_available":
                available.set_result(now)


class Poller:
    """The peer: a polling watcher as kubelet's file source is one (list the directory and
    stat every file every `interval` seconds). Notes when it first sees each file."""

    def __init__(self, root: Path, *, interval: float) -> None:
        self.root = root
        self.interval = interval
        self.seen: dict[str, float] = {}
        self.scans = 0
        self._stamps: dict[str, tuple[int, int, int]] = {}
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="poller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def wait_seen(self, count: int, *, timeout: float) -> None:
        """Block until `count` files were seen, or `timeout` seconds passed."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.seen) >= count, timeout)

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            self._scan()
            next_tick += self.interval
            self._stop.wait(max(0.0, next_tick - time.monotonic()))

    def _scan(self) -> None:
        self.scans += 1
        with os.scandir(self.root) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not entry.name.endswith(".yaml"):
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
                if self._stamps.get(entry.name) != stamp:
                    self._stamps[entry.name] = stamp
                    self.seen.setdefault(entry.name, time.monotonic())
        with self._changed:
            self._changed.notify_all()


async def _trials(
    url: str, desired: Path, model: Path, *, trials: int, poll: float
) -> dict[str, dict[str, list[float]]]:
    """`trials` writes of each kind, interleaved; seconds from write to each observer."""
    out: dict[str, dict[str, list[float]]] = {
        kind: {"hive": [], "hive_available": [], "poller": [], "lost": []}
        for kind in ("atomic", "plain")
    }
    written: list[tuple[str, str, float]] = []  # (kind, file name, t0)
    rng = random.Random(1)
    poller = Poller(desired, interval=poll)
    async with HiveClient(url) as client:
        reader = SseReader(client)
        reader.start()
        try:
            await asyncio.wait_for(reader.connected.wait(), 10)
            poller.start()
            for i in range(trials):
                for kind in ("atomic", "plain"):
                    name = f"b1-{kind[0]}-{i:03d}"
                    path = desired / f"{name}.yaml"
                    text = model_manifest(name, model)
                    first, available = reader.expect(f"Model/{name}")
                    write = write_atomic if kind == "atomic" else write_plain
                    t0 = time.monotonic()
                    write(path, text)
                    written.append((kind, path.name, t0))
                    try:
                        t1 = await asyncio.wait_for(first, TRIAL_TIMEOUT)
                        out[kind]["hive"].append(t1 - t0)
                        t2 = await asyncio.wait_for(available, TRIAL_TIMEOUT)
                        out[kind]["hive_available"].append(t2 - t0)
                    except TimeoutError:
                        out[kind]["lost"].append(t0)
                    # A random pause puts the next write at a random phase of the poll tick.
                    await asyncio.sleep(rng.uniform(0.0, 0.2))
            # Let the poller see the last writes.
            await asyncio.to_thread(poller.wait_seen, len(written), timeout=3 * poll)
        finally:
            poller.stop()
            await reader.close()
    for kind, file_name, t0 in written:
        if file_name in poller.seen:
            out[kind]["poller"].append(poller.seen[file_name] - t0)
    return out


def run(*, quick: bool, tree: Tree) -> list[Row]:
    trials = 20 if quick else 100
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="hive-bench-b1-") as tmp:
        root = Path(tmp)
        desired, home = root / "desired", root / "home"
        desired.mkdir()
        model = make_tiny_model(root / "tiny.gguf")
        log(f"B1: hive serve on {desired}; {trials} atomic + {trials} plain writes")
        with hive_serve(desired=desired, home=home, log_file=root / "hive.log", tree=tree) as (
            _,
            url,
        ):
            results = asyncio.run(_trials(url, desired, model, trials=trials, poll=POLL_INTERVAL))
    ms = 1000.0
    for kind, label in (("atomic", "temp file + rename"), ("plain", "plain write")):
        r = results[kind]
        if not r["hive"] or not r["poller"]:
            raise RuntimeError(f"B1 {kind}: no measurement ({len(r['lost'])} trials lost)")
        hive, peer = summary(r["hive"]), summary(r["poller"])
        for stat in ("p50", "p90", "p99", "max"):
            rows.append(
                Row(
                    bench="B1 reaction",
                    metric=f"{label}: write -> first event, {stat} (n={len(r['hive'])})",
                    value=hive[stat] * ms,
                    unit="ms",
                    peer=f"poller {POLL_INTERVAL:g} s, measured",
                    peer_value=peer[stat] * ms,
                    goal="p50 < 50 ms" if stat == "p50" else "",
                )
            )
        avail = summary(r["hive_available"])
        rows.append(
            Row(
                bench="B1 reaction",
                metric=f"{label}: write -> model_available, p50 (n={len(r['hive_available'])})",
                value=avail["p50"] * ms,
                unit="ms",
            )
        )
        if r["lost"]:
            rows.append(
                Row(
                    bench="B1 reaction",
                    metric=f"{label}: trials with no event in {TRIAL_TIMEOUT:g} s",
                    value=float(len(r["lost"])),
                    unit="trials",
                )
            )
    # Extrapolated peers: a write at a uniformly random time waits U(0, interval).
    hive_p50 = summary(results["atomic"]["hive"])["p50"] * ms
    for name, interval in (("kubelet file source", KUBELET_INTERVAL), ("Flux", FLUX_INTERVAL)):
        rows.append(
            Row(
                bench="B1 reaction",
                metric="temp file + rename: write -> first event, p50",
                value=hive_p50,
                unit="ms",
                peer=f"{name} {interval:g} s poll, computed (interval/2)",
                peer_value=interval / 2 * ms,
                how="hive measured, peer computed",
            )
        )
    return rows
