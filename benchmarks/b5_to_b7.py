"""B5 to B7 workers: N Worker records in one file, started (B5) and stopped (B6) by the
real `hive serve`, and hive's idle cost while they run (B7). The peer is supervisord (4.3)
running the same command lines (`startsecs=0`, with the same health poller), the floor a
bare spawner with hive's probe.

The fleets: 100 scripted workers (`testkit/scripted_worker.py`, a stdlib HTTP server that
answers /health: a test runtime, not an inference engine; B7's idle window runs with
them), and 20, 50 and 100 real `llama-cpp` workers (llama.cpp's server through xllamacpp)
on the tiny model. Each fleet runs in rounds of three phases in turn (hive, supervisord,
the floor): `b5_start`, `b6_stop` and `b7_idle` hold hive's side and the rows,
`supervisord` the peer, `floor` the floor, `fleet` what they share.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

from benchmarks import (
    Row,
    Tree,
    b5_start,
    b6_stop,
    b7_idle,
    child,
    hive_serve,
    log,
    make_tiny_model,
    model_manifest,
    write_atomic,
)
from benchmarks.b5_start import hive_start
from benchmarks.b6_stop import hive_stop
from benchmarks.b7_idle import idle
from benchmarks.fleet import (
    LLAMA,
    MARK,
    SCRIPTED,
    SETTLE,
    Results,
    Start,
    Stop,
    free_port_range,
    hive_argvs,
    sweep,
    wait_model_available,
    with_port,
    worker_names,
)
from benchmarks.floor import Bare
from benchmarks.hive_events import EventStream
from benchmarks.supervisord import Supervisord, supervisord_start, supervisord_stop
from testkit.scripted_runtime import install_scripted_runtime


@dataclass(frozen=True)
class Fleet:
    """One fleet of B5 and B6: `n` workers of `runtime`, `rounds` rounds; `window`: B7's
    idle window in its first round (0: none)."""

    runtime: str
    n: int
    rounds: int
    window: float = 0.0


FULL = (
    Fleet(SCRIPTED, 100, 5, window=60.0),
    Fleet(LLAMA, 20, 5),
    Fleet(LLAMA, 50, 3),
    Fleet(LLAMA, 100, 1),
)
QUICK = (Fleet(SCRIPTED, 20, 1, window=15.0), Fleet(LLAMA, 20, 1))
#: Memory kept free beside a fleet: a fleet that would leave less is skipped, and says so.
MEMORY_MARGIN = 2 << 30


def _log_start(who: str, s: Start) -> None:
    extra = " ".join(f"{k} {v:.3f}" for k, v in s.extra.items())
    log(
        f"B5 {who:<5} start: all ready {s.all_ready:6.3f} s, first {s.first_ready:.3f} s, "
        f"cpu {s.cpu:.2f} s; {extra}"
    )


def _log_stop(who: str, s: Stop) -> None:
    log(f"B6 {who:<5} stop: all gone {s.gone:6.3f} s, done {s.done:.3f} s, cpu {s.cpu:.2f} s")


def measure(root: Path, fleet: Fleet, *, env: dict[str, str], tree: Tree) -> Results:
    """`fleet.rounds` rounds of the three phases, in an order rotated each round; B7's idle
    windows in the first (hive's, then supervisord's)."""
    n, rounds, window = fleet.n, fleet.rounds, fleet.window
    desired, home, logs = root / "desired", root / "home", root / "logs"
    for d in (desired, home, logs):
        d.mkdir(parents=True)
    model = make_tiny_model(root / "tiny.gguf")
    install_scripted_runtime(home)
    write_atomic(desired / "models.yaml", model_manifest("tiny", model))
    first = free_port_range(4 * n)
    names = worker_names(n)
    args = ["--stop-workers-on-exit", "--worker-ports", f"{first}-{first + 2 * n - 1}"]
    res = Results(n=n, rounds=rounds, window=window, runtime=fleet.runtime)
    # Every process of the peers imports what hive's workers import: the tree's launcher.
    peer_env = {**env, **tree.env()}
    with contextlib.ExitStack() as stack:
        hive_proc, url = stack.enter_context(
            hive_serve(
                desired=desired,
                home=home,
                log_file=logs / "hive.log",
                env=env,
                args=args,
                tree=tree,
            )
        )
        wait_model_available(url, "tiny")
        events = EventStream(url)
        events.start()
        stack.callback(events.close)
        hp = psutil.Process(hive_proc.pid)
        time.sleep(SETTLE)
        res.hive_rss_no_workers = hp.memory_info().rss / 1e6
        peers: tuple[Supervisord, psutil.Process, list[int], Bare] | None = None
        # A first start and stop by hive, not counted: it gives the peers their command
        # lines, and the fleet's first start, whoever makes it, reads the runtime's files
        # from disk (xllamacpp's libraries: seconds), which the rounds then share alike.
        warm = hive_start(
            url=url, desired=desired, events=events, names=names, proc=hp, runtime=fleet.runtime
        )
        _log_start("warm-up", warm)
        hive_stop(url=url, desired=desired, events=events, start=warm, names=names, proc=hp)
        time.sleep(SETTLE)
        for r in range(rounds):
            order = ["hive", "supervisord", "floor"]
            order = order[r % 3 :] + order[: r % 3]
            for who in order:
                if who == "hive":
                    start = hive_start(
                        url=url,
                        desired=desired,
                        events=events,
                        names=names,
                        proc=hp,
                        runtime=fleet.runtime,
                    )
                    _log_start(who, start)
                    res.hive_start.append(start)
                    if peers is None:
                        # The peers run the very command lines hive ran, on their own ports.
                        argvs = hive_argvs(home, names)
                        ports = list(range(first + 2 * n, first + 3 * n))
                        sup = Supervisord(
                            root,
                            "supervisord",
                            [with_port(a, p) for a, p in zip(argvs, ports, strict=True)],
                        )
                        sp = stack.enter_context(
                            child(sup.argv(), log_file=logs / "supervisord.log", env=peer_env)
                        )
                        spp = psutil.Process(sp.pid)
                        sup.wait_ready(spp)
                        bare_ports = range(first + 3 * n, first + 4 * n)
                        bare = Bare(
                            root,
                            [with_port(a, p) for a, p in zip(argvs, bare_ports, strict=True)],
                            peer_env,
                        )
                        peers = (sup, spp, ports, bare)
                    if r == 0 and window:
                        time.sleep(SETTLE)
                        log(f"B7: hive idle window of {window:.0f} s with {n} workers")
                        workers = [psutil.Process(p) for p in start.pids]
                        res.idle["hive"] = idle(hp, workers, window)
                    stop = hive_stop(
                        url=url, desired=desired, events=events, start=start, names=names, proc=hp
                    )
                    _log_stop(who, stop)
                    res.hive_stop.append(stop)
                elif peers is None:
                    continue  # the peers' command lines are hive's, known after its first start
                elif who == "floor":
                    bare = peers[3]
                    start = bare.start()
                    _log_start(who, start)
                    res.bare_start.append(start)
                    stop = bare.stop()
                    _log_stop(who, stop)
                    res.bare_stop.append(stop)
                else:
                    sup, spp, ports, _ = peers
                    start = supervisord_start(sup, spp, ports)
                    _log_start(who, start)
                    res.sup_start.append(start)
                    if r == 0 and window:
                        time.sleep(SETTLE)
                        log(f"B7: supervisord idle window of {window:.0f} s with {n} workers")
                        workers = [psutil.Process(p) for p in start.pids]
                        res.idle["supervisord"] = idle(spp, workers, window)
                    stop = supervisord_stop(sup, start, spp)
                    _log_stop(who, stop)
                    res.sup_stop.append(stop)
                time.sleep(SETTLE)
    return res


def run(*, quick: bool, tree: Tree) -> list[Row]:
    fleets = QUICK if quick else FULL
    token = uuid.uuid4().hex
    out: list[Row] = []
    rss: dict[str, float] = {}  # MB per worker, by runtime, from the last fleet measured
    with tempfile.TemporaryDirectory(prefix="hive-bench-b5-") as tmp:
        try:
            for i, fleet in enumerate(fleets):
                need = fleet.n * rss.get(fleet.runtime, 0.0) * 1e6 * 1.5 + MEMORY_MARGIN
                free = psutil.virtual_memory().available
                if free < need:
                    log(
                        f"B5: {fleet.n} {fleet.runtime} workers skipped: "
                        f"{free / 2**30:.1f} GiB available, they need about {need / 2**30:.1f}"
                    )
                    continue
                log(
                    f"B5-B7: {fleet.n} {fleet.runtime} workers, {fleet.rounds} round(s) "
                    f"of hive, supervisord, the floor ({tree.label})"
                )
                res = measure(Path(tmp) / f"f{i}", fleet, env={MARK: token}, tree=tree)
                rss[fleet.runtime] = max(s.extra["workers_rss_mb"] for s in res.hive_start)
                out += rows(res, detail=i == 0)
        finally:
            left = sweep(token)
            if left:
                log(f"B5-B7: killed {len(left)} process(es) of this run left behind: {left}")
    return out


def rows(res: Results, *, detail: bool) -> list[Row]:
    """One fleet's B5 rows, then its B6 rows, then B7's when it had an idle window."""
    out = b5_start.rows(res, detail=detail) + b6_stop.rows(res)
    if res.idle:
        out += b7_idle.rows(res)
    return out
