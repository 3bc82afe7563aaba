"""The dashboard's tests: Debian's headless Chromium (one per session) driven by Playwright
against a real `hive serve` on loopback, with the test hub, the scripted runtime and a fake
GPU probe of two GPUs. Every page fails its test on a console error."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit.browser import CHROMIUM, CHROMIUM_ARGS, chromium_present
from testkit.hub import ThreadedHub
from tests.conftest import Hive, hive_on_hub, install_scripted_runtime

#: Routes a hive may not have (the page says "not available on this hive" on their 404).
OPTIONAL_ROUTES = r"/v1/workers/[^/]+/history|/v1/hub/files|/v1/history|/v1/events/recent"
#: Where the screenshots of each panel go (docs/img/ takes the final ones).
SHOTS = Path(os.environ.get("HIVE_TEST_SHOTS", "/tmp/hive-dashboard-shots"))

TWO_GPUS = {
    "gpus": [
        {
            "index": 0,
            "name": "NVIDIA GeForce RTX 4090",
            "vram_total_mb": 24564,
            "vram_free_mb": 20000,
            "temperature_celsius": 61.0,
            "utilization_percent": 37.0,
            "power_watts": 212.5,
        },
        {"index": 1, "name": "NVIDIA A100", "vram_total_mb": 81920, "vram_free_mb": 81920},
    ]
}


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """One headless Chromium for these tests (Debian's, never a downloaded one). Scoped to
    this package, not the session: Playwright's sync API keeps an event loop running in
    the main thread while it is open, and every async test after it would fail with
    "Runner.run() cannot be called from a running event loop"."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not chromium_present():
        pytest.skip(
            f"no Chromium at {CHROMIUM}: .ci/run installs Debian's `chromium` "
            "(apt-get install chromium); HIVE_TEST_CHROMIUM names another"
        )
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Page:
    """A page of the dashboard, its console errors collected (a test fails on any)."""

    def __init__(self, page: Any, url: str, *, expect_401: bool = False) -> None:
        self.page = page
        self.url = url
        self.expect_401 = expect_401
        #: Set while a test has stopped hive: refused connections are then expected.
        self.hive_down = False
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))

    def _console(self, msg: Any) -> None:
        if msg.type != "error":
            return
        # Chromium logs every 4xx answer: those the page expects are not errors (a 401
        # before the token is typed; the routes another hive may lack, said on the page).
        where = (msg.location or {}).get("url", "")
        if "status of 401" in msg.text and self.expect_401:
            return
        if "ERR_CONNECTION_REFUSED" in msg.text and self.hive_down:
            return
        if "status of 404" in msg.text and re.search(OPTIONAL_ROUTES, where):
            return
        self.errors.append(f"console: {msg.text} ({where})")

    def tab(self, name: str) -> None:
        self.page.click(f"nav.tabs button[data-tab={name}]")

    def shot(self, name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[..., Page]]:
    """`open_page(url, width=1280, height=800)`: a fresh page (its own context, so its
    sessionStorage is its own); after the test, none of them logged a console error."""
    opened: list[tuple[Any, Page]] = []

    def make(url: str, *, width: int = 1280, height: int = 800, expect_401: bool = False) -> Page:
        context = browser.new_context(viewport={"width": width, "height": height})
        page = Page(context.new_page(), url, expect_401=expect_401)
        opened.append((context, page))
        page.page.goto(url + "/")
        return page

    yield make
    errors = []
    for context, page in opened:
        errors += page.errors
        context.close()
    assert not errors, f"console errors: {errors}"


@pytest.fixture
def fake_gpus(tmp_path: Path) -> str:
    path = tmp_path / "gpus.json"
    path.write_text(json.dumps(TWO_GPUS))
    return f"fake:{path}"


@pytest.fixture
def dash_hive(
    hive_factory: Callable[..., Hive],
    hub: ThreadedHub,
    tmp_path: Path,
    fake_gpus: str,
    worker_ports: range,
) -> Callable[..., Hive]:
    """`dash_hive(desired_dir, env=...)`: a hive on the hub with the scripted runtime and the
    fake GPUs."""

    def make(desired: Path, **kw: Any) -> Hive:
        install_scripted_runtime(tmp_path / "home")
        extra = [
            "--gpu-probe",
            fake_gpus,
            "--worker-ports",
            f"{worker_ports.start}-{worker_ports.stop - 1}",
            *kw.pop("extra_args", []),
        ]
        return hive_on_hub(hive_factory, hub, desired, tmp_path, extra_args=extra, **kw)

    return make
