"""B12 time to first token: a Worker record for the tiny model written into the directory
`hive serve` watches (hive already running, the model Available) -> the worker's first
completion answered. The peer starts the very command line hive ran (read from hive's state
record) by hand, polls its /health, and asks the same completion. Paired rounds, the order
rotated each round; hive's overhead in milliseconds is the median of the paired differences.

The client is the same on both sides: it learns that hive's worker is Running from hive's
event stream (`worker_spawn_complete`, through `hive.client`), as a hive user would, then
POSTs the completion to the worker's port (`/v1/completions`, one token).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from benchmarks import (
    Row,
    Tree,
    free_port,
    hive_serve,
    log,
    make_tiny_model,
    model_manifest,
    write_atomic,
)
from benchmarks.fleet import HEALTH_START_INTERVAL, wait_gone, wait_model_available, with_port
from benchmarks.hive_events import EventStream

BENCH = "B12 first token"
NAME = "b12"
WORKER_FILE = "b12-worker.yaml"
STEP_TIMEOUT = 120.0
SETTLE = 1.0
#: The peer's /health interval: hive's own for a starting worker (the goal's peer), and a
#: tight one (a reference: what hive's 0.25 s probe grid costs).
PEERS = {"by hand": HEALTH_START_INTERVAL, "by hand, tight poll": 0.02}
COMPLETION = {"model": "tiny", "prompt": "Hello", "max_tokens": 1, "temperature": 0}


def worker_manifest(port: int) -> str:
    return (
        "apiVersion: hive/v1\nkind: Worker\n"
        f"metadata:\n  name: {NAME}\n"
        f"spec:\n  model: tiny\n  runtime: llama-cpp\n  device: CPU-0\n  port: {port}\n"
    )


def complete(port: int) -> None:
    """The first completion: one token of the tiny model."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/completions",
        data=json.dumps(COMPLETION).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=STEP_TIMEOUT) as response:
        body = json.load(response)
    if not body.get("choices"):
        raise RuntimeError(f"B12: no completion from port {port}: {body}")


def healthy(port: int) -> bool:
    url = f"http://127.0.0.1:{port}/health"
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)
    return False


@dataclass
class Samples:
    hive: list[float] = field(default_factory=list)
    peers: dict[str, list[float]] = field(default_factory=dict)
    #: hive's phases: write -> worker_spawn_start, -> worker_spawn_complete (arrivals).
    spawn_start: list[float] = field(default_factory=list)
    running: list[float] = field(default_factory=list)


def hive_round(
    *, desired: Path, home: Path, events: EventStream, port: int, samples: Samples | None
) -> list[str]:
    """One start by hive, timed; the worker removed afterwards and waited for. Returns the
    command line hive ran."""
    index = events.mark()
    t0 = time.monotonic()
    write_atomic(desired / WORKER_FILE, worker_manifest(port))
    obj = {f"Worker/{NAME}"}
    done = events.first_of_each("worker_spawn_complete", obj, since=index, timeout=STEP_TIMEOUT)
    complete(port)
    total = time.monotonic() - t0
    spawn = events.first_of_each("worker_spawn_start", obj, since=index, timeout=STEP_TIMEOUT)
    state = json.loads((home / "state" / "workers" / f"{NAME}.json").read_text())
    if samples is not None:
        samples.hive.append(total)
        samples.spawn_start.append(spawn[f"Worker/{NAME}"].at - t0)
        samples.running.append(done[f"Worker/{NAME}"].at - t0)
    proc = psutil.Process(int(state["pid"]))
    os.unlink(desired / WORKER_FILE)
    wait_gone([proc], time.monotonic(), timeout=STEP_TIMEOUT)
    return list(state["argv"])


def peer_round(argv: Sequence[str], *, env: dict[str, str], log_file: Path, poll: float) -> float:
    """The same command line started by hand: Popen, /health every `poll` s, the same
    completion; then SIGTERM and wait (not timed)."""
    port = int(argv[list(argv).index("--port") + 1])
    deadline = time.monotonic() + STEP_TIMEOUT
    with open(log_file, "ab") as out:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, env=env, process_group=0
        )
    try:
        while not healthy(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"B12: the peer's worker did not answer; see {log_file}")
            time.sleep(poll)
        complete(port)
        return time.monotonic() - t0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=STEP_TIMEOUT)


def run(*, quick: bool, tree: Tree) -> list[Row]:
    rounds = 3 if quick else 15
    samples = Samples(peers={label: [] for label in PEERS})
    with tempfile.TemporaryDirectory(prefix="hive-bench-b12-") as tmp:
        root = Path(tmp)
        desired, home = root / "desired", root / "home"
        desired.mkdir()
        model = make_tiny_model(root / "tiny.gguf")
        write_atomic(desired / "models.yaml", model_manifest("tiny", model))
        port = free_port()
        env = {**os.environ, **tree.env()}
        log(f"B12: hive serve ({tree.label}), {rounds} rounds of hive and {len(PEERS)} peers")
        with hive_serve(desired=desired, home=home, log_file=root / "hive.log", tree=tree) as (
            _,
            url,
        ):
            wait_model_available(url, "tiny")
            events = EventStream(url)
            events.start()
            try:
                # A first start, not counted: the command line, and warm caches for all.
                argv = hive_round(
                    desired=desired, home=home, events=events, port=port, samples=None
                )
                time.sleep(SETTLE)
                peer_argv = with_port(argv, free_port())
                order = ["hive", *PEERS]
                for r in range(rounds):
                    for who in order[r % len(order) :] + order[: r % len(order)]:
                        if who == "hive":
                            hive_round(
                                desired=desired,
                                home=home,
                                events=events,
                                port=port,
                                samples=samples,
                            )
                            took = samples.hive[-1]
                        else:
                            took = peer_round(
                                peer_argv, env=env, log_file=root / "peer.log", poll=PEERS[who]
                            )
                            samples.peers[who].append(took)
                        log(f"B12 round {r + 1}: {who:20s} {took * 1000:7.1f} ms")
                        time.sleep(SETTLE)
            finally:
                events.close()
    return rows(samples, rounds)


def rows(samples: Samples, rounds: int) -> list[Row]:
    med = statistics.median
    ms = 1000.0
    hive = med(samples.hive)
    metric = f"tiny model, llama-cpp: record written -> first completion, median of {rounds}"
    out: list[Row] = []
    for label, interval in PEERS.items():
        peer = samples.peers[label]
        paired = [p / h for h, p in zip(samples.hive, peer, strict=True)]
        overhead = [h - p for h, p in zip(samples.hive, peer, strict=True)]
        what = f"Popen + /health every {interval * ms:g} ms + the same completion"
        goal = label == "by hand"
        out += [
            Row(BENCH, metric, hive * ms, "ms", f"{label}: {what}", med(peer) * ms,
                "peer/hive >= 0.95 (hive <= 1.05x)" if goal else ""),
            Row(BENCH, f"per round, {label}'s time / hive's, median", med(paired), "x",
                goal=">= 0.95" if goal else "", how="computed"),
            Row(BENCH, f"hive's overhead over {label}, median of the paired differences",
                med(overhead) * ms, "ms", how="computed"),
        ]  # fmt: skip
    out += [
        Row(BENCH, "hive: write -> worker_spawn_start arrived, median",
            med(samples.spawn_start) * ms, "ms"),
        Row(BENCH, "hive: write -> worker_spawn_complete arrived (Running), median",
            med(samples.running) * ms, "ms"),
    ]  # fmt: skip
    return out
