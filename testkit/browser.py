"""Debian's Chromium as the dashboard's tests and B11 launch it (through Playwright, which
downloads no browser of its own): where it is, and the flags it runs with."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

#: The browser: Debian's `chromium` (`.ci/run` installs it), or HIVE_TEST_CHROMIUM.
CHROMIUM = os.environ.get("HIVE_TEST_CHROMIUM", "/usr/bin/chromium")
#: Chromium's flags: no sandbox (containers), no GPU, nothing fetched from the network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_present() -> bool:
    return Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is not None
