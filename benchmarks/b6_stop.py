"""B6 stop: the file of Worker records removed -> every worker process gone, for the real
`hive serve`; its rows against supervisord's `stop all` and the floor's SIGTERM loop, on
the same fleets as B5. The phases run in `benchmarks.b5_to_b7`.
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
    """B6's rows for one fleet: hive's stop against supervisord's `stop all` and the floor's
    SIGTERM loop, the medians and the per-round ratios."""
    n, k = res.n, res.rounds
    med = statistics.median

    def ht(fn: Callable[[Stop], float]) -> float:
        return med(fn(s) for s in res.hive_stop)

    b = "B6 stop"
    fleet = f"{n} {res.runtime} workers"
    gone = ht(lambda s: s.gone)
    metric = f"{fleet}: remove the file -> all processes gone, median of {k}"
    paired_sup = [p.gone / h.gone for h, p in zip(res.hive_stop, res.sup_stop, strict=True)]
    paired_floor = [p.gone / h.gone for h, p in zip(res.hive_stop, res.bare_stop, strict=True)]
    return [
        Row(b, metric, gone, "s", "supervisord: stop all -> all gone",
            med(s.gone for s in res.sup_stop), "peer/hive >= 1.0"),
        Row(b, metric, gone, "s", "floor: SIGTERM to each group -> all gone",
            med(s.gone for s in res.bare_stop), "peer/hive >= 0.95 (hive <= 1.05x)"),
        *per_round(b, paired_sup, what=f"{fleet}, supervisord",
                   won="rounds hive's were gone first", goal=">= 1.0"),
        *per_round(b, paired_floor, what=f"{fleet}, floor",
                   won="rounds hive's were gone first", goal=">= 0.95"),
        Row(b, f"{fleet}: remove the file -> /v1/workers empty", ht(lambda s: s.done), "s",
            "supervisord: stop all returned", med(s.done for s in res.sup_stop)),
        Row(b, f"{fleet}: CPU of hive over the stop", ht(lambda s: s.cpu), "s",
            "CPU of supervisord", med(s.cpu for s in res.sup_stop)),
    ]  # fmt: skip
