"""B4 scale: 1,000 converged Models. (a) one full observe+plan pass, in-process, against a
naive pass that parses every metadata.json again; (b) `hive serve`'s CPU while idle,
against an idle `python -c "import time; time.sleep(...)"`; (c) its RSS, against a bare
interpreter with the same third-party imports.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from benchmarks import (
    PYTHON,
    Row,
    child,
    cpu_seconds,
    get_json,
    hive_serve,
    log,
    main_thread_cpu,
    make_tiny_model,
    summary,
)
from hive.api.views import status_view
from hive.core.plan import plan
from hive.model.observed import ModelMetadata, ObservedModel
from hive.model.provisioning import METADATA, MODEL_FILE, PARTIAL_SUFFIX
from hive.model.status import ModelPhase
from hive.observers.catalog import ModelCatalog
from hive.runtime.manager import Manager
from hive.settings import Settings

NOW = datetime.now(UTC)

MODELS = 1000
FILES = 10
CONVERGE_TIMEOUT = 300.0


# -- setup: 1,000 models, converged by hive itself ---------------------------------------
def write_manifests(desired: Path, model: Path) -> None:
    per_file = MODELS // FILES
    for f in range(FILES):
        docs = [
            "apiVersion: hive/v1\nkind: Model\nmetadata:\n"
            f"  name: m-{f * per_file + i:04d}\n"
            f"spec:\n  source: file:{model}\n"
            for i in range(per_file)
        ]
        (desired / f"models-{f:02d}.yaml").write_text("---\n".join(docs))


def converged(manager: Manager) -> bool:
    statuses = manager.statuses
    return (
        len(statuses) == MODELS
        and all(s.phase == ModelPhase.AVAILABLE for s in statuses.values())
        and len(manager.queue) == 0
        and not manager.queue.processing
    )


# -- the peer of (a): a pass with no stat cache ------------------------------------------
def naive_observe_all(root: Path) -> dict[str, ObservedModel]:
    """What a controller without a cache does: list, stat, read and parse every
    metadata.json and validate it, on every pass."""
    out: dict[str, ObservedModel] = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.is_dir(follow_symlinks=False):
            continue
        directory = Path(entry.path)
        names = os.listdir(directory)
        raw = json.loads((directory / METADATA).read_bytes())
        metadata = ModelMetadata.model_validate(raw)
        size = (directory / MODEL_FILE).stat().st_size if MODEL_FILE in names else None
        out[entry.name] = ObservedModel(
            name=entry.name,
            directory=directory,
            metadata=metadata,
            file_size=size,
            partial=any(n.endswith(PARTIAL_SUFFIX) for n in names),
        )
    return out


async def _interleaved(
    fns: dict[str, Callable[[], Any]], reps: int, *, manager: Manager
) -> dict[str, list[float]]:
    """Seconds per call of each function, and of the periodic pass the resync loop makes
    (every source's resync, then resync_now); one of each per round, so that the noise of
    a shared machine falls on hive and its peers alike."""
    out: dict[str, list[float]] = {name: [] for name in [*fns, "periodic"]}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for source in manager.sources:
            await source.resync()
        manager.resync_now()
        out["periodic"].append(time.perf_counter() - t0)
    return out


async def _pass_in_process(home: Path, desired: Path, *, reps: int) -> dict[str, list[float]]:
    settings = Settings(home=home, desired=(desired,), console=False)
    manager = Manager(settings)
    t0 = time.perf_counter()
    await manager.start()
    try:
        deadline = time.monotonic() + CONVERGE_TIMEOUT
        while not converged(manager):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"B4: not converged after {CONVERGE_TIMEOUT:.0f}s: "
                    f"{len(manager.statuses)} statuses"
                )
            await asyncio.sleep(0.1)
        converge = time.perf_counter() - t0
        log(f"B4: {MODELS} models converged in {converge:.1f} s; timing {reps} passes")
        records = manager.model_records()
        observed = manager.catalog.observe_all()
        if plan(records, observed, prune_allowed=True, now=NOW):
            raise RuntimeError("B4: converged, yet the plan is not empty")
        if len(naive_observe_all(manager.catalog.root)) != MODELS:
            raise RuntimeError("B4: the naive observer does not see every model")
        root = manager.catalog.root
        timings = await _interleaved(
            {
                "resync_now": manager.resync_now,
                "observe_all": manager.catalog.observe_all,
                "plan": lambda: plan(records, observed, prune_allowed=True, now=NOW),
                "naive": lambda: plan(
                    records, naive_observe_all(root), prune_allowed=True, now=NOW
                ),
                "cold": lambda: plan(
                    records, ModelCatalog(home).observe_all(), prune_allowed=True, now=NOW
                ),
                "status_view": lambda: status_view(manager, manager.catalog.observe_all()),
            },
            reps,
            manager=manager,
        )
        timings["converge"] = [converge]
        return timings
    finally:
        await manager.stop()


# -- (b) and (c): the idle daemon --------------------------------------------------------
SLEEPER = "import time; print('ready', flush=True); time.sleep(3600)"
IMPORTS = (
    "import aiohttp, pydantic, yaml, inotify_simple; import time; "
    "print('ready', flush=True); time.sleep(3600)"
)
HIVE_IMPORTS = (
    "import hive.cli, hive.api.app, hive.runtime.manager, hive.sources.directory; "
    "import time; print('ready', flush=True); time.sleep(3600)"
)


def _wait_ready(log_file: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while b"ready" not in log_file.read_bytes():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{log_file.name}: no 'ready' after {timeout:.0f}s")
        time.sleep(0.05)


def _switches(p: psutil.Process) -> int:
    """Context switches of every thread (psutil counts the main thread's only)."""
    total = 0
    try:
        for status in Path(f"/proc/{p.pid}/task").glob("*/status"):
            for line in status.read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
    except OSError:
        switches = p.num_ctx_switches()
        return switches.voluntary + switches.involuntary
    return total


def _idle(
    root: Path, home: Path, desired: Path, *, window: float, resync: float | None
) -> dict[str, dict[str, float]]:
    log_dir = root / "logs"
    log_dir.mkdir()
    with hive_serve(
        desired=desired, home=home, log_file=log_dir / "hive.log", resync_interval=resync
    ) as (hive_proc, url):
        deadline = time.monotonic() + CONVERGE_TIMEOUT
        while True:
            status = get_json(f"{url}/v1/status", timeout=30)
            available = status["objects"]["Model"].get("Available", 0)
            queue = status["queue"]
            if available == MODELS and queue["pending"] == 0 and queue["in_progress"] == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"B4: hive serve shows {available} Available models")
            time.sleep(0.5)
        with (
            child([PYTHON, "-c", SLEEPER], log_file=log_dir / "sleeper.log") as sleeper,
            child([PYTHON, "-c", IMPORTS], log_file=log_dir / "imports.log") as imports,
            child([PYTHON, "-c", HIVE_IMPORTS], log_file=log_dir / "hive-imports.log") as hmods,
        ):
            for name in ("sleeper", "imports", "hive-imports"):
                _wait_ready(log_dir / f"{name}.log")
            time.sleep(2.0)  # let the startup's last work settle
            procs = {
                "hive": psutil.Process(hive_proc.pid),
                "sleeper": psutil.Process(sleeper.pid),
                "imports": psutil.Process(imports.pid),
                "hive_imports": psutil.Process(hmods.pid),
            }
            log(f"B4: idle window of {window:.0f} s over hive serve and 3 peers")
            before = {
                k: (cpu_seconds(p), _switches(p), main_thread_cpu(p)) for k, p in procs.items()
            }
            t0 = time.monotonic()
            peak = dict.fromkeys(procs, 0)
            while (left := t0 + window - time.monotonic()) > 0:
                time.sleep(min(1.0, left))
                for k, p in procs.items():
                    peak[k] = max(peak[k], p.memory_info().rss)
            elapsed = time.monotonic() - t0
            out: dict[str, dict[str, float]] = {}
            for k, p in procs.items():
                cpu, switches, main = cpu_seconds(p), _switches(p), main_thread_cpu(p)
                out[k] = {
                    "cpu_pct": 100.0 * (cpu - before[k][0]) / elapsed,
                    "main_cpu_pct": 100.0 * (main - before[k][2]) / elapsed,
                    "switches_per_s": (switches - before[k][1]) / elapsed,
                    "rss_mb": p.memory_info().rss / 1e6,
                    "peak_rss_mb": peak[k] / 1e6,
                }
            return out


def run(*, quick: bool) -> list[Row]:
    reps = 20 if quick else 50
    window = 15.0 if quick else 60.0
    # The full run keeps the default 30 s resync (two resyncs in 60 s); the quick run
    # shortens it so that its 15 s window also holds two.
    resync = 7.5 if quick else None
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="hive-bench-b4-") as tmp:
        root = Path(tmp)
        desired, home = root / "desired", root / "home"
        desired.mkdir()
        model = make_tiny_model(root / "tiny.gguf")
        write_manifests(desired, model)
        log(f"B4: converging {MODELS} models from {FILES} files (in-process Manager)")
        t = asyncio.run(_pass_in_process(home, desired, reps=reps))
        idle = _idle(root, home, desired, window=window, resync=resync)

    ms = 1000.0

    def med(k: str) -> float:
        return statistics.median(t[k]) * ms

    def p99(k: str) -> float:
        return summary(t[k])["p99"] * ms

    b = "B4 scale (a)"
    naive = "naive pass (json.loads + validate every metadata.json) + plan"
    rows += [
        Row(b, f"converge {MODELS} models from empty (file: hard links)", t["converge"][0], "s"),
        Row(b, f"resync_now(), median of {reps}", med("resync_now"), "ms", naive, med("naive"),
            "< 50 ms"),
        Row(b, f"resync_now(), p99 of {reps}", p99("resync_now"), "ms", naive, p99("naive")),
        Row(b, "catalog.observe_all(), median", med("observe_all"), "ms", naive, med("naive")),
        Row(b, "plan(1,000 records), median", med("plan"), "ms"),
        Row(b, "resync_now(), median", med("resync_now"), "ms",
            "hive's own observe+plan, cold cache (new ModelCatalog)", med("cold")),
        Row(b, f"resync_now(), min of {reps}", min(t["resync_now"]) * ms, "ms", naive,
            min(t["naive"]) * ms),
        Row(b, "periodic pass (source resync + resync_now), median",
            med("periodic"), "ms", naive, med("naive")),
        Row(b, "GET /v1/status body (status_view), median",
            med("status_view"), "ms", "resync_now()", med("resync_now")),
    ]  # fmt: skip
    h, s, imp, hm = idle["hive"], idle["sleeper"], idle["imports"], idle["hive_imports"]
    resync_note = "default 30 s" if resync is None else f"{resync:g} s"
    b = "B4 scale (b)"
    rows += [
        Row(b, f"idle CPU, {MODELS} models, {window:.0f} s, resync {resync_note}",
            h["cpu_pct"], "% of a core", "python -c time.sleep()", s["cpu_pct"], "< 1%"),
        Row(b, "idle CPU, main thread (event loop)", h["main_cpu_pct"], "% of a core"),
        Row(b, "idle CPU, other threads (executor)",
            max(0.0, h["cpu_pct"] - h["main_cpu_pct"]), "% of a core"),
        Row(b, "idle context switches, all threads", h["switches_per_s"], "/s",
            "python -c time.sleep()", s["switches_per_s"]),
    ]  # fmt: skip
    b = "B4 scale (c)"
    rows += [
        Row(b, f"idle RSS, {MODELS} models", h["rss_mb"], "MB",
            "python + aiohttp, pydantic, yaml, inotify_simple", imp["rss_mb"], "< 150 MB"),
        Row(b, f"idle RSS, {MODELS} models", h["rss_mb"], "MB",
            "python + every hive module, no data", hm["rss_mb"]),
        Row(b, f"peak RSS in the window, {MODELS} models", h["peak_rss_mb"], "MB",
            "python -c time.sleep()", s["peak_rss_mb"]),
    ]  # fmt: skip
    return rows
