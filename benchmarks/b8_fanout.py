"""B8 SSE fan-out: 100 subscribers on `GET /v1/events` of a real hive while its loop
narrates a burst of 10,000 events. Zero loss for subscribers that keep up; the loop's
narration throughput with the 100 subscribers against none (the peer), goal ≥ 0.9x.

Three processes: hive (`benchmarks/b8_hive.py`: the tree's real app, bus and SSE writers on
loopback), the subscribers (this module with `subscribe`: 100 HTTP streams in one asyncio
process, outside hive's loop), and this one, which drives both over pipes. The subscribers
read raw bytes and count the `id:` lines with a regular expression: hive.client's typed
reader validates each event, and a million validations would make the subscribers' process,
not hive, what is measured. A burst without subscribers and one with them alternate; each
with subscribers is followed by a check that every subscriber got every event of it.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from benchmarks import PYTHON, REPO, Row, Tree, log, stop_process

EVENTS = 10_000
SUBSCRIBERS = 100
#: Events narrated between two turns of the loop (the controller lets it in after each key).
EVERY = 10
_ID = re.compile(rb"^id: (\d+)$", re.MULTILINE)


# -- the subscribers' process -----------------------------------------------------------
class Stream:
    """One subscriber: the ids it received, and the gap markers."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.gaps = 0
        self.last = 0
        self.changed = asyncio.Event()


async def _read(response: Any, stream: Stream) -> None:
    tail = b""
    async for chunk in response.content.iter_any():
        data = tail + chunk
        cut = data.rfind(b"\n") + 1
        body, tail = data[:cut], data[cut:]
        found = _ID.findall(body)
        if found:
            stream.ids.extend(map(int, found))
            stream.last = stream.ids[-1]
        stream.gaps += body.count(b'"events_dropped"')
        stream.changed.set()


async def _subscribe(url: str, count: int) -> None:
    import aiohttp  # the subscribers' process only

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        streams = [Stream() for _ in range(count)]
        responses = [await http.get(url + "/v1/events") for _ in range(count)]
        for response in responses:
            assert response.status == 200, response.status
            await response.content.readuntil(b"\n\n")  # `: connected`: subscribed
        readers = [
            asyncio.create_task(_read(r, s)) for r, s in zip(responses, streams, strict=True)
        ]
        print(json.dumps({"connected": count}), flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            ask = json.loads(line)
            first, last = int(ask["first"]), int(ask["last"])
            began = time.perf_counter()
            deadline = began + float(ask["timeout"])
            for stream in streams:
                while stream.last < last and time.perf_counter() < deadline:
                    stream.changed.clear()
                    try:
                        await asyncio.wait_for(stream.changed.wait(), 1.0)
                    except TimeoutError:
                        continue
            took = time.perf_counter() - began
            got = [
                bisect.bisect_right(s.ids, last) - bisect.bisect_left(s.ids, first) for s in streams
            ]
            print(
                json.dumps(
                    {"received": got, "gaps": sum(s.gaps for s in streams), "seconds": took}
                ),
                flush=True,
            )
            for stream in streams:
                stream.ids.clear()
                stream.gaps = 0
        for reader in readers:
            reader.cancel()
        for response in responses:
            response.close()


# -- the driver ---------------------------------------------------------------------------
class Child:
    """A child process spoken to in JSON lines over its stdin and stdout."""

    def __init__(self, argv: list[str], *, tree: Tree, log_file: Path) -> None:
        self._log = open(log_file, "wb")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=tree.root,
            env={**os.environ, **tree.env()},
            text=True,
        )

    def ask(self, message: dict[str, Any] | None = None) -> dict[str, Any]:
        stdin: IO[str] | None = self.proc.stdin
        stdout: IO[str] | None = self.proc.stdout
        assert stdin is not None and stdout is not None
        if message is not None:
            stdin.write(json.dumps(message) + "\n")
            stdin.flush()
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"B8: {self.proc.args!r} ended (see {self._log.name})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            stop_process(self.proc)
        self._log.close()


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def run(*, quick: bool, tree: Tree) -> list[Row]:
    rounds = 2 if quick else 5
    log(f"B8: {rounds} rounds of {EVENTS:,} events, none and {SUBSCRIBERS} subscribers")
    alone: list[dict[str, Any]] = []
    fanned: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hive-b8-") as tmp:
        work = Path(tmp)
        # This checkout's script, the tree's hive (PYTHONPATH): an older tree has no script.
        hive = Child(
            [PYTHON, str(REPO / "benchmarks" / "b8_hive.py"), str(work / "home")],
            tree=tree,
            log_file=work / "hive.log",
        )
        try:
            url = f"http://127.0.0.1:{hive.ask()['port']}"
            hive.ask({"burst": 1000, "every": EVERY})  # warm-up: imports, first allocations
            for k in range(rounds):
                for with_subscribers in (False, True) if k % 2 == 0 else (True, False):
                    if not with_subscribers:
                        alone.append(hive.ask({"burst": EVENTS, "every": EVERY}))
                        continue

                    subscribers = Child(
                        [PYTHON, "-m", "benchmarks.b8_fanout", "subscribe", url],
                        tree=Tree(root=REPO),
                        log_file=work / f"subscribers-{k}.log",
                    )
                    try:
                        subscribers.ask()
                        burst = hive.ask({"burst": EVENTS, "every": EVERY})
                        fanned.append(burst)
                        got = subscribers.ask(
                            {"first": burst["first"], "last": burst["last"], "timeout": 120}
                        )
                        cpu_now = hive.ask({"cpu": 1})["cpu_now"]
                        got["cpu_delivered"] = cpu_now - burst["cpu_at_start"]
                        checks.append({**got, "burst": burst})
                    finally:
                        subscribers.close()
                log(
                    f"B8 round {k + 1}: alone {alone[-1]['seconds'] * 1000:.0f} ms, "
                    f"{SUBSCRIBERS} subscribers {fanned[-1]['seconds'] * 1000:.0f} ms, "
                    f"delivered to all {checks[-1]['seconds']:.2f} s later"
                )
            # The whole burst in one turn of the loop: no reader runs until it ends, so
            # every one is 10,000 events behind at once (the ring holds them all).
            subscribers = Child(
                [PYTHON, "-m", "benchmarks.b8_fanout", "subscribe", url],
                tree=Tree(root=REPO),
                log_file=work / "subscribers-one-turn.log",
            )
            try:
                subscribers.ask()
                burst = hive.ask({"burst": EVENTS, "every": EVENTS})
                one_turn = subscribers.ask(
                    {"first": burst["first"], "last": burst["last"], "timeout": 120}
                )
            finally:
                subscribers.close()
        finally:
            hive.close()
    lost = [EVENTS - n for check in checks for n in check["received"]]
    lost_one_turn = [EVENTS - n for n in one_turn["received"]]
    t_alone = _median([b["seconds"] for b in alone])
    t_fanned = _median([b["seconds"] for b in fanned])
    return [
        Row(
            "B8",
            f"{EVENTS:,} events narrated, {SUBSCRIBERS} subscribers",
            t_fanned * 1000,
            "ms",
            peer="no subscriber",
            peer_value=t_alone * 1000,
            goal="≥ 0.9x",
        ),
        Row("B8", "narration throughput, 100 subscribers", EVENTS / t_fanned, "events/s"),
        Row("B8", "narration throughput, no subscriber", EVENTS / t_alone, "events/s"),
        Row(
            "B8",
            "hive CPU per burst, 100 subscribers",
            _median([b["cpu"] for b in fanned]) * 1000,
            "ms",
            peer="no subscriber",
            peer_value=_median([b["cpu"] for b in alone]) * 1000,
        ),
        Row(
            "B8",
            "hive CPU, burst and delivery to all, 100 subscribers",
            _median([c["cpu_delivered"] for c in checks]) * 1000,
            "ms",
            peer="burst, no subscriber",
            peer_value=_median([b["cpu"] for b in alone]) * 1000,
        ),
        Row(
            "B8",
            "last event at every subscriber, after the burst",
            _median([c["seconds"] for c in checks]) * 1000,
            "ms",
        ),
        Row("B8", "events lost, worst subscriber", float(max(lost)), "events", goal="0"),
        Row(
            "B8",
            "events lost, worst subscriber, whole burst in one loop turn",
            float(max(lost_one_turn)),
            "events",
            goal="0",
        ),
        Row(
            "B8",
            "gap markers, all subscribers, all bursts",
            float(sum(c["gaps"] for c in checks) + one_turn["gaps"]),
            "markers",
            goal="0",
        ),
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["subscribe"]:
        asyncio.run(_subscribe(sys.argv[2], SUBSCRIBERS))
    else:
        for row in run(quick="--quick" in sys.argv, tree=Tree()):
            print(row)
