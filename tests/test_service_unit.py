"""examples/hive.service: what docs/operations.md says of it holds (the home writable under
ProtectSystem=strict, the token from a file and never on the command line, systemd signals
hive alone), and `systemd-analyze verify` finds nothing to say about it (when installed)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

UNIT = ROOT / "examples" / "hive.service"


def settings() -> dict[str, list[str]]:
    """Every `Key=value` of the unit, by key (a key may repeat)."""
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_the_unit_keeps_what_the_docs_promise() -> None:
    unit = settings()
    argv = shlex.split(unit["ExecStart"][0])
    assert argv[1] == "serve"
    home = argv[argv.index("--home") + 1]
    assert "--desired" in argv
    assert "--token" not in argv and "HIVE_TOKEN" not in unit["ExecStart"][0]
    assert unit["EnvironmentFile"] == ["/etc/hive/hive.env"]
    assert unit["KillMode"] == ["process"]  # hive's workers outlive it, for the next hive
    assert unit["Restart"] == ["on-failure"]
    assert unit["ProtectSystem"] == ["strict"]
    assert home in unit["ReadWritePaths"][0].split()
    assert home == "/var/lib/" + unit["StateDirectory"][0]
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome"):
        assert unit[key] == ["yes"], key
    assert "PrivateDevices" not in unit  # it would hide the GPUs


def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify wants ExecStart's program to exist: this checkout's hive stands in for it.
    hive = Path(sys.executable).with_name("hive")
    unit = tmp_path / "hive.service"
    unit.write_text(UNIT.read_text().replace("/opt/hive/.venv/bin/hive", str(hive)))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, check=False
    )
    # Unknown keys and bad values are only warnings (exit 0): none may be printed either.
    assert result.returncode == 0 and not result.stdout + result.stderr, result.stderr
