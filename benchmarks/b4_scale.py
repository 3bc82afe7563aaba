"""B4 scale: 1,000 converged Models. (a) one full observe+plan pass, in-process (in a child
interpreter of the tree measured: `benchmarks/b4_pass.py`), against a naive pass that
parses every metadata.json again; (b) `hive serve`'s CPU while idle,
against an idle `python -c "import time; time.sleep(...)"`; (c) its RSS, against a bare
interpreter with the same third-party imports.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks import (
    PYTHON,
    Row,
    Tree,
    child,
    cpu_seconds,
    get_json,
    hive_serve,
    log,
    main_thread_cpu,
    make_tiny_model,
    run_in_tree,
    summary,
)

MODELS = 1000
FILES = 10
CONVERGE_TIMEOUT = 300.0
PASS_SCRIPT = Path(__file__).with_name("b4_pass.py")


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


# -- (b) and (c): the idle daemon --------------------------------------------------------
SLEEPER = "import time; print('ready', flush=True); time.sleep(3600)"
IMPORTS = (
    "import aiohttp, pydantic, yaml, inotify_simple, watchfiles; import time; "
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
    root: Path, home: Path, desired: Path, *, window: float, resync: float | None, tree: Tree
) -> dict[str, dict[str, float]]:
    log_dir = root / "logs"
    log_dir.mkdir()
    with hive_serve(
        desired=desired,
        home=home,
        log_file=log_dir / "hive.log",
        resync_interval=resync,
        tree=tree,
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
            child(
                [PYTHON, "-c", HIVE_IMPORTS],
                log_file=log_dir / "hive-imports.log",
                env=tree.env(),
                cwd=tree.root,
            ) as hmods,
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


def run(*, quick: bool, tree: Tree) -> list[Row]:
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
        log(f"B4: converging {MODELS} models from {FILES} files (in-process Manager, {tree.label})")
        t: dict[str, list[float]] = run_in_tree(
            tree,
            [str(PASS_SCRIPT), str(home), str(desired), str(reps), str(MODELS)],
            timeout=2 * CONVERGE_TIMEOUT,
        )
        idle = _idle(root, home, desired, window=window, resync=resync, tree=tree)

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
            "python + aiohttp, pydantic, yaml, inotify_simple, watchfiles", imp["rss_mb"],
            "< 150 MB"),
        Row(b, f"idle RSS, {MODELS} models", h["rss_mb"], "MB",
            "python + every hive module, no data", hm["rss_mb"]),
        Row(b, f"peak RSS in the window, {MODELS} models", h["peak_rss_mb"], "MB",
            "python -c time.sleep()", s["peak_rss_mb"]),
    ]  # fmt: skip
    return rows
