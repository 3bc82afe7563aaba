"""B5 to B7 workers: 100 Worker records in one file, started (B5) and stopped (B6) by the
real `hive serve`, and hive's idle cost while they run (B7). The peer is supervisord (4.3)
running the same 100 command lines. The workers are `testkit/scripted_worker.py`, a
stdlib HTTP server that answers /health: a test runtime, not an inference engine.

One run measures all three, in rounds of four phases in turn (hive, supervisord with
`startsecs=1`, with `startsecs=0`, the floor): `b5_start`, `b6_stop` and `b7_idle` hold
hive's side and the rows, `supervisord` the peer, `floor` the floor, `fleet` what they share.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import uuid
from pathlib import Path

import psutil

from benchmarks import (
    Row,
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
    MARK,
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

WORKERS = 100
QUICK_WORKERS = 20

#: B5 again with fewer workers (full runs only), to find where its goal stops holding.
SCALE = (25, 50)
SCALE_ROUNDS = 3


def _log_start(who: str, s: Start) -> None:
    extra = " ".join(f"{k} {v:.3f}" for k, v in s.extra.items())
    log(
        f"B5 {who:<5} start: all ready {s.all_ready:6.3f} s, first {s.first_ready:.3f} s, "
        f"cpu {s.cpu:.2f} s; {extra}"
    )


def _log_stop(who: str, s: Stop) -> None:
    log(f"B6 {who:<5} stop: all gone {s.gone:6.3f} s, done {s.done:.3f} s, cpu {s.cpu:.2f} s")


def measure(
    root: Path, *, n: int, rounds: int, window: float | None, env: dict[str, str]
) -> Results:
    """`rounds` of the four phases, in turn; B7's idle windows in the first (no window: none)."""
    desired, home, logs = root / "desired", root / "home", root / "logs"
    for d in (desired, home, logs):
        d.mkdir(parents=True)
    model = make_tiny_model(root / "tiny.gguf")
    install_scripted_runtime(home)
    write_atomic(desired / "models.yaml", model_manifest("tiny", model))
    first = free_port_range(5 * n)
    names = worker_names(n)
    args = ["--stop-workers-on-exit", "--worker-ports", f"{first}-{first + 2 * n - 1}"]
    res = Results(n=n, rounds=rounds, window=window or 0.0)
    with contextlib.ExitStack() as stack:
        hive_proc, url = stack.enter_context(
            hive_serve(desired=desired, home=home, log_file=logs / "hive.log", env=env, args=args)
        )
        wait_model_available(url, "tiny")
        events = EventStream(url)
        events.start()
        stack.callback(events.close)
        hp = psutil.Process(hive_proc.pid)
        time.sleep(SETTLE)
        res.hive_rss_no_workers = hp.memory_info().rss / 1e6
        sups: dict[str, tuple[Supervisord, psutil.Process, list[int]]] = {}
        bare: Bare | None = None
        for r in range(rounds):
            order = ["hive", "s1", "s0", "bare"]
            order = order[r % 4 :] + order[: r % 4]
            for who in order:
                if who == "hive":
                    start = hive_start(
                        url=url, desired=desired, events=events, names=names, proc=hp
                    )
                    _log_start(who, start)
                    res.hive_start.append(start)
                    if bare is None:
                        argvs = hive_argvs(home, names)
                        for label, startsecs, base in (("s1", None, 2 * n), ("s0", 0, 3 * n)):
                            ports = list(range(first + base, first + base + n))
                            sup = Supervisord(
                                root,
                                label,
                                [with_port(a, p) for a, p in zip(argvs, ports, strict=True)],
                                startsecs=startsecs,
                            )
                            sp = stack.enter_context(
                                child(sup.argv(), log_file=logs / f"{label}.log", env=env)
                            )
                            spp = psutil.Process(sp.pid)
                            sup.wait_ready(spp)
                            sups[label] = (sup, spp, ports)
                        ports = list(range(first + 4 * n, first + 5 * n))
                        bare = Bare(
                            root, [with_port(a, p) for a, p in zip(argvs, ports, strict=True)], env
                        )
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
                elif who == "bare":
                    if bare is None:
                        continue  # its command lines are hive's, known after hive's first start
                    start = bare.start()
                    _log_start(who, start)
                    res.bare_start.append(start)
                    stop = bare.stop()
                    _log_stop(who, stop)
                    res.bare_stop.append(stop)
                else:
                    if who not in sups:
                        continue  # as for bare
                    sup, spp, ports = sups[who]
                    # startsecs=1, the goal's peer, starts with nothing else running; the
                    # startsecs=0 phase carries the client that polls its workers' /health.
                    start = supervisord_start(sup, spp, ports, poll=who == "s0")
                    _log_start(who, start)
                    res.sup_start.setdefault(who, []).append(start)
                    if r == 0 and who == "s1" and window:
                        time.sleep(SETTLE)
                        log(f"B7: supervisord idle window of {window:.0f} s with {n} workers")
                        workers = [psutil.Process(p) for p in start.pids]
                        res.idle["supervisord"] = idle(spp, workers, window)
                    stop = supervisord_stop(sup, start, spp)
                    _log_stop(who, stop)
                    res.sup_stop.setdefault(who, []).append(stop)
                time.sleep(SETTLE)
    return res


def run(*, quick: bool) -> list[Row]:
    n = QUICK_WORKERS if quick else WORKERS
    rounds = 1 if quick else 5
    window = 15.0 if quick else 60.0
    token = uuid.uuid4().hex
    out: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="hive-bench-b5-") as tmp:
        log(f"B5-B7: {n} scripted workers, {rounds} round(s) of hive, supervisord x2, bare")
        try:
            res = measure(Path(tmp) / "main", n=n, rounds=rounds, window=window, env={MARK: token})
            out += rows(res)
            for m in () if quick else SCALE:
                log(f"B5 at {m} workers: {SCALE_ROUNDS} rounds")
                res = measure(
                    Path(tmp) / f"n{m}", n=m, rounds=SCALE_ROUNDS, window=None, env={MARK: token}
                )
                out += b5_start.scale_rows(res)
        finally:
            left = sweep(token)
            if left:
                log(f"B5-B7: killed {len(left)} process(es) of this run left behind: {left}")
    return out


def rows(res: Results) -> list[Row]:
    """B5's rows, then B6's, then B7's."""
    return b5_start.rows(res) + b6_stop.rows(res) + b7_idle.rows(res)
