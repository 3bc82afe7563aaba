"""End to end: `hive serve` with its home on a real small filesystem (a 20 MiB tmpfs) that
fills up: mid-download, while writing its records, before a copy. A full disk is the
condition InsufficientSpace (needed, free, where), one event per attempt, no traceback,
the partial kept; once space is freed everything goes on."""

from __future__ import annotations

import re
import resource
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from testkit.hub import ThreadedHub
from tests.conftest import (
    ROOT,
    Hive,
    degraded,
    fill,
    free_port,
    grow,
    hive_on_hub,
    install_scripted_runtime,
    model_yaml,
    padded,
    poll,
    run_hive,
    worker_yaml,
    write_atomic,
)

pytestmark = pytest.mark.e2e
REPO = "hive-test/tiny-GGUF"
MB = 1_000_000
#: Short back-off: a full disk is retried, and the test waits for the retry after freeing.
FAST_RETRY = {"HIVE_BACKOFF_BASE": "0.2", "HIVE_BACKOFF_CAP": "0.5"}


def failed_for_space(hive: Hive, name: str) -> dict[str, Any]:
    """Wait until Model/name is Failed with reason InsufficientSpace; its status."""

    def check() -> dict[str, Any] | None:
        m = hive.model(name)
        if m is None or m["status"]["phase"] != "Failed":
            return None
        return m if degraded(m)["reason"] == "InsufficientSpace" else None

    return poll(check, timeout=30, what=f"Model/{name} Failed with InsufficientSpace")


def assert_one_failure_per_attempt(hive: Hive, name: str) -> None:
    """Each attempt (from one model_download_start to the next) ends in exactly one
    failure event, and nothing reports an internal error."""
    events = [e for e in list(hive.events) if e.get("object") == f"Model/{name}"]
    attempts: list[list[dict[str, Any]]] = []
    for e in events:
        if e["action"] == "model_download_start":
            attempts.append([])
        elif attempts:
            attempts[-1].append(e)
    assert attempts, events
    for attempt in attempts[:-1]:  # the last one may still be under way
        failures = [e for e in attempt if e["action"].endswith("_failed")]
        assert len(failures) == 1, [(e["action"], e["message"]) for e in attempt]
        assert failures[0]["data"]["reason"] == "InsufficientSpace", failures[0]
    everything = " ".join(f"{e['action']} {e['message']}" for e in list(hive.events))
    assert "InternalError" not in everything
    assert "reconcile_error" not in everything


def assert_no_traceback(hive: Hive) -> None:
    hive.stop()
    log = hive.log.read_text()
    assert "Traceback" not in log, log[-3000:]


def test_a_disk_filling_up_mid_download_is_insufficient_space_and_resumes_once_freed(
    hive_factory: Callable[..., Hive],
    hub: ThreadedHub,
    desired: Path,
    tmp_path: Path,
    tiny_model: Path,
    small_disk: Path,
) -> None:
    size = 12 * MB
    source = padded(tiny_model, tmp_path / "a.gguf", size)
    hub.add_file(REPO, "a.gguf", source)
    hub.add_file(REPO, "b.gguf", tiny_model)
    hub.throttle(3 * MB)
    hive = hive_on_hub(
        hive_factory, hub, desired, tmp_path, env=FAST_RETRY, home=small_disk / "home"
    )
    write_atomic(desired / "a.yaml", model_yaml("a", f"hf://{REPO}/a.gguf"))
    partial = hive.home / "models" / "a" / "model.gguf.partial"
    poll(lambda: partial.exists() and partial.stat().st_size > MB, what="some bytes")
    filler = fill(small_disk)

    model = failed_for_space(hive, "a")
    message = model["status"]["message"]
    assert re.search(r"\d+\.\d MB still to download", message), message  # needed
    assert re.search(r"\d+\.\d MB free", message), message  # free
    assert str(hive.home / "models" / "a") in message  # where
    assert f"filesystem {small_disk}" in message
    assert "of None" not in message
    assert "kept and resumes when space is freed" in message
    kept = partial.stat().st_size
    assert kept > MB  # the partial is kept for the resume

    # A second model on the full disk is refused the same way, never as an internal error.
    write_atomic(desired / "b.yaml", model_yaml("b", f"hf://{REPO}/b.gguf"))
    second = failed_for_space(hive, "b")
    assert re.search(r"\d+\.\d MB free", second["status"]["message"])
    assert str(hive.home / "models" / "b") in second["status"]["message"]
    assert_one_failure_per_attempt(hive, "a")
    assert_one_failure_per_attempt(hive, "b")

    filler.unlink()
    hub.throttle(None)
    done = hive.wait_phase("a", "Available", timeout=60)
    assert done["observed"]["metadata"]["sha256"] == hub.file(REPO, "a.gguf").sha256
    assert "model_download_resumed" in hive.actions("Model/a")
    resumed = [r.range_start for r in hub.requests_to("cdn", "GET") if r.range_start]
    assert resumed and resumed[-1] >= kept  # from the bytes kept, not from zero
    hive.wait_phase("b", "Available", timeout=30)
    assert_no_traceback(hive)


def test_writing_metadata_on_a_full_disk_is_insufficient_space(
    hive_factory: Callable[..., Hive],
    desired: Path,
    tmp_path: Path,
    tiny_model: Path,
    small_disk: Path,
) -> None:
    """A hard link needs no room for bytes, but its metadata.json does: with none left, the
    write fails (ENOSPC), and that is InsufficientSpace too, until the space is freed."""
    source = small_disk / "tiny.gguf"  # on the home's filesystem: hard-linked
    shutil.copyfile(tiny_model, source)
    hive = hive_factory(desired=[desired], home=small_disk / "home", env=FAST_RETRY)
    filler = fill(small_disk)
    write_atomic(desired / "m.yaml", model_yaml("m", f"file:{source}"))
    model = failed_for_space(hive, "m")
    message = model["status"]["message"]
    assert "a few KB for hive's records needed" in message
    assert re.search(r"\d+\.\d MB free", message)
    assert f"filesystem {small_disk}" in message
    assert_one_failure_per_attempt(hive, "m")

    filler.unlink()
    hive.wait_phase("m", "Available", timeout=30)
    complete = hive.wait_event("model_download_complete", obj="Model/m")
    assert complete["data"]["method"] == "hardlink"
    assert_no_traceback(hive)


def test_a_copy_that_does_not_fit_is_refused_before_copying(
    hive_factory: Callable[..., Hive],
    desired: Path,
    tmp_path: Path,
    tiny_model: Path,
    small_disk: Path,
) -> None:
    source = padded(tiny_model, tmp_path / "big.gguf", 30 * MB)  # another filesystem
    hive = hive_factory(desired=[desired], home=small_disk / "home", env=FAST_RETRY)
    write_atomic(desired / "m.yaml", model_yaml("m", f"file:{source}"))
    model = failed_for_space(hive, "m")
    message = model["status"]["message"]
    assert "30.0 MB to copy" in message, message
    assert re.search(r"\d+\.\d MB free", message)
    assert f"filesystem {small_disk}" in message
    assert shutil.disk_usage(small_disk).used < MB  # nothing was copied
    assert_one_failure_per_attempt(hive, "m")

    grow(small_disk, "64m")
    done = hive.wait_phase("m", "Available", timeout=60)
    assert done["observed"]["metadata"]["size"] == 30 * MB
    assert hive.wait_event("model_download_complete", obj="Model/m")["data"]["method"] == "copy"
    assert_no_traceback(hive)


def test_a_file_size_limit_is_insufficient_space_with_where_and_resumes(
    hive_factory: Callable[..., Hive],
    hub: ThreadedHub,
    desired: Path,
    tmp_path: Path,
    tiny_model: Path,
) -> None:
    """Where no tmpfs can be mounted: RLIMIT_FSIZE makes writes past it fail with EFBIG,
    as a full disk fails them with ENOSPC; raising it frees the space."""
    size = 30 * MB
    hub.add_file(REPO, "m.gguf", padded(tiny_model, tmp_path / "m.gguf", size))
    limit = 10 * MB

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    hive = hive_on_hub(hive_factory, hub, desired, tmp_path, env=FAST_RETRY, preexec_fn=cap)
    write_atomic(desired / "m.yaml", model_yaml("m", f"hf://{REPO}/m.gguf"))
    model = failed_for_space(hive, "m")
    message = model["status"]["message"]
    assert "File too large" in message and "ulimit -f" in message, message
    assert f"{(size - limit) / MB:.1f} MB still to download" in message
    assert str(hive.home / "models" / "m") in message
    assert re.search(r"\d[\d,]*(\.\d)? MB free", message)  # on the test's own disk
    partial = hive.home / "models" / "m" / "model.gguf.partial"
    assert partial.stat().st_size == limit  # kept for the resume
    assert_one_failure_per_attempt(hive, "m")

    resource.prlimit(
        hive.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    )
    hive.wait_phase("m", "Available", timeout=60)
    assert "model_download_resumed" in hive.actions("Model/m")
    assert_no_traceback(hive)


def test_a_worker_spawned_on_a_full_disk_is_insufficient_space_then_runs(
    hive_factory: Callable[..., Hive],
    desired: Path,
    tiny_model: Path,
    small_disk: Path,
    worker_ports: range,
) -> None:
    """The worker's log and state record cannot be written: the spawn fails as
    InsufficientSpace (not as an unexpected error with a traceback), and the worker starts
    once space is freed."""
    home = small_disk / "home"
    install_scripted_runtime(home)
    source = small_disk / "tiny.gguf"
    shutil.copyfile(tiny_model, source)
    write_atomic(desired / "m.yaml", model_yaml("tiny", f"file:{source}"))
    hive = hive_factory(
        desired=[desired],
        home=home,
        env={**FAST_RETRY, "HIVE_CRASHLOOP_BASE": "0.3", "HIVE_HEALTH_START_INTERVAL": "0.05"},
        extra_args=[
            "--worker-ports",
            f"{worker_ports.start}-{worker_ports.stop - 1}",
            "--gpu-probe",
            "none",
        ],
    )
    hive.wait_phase("tiny", "Available")
    filler = fill(small_disk)
    write_atomic(desired / "w.yaml", worker_yaml("w", "tiny"))

    def spawn_failed() -> dict[str, Any] | None:
        w = hive.worker("w")
        conditions = {c["type"]: c for c in (w or {}).get("status", {}).get("conditions", [])}
        reason = conditions.get("Degraded", {}).get("reason")
        return w if reason == "InsufficientSpace" else None

    worker = poll(spawn_failed, timeout=30, what="Worker/w to fail for want of space")
    message = worker["status"]["message"]
    assert str(home / "logs" / "workers") in message
    assert f"filesystem {small_disk}" in message
    assert re.search(r"\d+\.\d MB free", message)
    assert "reconcile_error" not in hive.actions()

    filler.unlink()
    hive.wait_worker("w", "Running", timeout=30)
    assert_no_traceback(hive)


def test_a_home_full_at_start_is_said_so_in_one_line(small_disk: Path) -> None:
    """hive's first writes (its instance id) found no room: one line saying where, how
    much is free and what to do, exit 2, no traceback (it said `hive: No space left on
    device`, naming nothing)."""
    fill(small_disk)
    home = small_disk / "home"
    started = run_hive(
        "serve",
        "--home",
        str(home),
        "--desired",
        str(ROOT / "examples" / "desired-state"),
        "--port",
        str(free_port()),
    )
    assert started.returncode == 2, started.stderr
    last = started.stderr.strip().splitlines()[-1]
    assert last.startswith(f"hive: cannot start: no room to write in {home}"), last
    assert "No space left on device (ENOSPC)" in last
    assert "start hive again once space is freed" in last
    assert "Traceback" not in started.stderr
