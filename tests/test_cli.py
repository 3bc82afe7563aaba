"""The `hive` command as a user runs it: exit codes, one-line errors, output formats."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from tests.conftest import ROOT, Hive, free_port, model_yaml


def hive(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hive", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def test_validate_examples() -> None:
    ok = hive("validate", "examples/desired-state")
    assert ok.returncode == 0, ok.stderr
    assert "2 record(s) valid" in ok.stdout  # the tiny model and its llama-cpp worker

    bad = hive("validate", "examples/invalid")
    assert bad.returncode == 2
    lines = bad.stdout.splitlines()
    assert "examples/invalid/bad.yaml:8: spec.source: scheme 'ftp' is not supported" in lines[1]
    assert len(lines) == 5  # every problem listed, not just the first
    assert "Traceback" not in bad.stderr


def test_validate_missing_path_is_one_line() -> None:
    result = hive("validate", "/nonexistent/dir")
    assert result.returncode == 2
    assert result.stdout.strip() == "/nonexistent/dir: directory does not exist"


def test_plan_exit_codes(
    tmp_path: Path, tiny_model: Path, hive_factory: Callable[..., Hive]
) -> None:
    desired = tmp_path / "desired"
    desired.mkdir()
    (desired / "m.yaml").write_text(model_yaml("tiny", f"file:{tiny_model}"))
    home = tmp_path / "home"

    changes = hive("plan", str(desired), "--home", str(home))
    assert changes.returncode == 1
    assert changes.stdout.startswith("provision Model/tiny from file:")
    assert not home.exists()  # plan is read-only

    running = hive_factory(desired=[desired], home=home)
    running.wait_phase("tiny", "Available")
    running.stop()
    nothing = hive("plan", str(desired), "--home", str(home))
    assert nothing.returncode == 0, nothing.stdout
    assert "nothing to do" in nothing.stdout

    errors = hive("plan", "examples/invalid", "--home", str(home))
    assert errors.returncode == 2


def test_get_against_a_running_hive(
    tmp_path: Path, tiny_model: Path, hive_factory: Callable[..., Hive]
) -> None:
    desired = tmp_path / "desired"
    desired.mkdir()
    (desired / "m.yaml").write_text(model_yaml("tiny", f"file:{tiny_model}"))
    running = hive_factory(desired=[desired])
    running.wait_phase("tiny", "Available")

    table = hive("get", "models", "--url", running.url)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "PHASE", "SIZE"]
    assert row.split()[:2] == ["tiny", "Available"]

    as_json = json.loads(hive("get", "models", "-o", "json", "--url", running.url).stdout)
    assert as_json["items"][0]["observed"]["metadata"]["architecture"] == "llama"
    as_yaml = yaml.safe_load(hive("get", "models", "-o", "yaml", "--url", running.url).stdout)
    assert as_yaml == as_json

    status = hive("get", "status", "--url", running.url)
    assert status.returncode == 0
    assert "Models: 1 Available" in status.stdout


def test_get_without_a_hive_is_one_clear_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = hive("get", "models", "--url", url)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"hive: cannot reach hive at {url}")
    assert "is `hive serve` running?" in line


def test_serve_on_a_busy_port_is_one_clear_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = hive("serve", "--home", str(tmp_path / "home"), "--port", str(port))
    assert result.returncode == 2
    assert not (tmp_path / "home").exists()  # a hive that cannot listen touches nothing
    assert f"hive: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_shipped_example_converges(
    tmp_path: Path, hive_factory: Callable[..., Hive], tiny_model: Path
) -> None:
    """What `make run` does, on a copy: the example directory and a generated model."""
    examples = tmp_path / "examples"
    shutil.copytree(ROOT / "examples" / "desired-state", examples / "desired-state")
    (examples / "models").mkdir()
    shutil.copy(tiny_model, examples / "models" / "tiny-llama.gguf")
    running = hive_factory(desired=[examples / "desired-state"])
    model = running.wait_phase("tiny-llama", "Available")
    assert model["observed"]["metadata"]["architecture"] == "llama"
    assert model["labels"] == {"family": "llama", "purpose": "example"}


def test_settings_out_of_bounds_are_one_clear_line(tmp_path: Path) -> None:
    result = hive("serve", "--home", str(tmp_path / "h"), "--resync-interval", "0")
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("hive: invalid setting resync_interval:")
    assert not (tmp_path / "h").exists()
