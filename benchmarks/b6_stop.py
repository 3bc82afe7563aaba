"""B6 stop: the file of Worker records removed -> every worker process gone, for the real
`hive serve`; its rows against supervisord's `stop all` and the floor. The phases run in
`benchmarks.b5_to_b7`.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

from benchmarks import Row, cpu_seconds, get_json
from benchmarks.fleet import PHASE_TIMEOUT, WORKERS_FILE, Results, Start, Stop, per_round, wait_gone
from benchmarks.hive_events import EventStream


def hive_stop(
    *,
    url: str,
    desired: Path,
    events: EventStream,
    start: Start,
    names: Sequence[str],
    proc: psutil.Process,
) -> Stop:
    objects = {f"Worker/{n}" for n in names}
    procs = [psutil.Process(pid) for pid in start.pids]
    index = events.mark()
    # No client is fed while the workers exit (supervisord has none either); what hive
    # narrated meanwhile is read afterwards, replayed from its buffer.
    events.pause()
    cpu0 = cpu_seconds(proc)
    t0 = time.monotonic()
    os.unlink(desired / WORKERS_FILE)
    gone = wait_gone(procs, t0, timeout=PHASE_TIMEOUT)
    events.resume()
    events.first_of_each("worker_proc_del_ok", objects, since=index, timeout=PHASE_TIMEOUT)
    deadline = time.monotonic() + PHASE_TIMEOUT
    while get_json(f"{url}/v1/workers", timeout=30)["items"]:
        if time.monotonic() > deadline:
            raise RuntimeError("B6: /v1/workers still lists workers")
        time.sleep(0.01)
    done = time.monotonic() - t0
    return Stop(gone, done, cpu_seconds(proc) - cpu0)


def rows(res: Results) -> list[Row]:
    """B6's rows: hive's stop against supervisord's `stop all` and the floor's SIGTERM loop."""
    n, k = res.n, res.rounds
    med = statistics.median

    def ht(fn: Callable[[Stop], float]) -> float:
        return med(fn(s) for s in res.hive_stop)

    def st(label: str, fn: Callable[[Stop], float]) -> float:
        return med(fn(s) for s in res.sup_stop[label])

    b = "B6 stop"
    gone = ht(lambda s: s.gone)
    metric = f"remove the file -> all {n} processes gone, median of {k}"
    s1 = "supervisord startsecs=1 (default)"
    paired = [p.gone / h.gone for h, p in zip(res.hive_stop, res.sup_stop["s1"], strict=True)]
    out = [
        Row(b, metric, gone, "s", f"{s1}: stop all -> all gone",
            st("s1", lambda s: s.gone), "peer/hive >= 1.0"),
        *per_round(b, paired, "rounds in which hive's workers were gone first", f"{s1}: stop"),
        Row(b, metric, gone, "s", "supervisord startsecs=0: stop all -> all gone",
            st("s0", lambda s: s.gone)),
        Row(b, metric, gone, "s", "bare: SIGTERM to each group -> all gone (the floor)",
            med(s.gone for s in res.bare_stop)),
        Row(b, "remove the file -> /v1/workers empty", ht(lambda s: s.done), "s",
            f"{s1}: supervisorctl stop all returned", st("s1", lambda s: s.done)),
        Row(b, "CPU of hive over the stop", ht(lambda s: s.cpu), "s",
            f"CPU of {s1}", st("s1", lambda s: s.cpu)),
    ]  # fmt: skip
    return out
