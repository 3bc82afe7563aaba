"""B11 dashboard: the page hive serves at `/`, in Debian's headless Chromium driven by
Playwright, against a real `hive serve` running 100 scripted workers (stdlib HTTP servers
that answer /health and llama.cpp-style /metrics; no inference).

Measured in the page, by Chromium itself:
- first contentful paint (the Paint Timing API), and the time from navigation start to a
  workers table of 100 rows (`performance.now()` when the 100th row is there, the Workers
  tab clicked once the page has loaded);
- the page's CPU while the 100 workers' numbers are updated live for 60 s (15 s with
  --quick): Chromium's own counters (`Performance.getMetrics` over the DevTools protocol:
  TaskDuration, the renderer main thread's busy time, and ScriptDuration, LayoutDuration,
  RecalcStyleDuration within it), and the renderer processes' CPU as the OS counts it.

The peer is the same page left open on its Status tab for the same time (what 100 workers
cost the page over what it costs anyway); both idle costs are printed.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks import (
    HERE,
    Row,
    Tree,
    get_json,
    hive_serve,
    log,
    make_tiny_model,
    model_manifest,
)
from benchmarks.fleet import SCRIPTED, worker_names, workers_manifest
from testkit.browser import CHROMIUM, CHROMIUM_ARGS, chromium_present
from testkit.scripted_runtime import install_scripted_runtime

BENCH = "B11"
WORKERS = 100


def _wait_running(url: str, n: int, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            workers = get_json(f"{url}/v1/workers", timeout=10.0)["items"]
            running = [w for w in workers if (w.get("status") or {}).get("phase") == "Running"]
            if len(running) >= n:
                return
        time.sleep(0.5)
    raise RuntimeError(f"B11: {n} workers not Running after {timeout:.0f} s")


def _renderer_cpu(browser_pid: int) -> float:
    """CPU seconds of Chromium's renderer processes (children of the browser process)."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        for p in psutil.Process(browser_pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "--type=renderer" in " ".join(p.cmdline()):
                    t = p.cpu_times()
                    total += t.user + t.system
    return total


def _metrics(cdp: Any) -> dict[str, float]:
    got = cdp.send("Performance.getMetrics")
    return {m["name"]: float(m["value"]) for m in got["metrics"]}


def _browser_pid() -> int | None:
    """The newest Chromium browser process of this user (Playwright does not say)."""
    found = [
        p
        for p in psutil.process_iter(["name", "cmdline", "create_time"])
        if (p.info["name"] or "").startswith("chromium")
        and "--type=" not in " ".join(p.info["cmdline"] or [])
    ]
    return max(found, key=lambda p: p.info["create_time"]).pid if found else None


def _idle_cost(cdp: Any, pid: int | None, seconds: float) -> tuple[float, float]:
    """(main-thread busy s, renderer CPU s) per second of the page left as it is."""
    before, cpu0 = _metrics(cdp), _renderer_cpu(pid) if pid else 0.0
    time.sleep(seconds)  # the quantity measured is what the page does over this window
    after, cpu1 = _metrics(cdp), _renderer_cpu(pid) if pid else 0.0
    busy = (after["TaskDuration"] - before["TaskDuration"]) / seconds
    return busy, (cpu1 - cpu0) / seconds


def run(*, quick: bool, tree: Tree = HERE) -> list[Row]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        log("B11: playwright is not installed (pip install -e '.[dev]'): skipped")
        return []
    if not chromium_present():
        log(f"B11: no Chromium at {CHROMIUM} (apt-get install chromium): skipped")
        return []
    window = 15.0 if quick else 60.0
    with tempfile.TemporaryDirectory(prefix="hive-b11-") as tmp:
        root = Path(tmp)
        model = make_tiny_model(root / "tiny.gguf")
        home, desired = root / "home", root / "desired"
        desired.mkdir()
        install_scripted_runtime(home, metrics=True)
        (desired / "model.yaml").write_text(model_manifest("tiny", model))
        (desired / "workers.yaml").write_text(
            workers_manifest(worker_names(WORKERS), runtime=SCRIPTED)
        )
        log(f"B11: starting hive with {WORKERS} scripted workers")
        with hive_serve(
            desired=desired,
            home=home,
            log_file=root / "hive.log",
            args=["--stop-workers-on-exit", "--gpu-probe", "none"],
            tree=tree,
        ) as (_proc, url):
            _wait_running(url, WORKERS)
            log(f"B11: {WORKERS} workers Running; opening the dashboard")
            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
                )
                try:
                    return _measure(browser, url, window)
                finally:
                    browser.close()


def _measure(browser: Any, url: str, window: float) -> list[Row]:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url + "/", wait_until="load")
    paint = page.evaluate(
        "() => (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime"
    )
    page.click("nav.tabs button[data-tab=workers]")
    page.wait_for_function(
        f"() => document.querySelectorAll('table#workers tbody tr').length >= {WORKERS}",
        timeout=120_000,
    )
    filled = page.evaluate("() => performance.now()")
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")
    pid = _browser_pid()
    log(f"B11: first paint {paint:.0f} ms, table of {WORKERS} at {filled:.0f} ms")
    before = _metrics(cdp)
    busy_workers, cpu_workers = _idle_cost(cdp, pid, window)
    after = _metrics(cdp)
    script = (after["ScriptDuration"] - before["ScriptDuration"]) / window
    layout = (
        after["LayoutDuration"]
        - before["LayoutDuration"]
        + after["RecalcStyleDuration"]
        - before["RecalcStyleDuration"]
    ) / window
    page.click("nav.tabs button[data-tab=status]")
    busy_status, cpu_status = _idle_cost(cdp, pid, window)
    rows = f"{WORKERS} workers"
    peer = "the same page on its Status tab"
    out = [
        Row(BENCH, "first contentful paint", paint, "ms"),
        Row(BENCH, f"navigation -> workers table of {rows} (one click)", filled, "ms"),
        Row(
            BENCH,
            f"page main thread busy, Workers tab, {rows} live, {window:.0f} s",
            busy_workers * 100,
            "% of a core",
            peer,
            busy_status * 100,
        ),
        Row(BENCH, "of which script", script * 100, "% of a core"),
        Row(BENCH, "of which layout and style", layout * 100, "% of a core"),
        Row(
            BENCH,
            f"renderer CPU (OS), Workers tab, {rows} live",
            cpu_workers * 100,
            "% of a core",
            peer,
            cpu_status * 100,
        ),
        Row(BENCH, "console errors", float(len(errors)), "errors", goal="0"),
    ]
    return out
