"""`hive job` against a real `hive serve`: the operation POSTed (the hive's own id filled
in), each narrated line printed, exit 0 on [DONE], 1 on [ERROR] (printed), 2 for a refused
operation; a download's progress lines; Ctrl-C cancels the job and exits 130."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from hive.cli.job import parse_fields
from testkit.hub import ThreadedHub
from tests.conftest import (
    ROOT,
    Hive,
    hive_on_hub,
    install_scripted_runtime,
    model_yaml,
    run_hive,
)


def test_fields_take_integers_lists_and_json() -> None:
    assert parse_fields(["model=tiny", "device=0", "worker=cuda:0"]) == {
        "model": "tiny",
        "device": 0,
        "worker": "cuda:0",
    }
    assert parse_fields(["pid=41,42", "names=a,b", "model=a,b"]) == {
        "pid": [41, 42],
        "names": ["a", "b"],
        "model": "a,b",
    }
    assert parse_fields(['id:="123"', "count:=2", 'extra:={"a": [1]}']) == {
        "id": "123",
        "count": 2,
        "extra": {"a": [1]},
    }
    for bad in ("novalue", "=x", "k:=nojson"):
        with pytest.raises(ValueError, match=r"key=value|takes JSON"):
            parse_fields([bad])


def test_job_follows_model_list_a_worker_spawn_and_an_error_to_their_end(
    tmp_path: Path, tiny_model: Path, hive_factory: Callable[..., Hive], worker_ports: range
) -> None:
    home = tmp_path / "home"
    install_scripted_runtime(home)
    desired = tmp_path / "desired"
    desired.mkdir()
    (desired / "m.yaml").write_text(model_yaml("tiny", f"file:{tiny_model}"))
    hive = hive_factory(
        desired=[desired],
        home=home,
        extra_args=[
            "--gpu-probe",
            "none",
            "--worker-ports",
            f"{worker_ports.start}-{worker_ports.stop - 1}",
        ],
    )
    hive.wait_phase("tiny", "Available")

    listed = run_hive("job", "model_list", "--url", hive.url)
    assert listed.returncode == 0, listed.stderr
    hive_id = hive.get("/v1/status")["hive_id"]  # filled in by `hive job`: accepted
    assert listed.stdout.splitlines()[0] == f"📋 Listing models on hive '{hive_id}'"
    assert re.search(r"^tiny \| [0-9.]+ GB \| available$", listed.stdout, re.M), listed.stdout

    spawned = run_hive(
        "job", "worker_spawn", "model=tiny", "worker=cpu", "device=0", "--url", hive.url
    )
    assert spawned.returncode == 0, spawned.stdout + spawned.stderr
    worker = hive.wait_worker("tiny-cpu-0", "Running")
    pid, port = worker["observed"]["pid"], worker["observed"]["port"]
    assert f"✅ Worker spawned (PID: {pid}, port: {port})" in spawned.stdout.splitlines()
    assert worker["source"]["name"] == "api"

    failed = run_hive(
        "job", "worker_spawn", "model=tiny", "worker=cuda", "device=7", "--url", hive.url
    )
    assert failed.returncode == 1, failed.stdout + failed.stderr
    (line,) = failed.stderr.splitlines()
    # No GPU 7 here, and no runtime for cuda: the reason as hive's status says it.
    assert re.match(r"hive: job job-[0-9a-f-]+ failed: Worker/tiny-gpu-7: Pending \(", line), line

    refused = run_hive("job", "worker_spawn", "model=tiny", "--url", hive.url)
    assert refused.returncode == 2
    assert refused.stderr.startswith("hive: "), refused.stderr
    assert "worker" in refused.stderr
    bad = run_hive("job", "model_get", "id", "--url", hive.url)
    assert bad.returncode == 2
    assert bad.stderr == "hive: 'id' is not key=value (or key:=JSON)\n"


def test_a_download_prints_its_progress_and_ctrl_c_cancels_it(
    tmp_path: Path,
    tiny_model: Path,
    hive_factory: Callable[..., Hive],
    hub: ThreadedHub,
    desired: Path,
) -> None:
    hub.add_file("tiny/tiny-model", "tiny.Q8_0.gguf", tiny_model)
    big = tmp_path / "big.gguf"
    with big.open("wb") as fh:
        fh.write(b"GGUF")
        fh.truncate(16 * 1024 * 1024)
    hub.add_file("big/big-model", "big.Q8_0.gguf", big)
    # 16 s for the big file at this rate: the Ctrl-C comes first.
    hive = hive_on_hub(
        hive_factory, hub, desired, tmp_path, extra_args=["--download-rate-limit", "1MB/s"]
    )

    done = run_hive("job", "model_download", "model=tiny/tiny-model:Q8_0", "--url", hive.url)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("📥 Downloading")
    # Not a terminal: each progress event is its line, as hive narrated it.
    assert any(re.fullmatch(r"Downloaded .* \(100%\)", line) for line in lines), lines

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hive",
            "job",
            "model_download",
            "model=big/big-model:Q8_0",
            "--url",
            hive.url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("Downloaded "):
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert re.fullmatch(r"hive: job job-[0-9a-f-]+ cancelled \(Ctrl-C\)\n", err), err
    # The job's record is gone again: only the finished download's stays.
    names = [m["metadata"]["name"] for m in hive.get("/v1/desired/api")["items"]]
    assert names == ["tiny-model-q8-0"]
    hive.wait_event("model_download_cancelled")
