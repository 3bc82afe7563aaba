"""The `hive` command as a user runs it: exit codes, one-line errors, output formats."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import yaml

from tests.conftest import (
    ROOT,
    Hive,
    free_port,
    install_scripted_runtime,
    model_yaml,
    poll,
    run_hive,
    worker_yaml,
)


def test_validate_examples() -> None:
    ok = run_hive("validate", "examples/desired-state")
    assert ok.returncode == 0, ok.stderr
    assert "2 record(s) valid" in ok.stdout  # the tiny model and its llama-cpp worker

    bad = run_hive("validate", "examples/invalid")
    assert bad.returncode == 2
    lines = bad.stdout.splitlines()
    assert "examples/invalid/bad.yaml:8: spec.source: scheme 'ftp' is not supported" in lines[1]
    assert len(lines) == 5  # every problem listed, not just the first
    assert "Traceback" not in bad.stderr


def test_validate_missing_path_is_one_line() -> None:
    result = run_hive("validate", "/nonexistent/dir")
    assert result.returncode == 2
    assert result.stdout.strip() == "/nonexistent/dir: directory does not exist"


def test_plan_exit_codes(
    tmp_path: Path, tiny_model: Path, hive_factory: Callable[..., Hive]
) -> None:
    desired = tmp_path / "desired"
    desired.mkdir()
    (desired / "m.yaml").write_text(model_yaml("tiny", f"file:{tiny_model}"))
    home = tmp_path / "home"

    changes = run_hive("plan", str(desired), "--home", str(home))
    assert changes.returncode == 1
    assert changes.stdout.startswith("provision Model/tiny from file:")
    assert not home.exists()  # plan is read-only

    running = hive_factory(desired=[desired], home=home)
    running.wait_phase("tiny", "Available")
    running.stop()
    nothing = run_hive("plan", str(desired), "--home", str(home))
    assert nothing.returncode == 0, nothing.stdout
    assert "nothing to do" in nothing.stdout

    errors = run_hive("plan", "examples/invalid", "--home", str(home))
    assert errors.returncode == 2


def test_get_against_a_running_hive(
    tmp_path: Path, tiny_model: Path, hive_factory: Callable[..., Hive]
) -> None:
    desired = tmp_path / "desired"
    desired.mkdir()
    (desired / "m.yaml").write_text(model_yaml("tiny", f"file:{tiny_model}"))
    running = hive_factory(desired=[desired])
    running.wait_phase("tiny", "Available")

    table = run_hive("get", "models", "--url", running.url)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "PHASE", "SIZE"]
    assert row.split()[:2] == ["tiny", "Available"]
    # One unit for sizes: the table's SIZE is what the narration said ("0.5 MB at …").
    said = running.wait_event("model_available", obj="Model/tiny")["message"]
    size = said.split("(", 1)[1].split(" at ")[0]
    assert size == "0.5 MB"
    assert f"  {size}  " in row

    as_json = json.loads(run_hive("get", "models", "-o", "json", "--url", running.url).stdout)
    assert as_json["items"][0]["observed"]["metadata"]["architecture"] == "llama"
    as_yaml = yaml.safe_load(run_hive("get", "models", "-o", "yaml", "--url", running.url).stdout)
    assert as_yaml == as_json

    status = run_hive("get", "status", "--url", running.url)
    assert status.returncode == 0
    assert "Models: 1 Available" in status.stdout
    # "hive vm: running" said nothing of what `vm` is.
    assert status.stdout.startswith("hive id ")
    assert "(HIVE_HIVE_ID, else the machine's hostname): running" in status.stdout


def test_get_without_a_hive_is_one_clear_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run_hive("get", "models", "--url", url)
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
        result = run_hive("serve", "--home", str(tmp_path / "home"), "--port", str(port))
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
    result = run_hive("serve", "--home", str(tmp_path / "h"), "--resync-interval", "0")
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("hive: invalid setting resync_interval:")
    assert not (tmp_path / "h").exists()


def test_help_lists_every_command_and_each_says_what_it_does() -> None:
    top = run_hive("--help").stdout
    commands = ["serve", "validate", "plan", "stop-workers", "get", "logs", "delete"]
    commands += ["apply", "events", "job"]
    description = " ".join(top.split("\n\n")[1].split())
    for name in commands:
        assert name in description, name
        page = run_hive(name, "--help").stdout
        paragraph = page.split("\n\n")[1]
        assert not paragraph.startswith(("options:", "positional arguments:")), name


def _scripted_setup(tmp_path: Path, tiny_model: Path, port: int) -> tuple[Path, Path]:
    home = tmp_path / "home"
    install_scripted_runtime(home)
    desired = tmp_path / "desired"
    desired.mkdir()
    (desired / "m.yaml").write_text(model_yaml("tiny", f"file:{tiny_model}"))
    (desired / "w.yaml").write_text(worker_yaml("w", "tiny", port=port))
    return home, desired


def test_plan_covers_workers_with_its_exit_codes(
    tmp_path: Path, tiny_model: Path, hive_factory: Callable[..., Hive], worker_ports: range
) -> None:
    """With workers.yaml declared and the worker stopped, `hive plan` says it would start
    it (it said "nothing to do"); a running worker is nothing to do; a record gone is a
    stop; a device that is not there is unschedulable."""
    home, desired = _scripted_setup(tmp_path, tiny_model, worker_ports.start)
    env = {"HIVE_GPU_PROBE": "none"}

    first = run_hive("plan", str(desired), "--home", str(home), env=env)
    assert first.returncode == 1, first.stdout + first.stderr
    assert first.stdout.splitlines()[1] == (
        "start Worker/w (scripted serving tiny on CPU-0, once Model/tiny is provisioned)"
    )

    running = hive_factory(desired=[desired], home=home, env=env, stop_workers=False)
    pid = running.wait_worker("w", "Running")["observed"]["pid"]
    nothing = run_hive("plan", str(desired), "--home", str(home), env=env)
    assert nothing.returncode == 0, nothing.stdout
    assert nothing.stdout.startswith("nothing to do")

    running.kill()  # the worker keeps running, with no hive
    (desired / "w.yaml").unlink()
    stop = run_hive("plan", str(desired), "--home", str(home), env=env)
    assert stop.returncode == 1
    assert stop.stdout == f"stop Worker/w, PID {pid} (no source declares it any more)\n"
    assert psutil.pid_exists(pid)  # plan is read-only

    stopped = run_hive("stop-workers", "--home", str(home))
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopping worker w (PID {pid}, port {worker_ports.start})" in stopped.stdout
    assert stopped.stdout.endswith("1 worker(s) stopped\n")
    poll(lambda: not psutil.pid_exists(pid) or _zombie(pid), timeout=5, what="the worker gone")

    (desired / "w.yaml").write_text(worker_yaml("w", "tiny", port=worker_ports.start))
    start = run_hive("plan", str(desired), "--home", str(home), env=env)
    assert start.returncode == 1
    assert start.stdout == ("start Worker/w (scripted serving tiny on CPU-0: no process runs it)\n")

    (desired / "w.yaml").write_text(worker_yaml("w", "tiny", device="GPU-7"))
    blocked = run_hive("plan", str(desired), "--home", str(home), env=env)
    assert blocked.returncode == 1
    assert blocked.stdout.startswith(
        "cannot start Worker/w: Unschedulable: NoSuchDevice: GPU-7 does not exist"
    )


def test_plan_stops_a_worker_whose_model_went_as_hive_would(
    tmp_path: Path, tiny_model: Path, hive_factory: Callable[..., Hive], worker_ports: range
) -> None:
    """`hive plan` decides with the supervisor's rules: a Model at `state: absent` stops
    its workers (the plan said nothing), and a model directory removed by hand stops them
    as ModelGone (the plan said "replace … its record changed")."""
    home, desired = _scripted_setup(tmp_path, tiny_model, worker_ports.start)
    env = {"HIVE_GPU_PROBE": "none"}
    running = hive_factory(desired=[desired], home=home, env=env, stop_workers=False)
    pid = running.wait_worker("w", "Running")["observed"]["pid"]
    running.kill()  # the worker keeps running, with no hive
    try:
        (desired / "m.yaml").write_text(model_yaml("tiny", f"file:{tiny_model}", state="absent"))
        absent = run_hive("plan", str(desired), "--home", str(home), env=env)
        assert absent.returncode == 1, absent.stdout + absent.stderr
        assert absent.stdout.splitlines()[1:] == [
            f"stop Worker/w, PID {pid} (model tiny is gone: state is absent)"
        ]

        (desired / "m.yaml").write_text(model_yaml("tiny", f"file:{tiny_model}"))
        shutil.rmtree(home / "models" / "tiny")
        removed = run_hive("plan", str(desired), "--home", str(home), env=env)
        assert removed.returncode == 1, removed.stdout + removed.stderr
        assert removed.stdout.splitlines()[1:] == [
            f"stop Worker/w, PID {pid} (model tiny is gone: removed from disk)"
        ]
        assert psutil.pid_exists(pid) and not _zombie(pid)  # plan is read-only
    finally:
        run_hive("stop-workers", "--home", str(home))


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_plan_says_when_its_home_does_not_exist_and_reads_hive_home(tmp_path: Path) -> None:
    """`hive plan` defaulted to ~/.cache/hive while `make run` serves .hive-home: it reads
    HIVE_HOME, and says when the home it reads is not there."""
    missing = tmp_path / "nowhere"
    result = run_hive("plan", "examples/desired-state", env={"HIVE_HOME": str(missing)})
    assert result.returncode == 1
    assert f"hive: home {missing} does not exist" in result.stderr
    assert "`make run` uses .hive-home" in result.stderr


def test_exit_says_which_workers_it_leaves_and_stop_workers_waits_for_no_hive(
    tmp_path: Path, tiny_model: Path, hive_factory: Callable[..., Hive], worker_ports: range
) -> None:
    home, desired = _scripted_setup(tmp_path, tiny_model, worker_ports.start)
    running = hive_factory(desired=[desired], home=home, stop_workers=False)
    pid = running.wait_worker("w", "Running")["observed"]["pid"]

    # One hive per home: a second one, and stop-workers, are refused while it serves it.
    refused = run_hive("stop-workers", "--home", str(home))
    assert refused.returncode == 2
    assert f"a hive (pid {running.pid}) is serving {home}" in refused.stderr
    second = run_hive("serve", "--home", str(home), "--port", str(free_port()))
    assert second.returncode == 2
    assert f"another hive (pid {running.pid}) is serving home {home}" in second.stderr
    assert psutil.pid_exists(pid)

    running.stop()  # SIGTERM, as Ctrl-C: the worker stays, and hive says so
    log = running.log.read_text()
    assert (
        f"Leaving worker w running (PID {pid}, port {worker_ports.start}): the next hive on "
        f"this home adopts it; `kill -TERM -- -{pid}` stops it alone" in log
    )
    assert f"1 worker(s) left running; stop them with `hive stop-workers --home {home}`" in log
    assert psutil.pid_exists(pid) and not _zombie(pid)

    stopped = run_hive("stop-workers", "--home", str(home))
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped worker w (PID {pid}); port {worker_ports.start} is free" in stopped.stdout
    assert _zombie(pid)
    assert not (home / "state" / "workers" / "w.json").exists()
    again = run_hive("stop-workers", "--home", str(home))
    assert again.stdout == f"no worker left running in {home}\n"


def test_stop_workers_holds_the_home_while_it_stops_them(
    tmp_path: Path, tiny_model: Path, hive_factory: Callable[..., Hive], worker_ports: range
) -> None:
    """`hive stop-workers` looked for a serving hive, then stopped the workers: a hive
    started in between adopted them while they were being stopped. It now holds the
    home's lock throughout, and a `hive serve` meanwhile is refused, saying why."""
    home = tmp_path / "home"
    install_scripted_runtime(home, grace=8.0)
    desired = tmp_path / "desired"
    desired.mkdir()
    (desired / "m.yaml").write_text(model_yaml("tiny", f"file:{tiny_model}"))
    (desired / "w.yaml").write_text(
        worker_yaml("w", "tiny", port=worker_ports.start, args={"mode": "ignore-term"})
    )
    running = hive_factory(desired=[desired], home=home, stop_workers=False)
    pid = running.wait_worker("w", "Running")["observed"]["pid"]
    running.kill()
    stopping = subprocess.Popen(
        [sys.executable, "-m", "hive", "stop-workers", "--home", str(home)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert stopping.stdout is not None
        assert stopping.stdout.readline().startswith(f"stopping worker w (PID {pid}")
        serve = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hive",
                "serve",
                "--home",
                str(home),
                "--port",
                str(free_port()),
                "--desired",
                str(desired),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        try:
            _, err = serve.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.communicate()
            raise AssertionError("hive serve started while stop-workers was stopping") from None
        assert serve.returncode == 2, err
        assert (
            f"hive stop-workers (pid {stopping.pid}) is stopping the workers of home {home}" in err
        )
        out, _ = stopping.communicate(timeout=30)
    finally:
        if stopping.poll() is None:
            stopping.kill()
    assert out.endswith("1 worker(s) stopped\n"), out
    assert "ignored SIGTERM: sent SIGKILL" in out
    assert _zombie(pid)


def test_stop_workers_on_exit_says_each_step(
    tmp_path: Path, tiny_model: Path, hive_factory: Callable[..., Hive], worker_ports: range
) -> None:
    """`make run` passes the flag (Ctrl-C left its worker on :9000 with no owner), and
    `make stop` stops what a hive left running."""
    makefile = (ROOT / "Makefile").read_text()
    run = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "hive serve --desired examples/desired-state --home" in run
    assert "--stop-workers-on-exit" in run
    assert "hive stop-workers --home $(HOME_DIR)" in makefile.split("\nstop:", 1)[1]
    home, desired = _scripted_setup(tmp_path, tiny_model, worker_ports.start)
    running = hive_factory(desired=[desired], home=home, stop_workers=True)
    pid = running.wait_worker("w", "Running")["observed"]["pid"]
    running.stop()
    log = running.log.read_text()
    assert f"Killing worker PID {pid} (hive is stopping)" in log
    assert "Sent SIGTERM" in log and "Worker killed successfully" in log
    assert "left running" not in log
    assert _zombie(pid)


def test_the_partial_column_reads_as_the_download_log_does() -> None:
    """`hive get models`' PARTIAL and the narration's "Downloaded 19 MB / 200 MB" agree."""
    from hive.cli.tables import progress as _progress
    from hive.model.observed import PartialDownload
    from hive.model.units import megabytes_of

    download = PartialDownload(bytes_on_disk=19_000_000, total_bytes=200_000_000)
    assert _progress(download) == "9% 19 MB / 200 MB"
    assert _progress(download).endswith(megabytes_of(19_000_000, 200_000_000))
    assert _progress(PartialDownload(bytes_on_disk=534_752)) == "0.5 MB"


def test_validate_and_plan_with_labels_show_what_that_hive_applies(
    tmp_path: Path, tiny_model: Path
) -> None:
    desired = tmp_path / "desired"
    desired.mkdir()
    selector = (
        "  hiveSelector:\n    matchExpressions:\n      - {key: gpu, operator: In, values: [%s]}\n"
    )
    (desired / "m.yaml").write_text(
        model_yaml("for-a", f"file:{tiny_model}")
        + selector % "a"
        + "---\n"
        + model_yaml("for-b", f"file:{tiny_model}")
        + selector % "b"
    )
    home = tmp_path / "home"
    home.mkdir()

    every = run_hive("validate", str(desired))
    assert every.returncode == 0 and "ok: 2 record(s) valid" in every.stdout
    labelled = run_hive("validate", str(desired), "--labels", "gpu=a,hive.name=n1")
    assert labelled.returncode == 0, labelled.stdout
    assert f"not selected: Model/for-b ({desired / 'm.yaml'}:12)" in labelled.stdout
    assert "2 record(s) valid; 1 apply to a hive with labels gpu=a,hive.name=n1" in labelled.stdout

    plan_a = run_hive("plan", str(desired), "--home", str(home), "--labels", "gpu=a")
    assert plan_a.returncode == 1, plan_a.stdout
    assert "provision Model/for-a" in plan_a.stdout
    assert "provision Model/for-b" not in plan_a.stdout
    assert "not selected: Model/for-b" in plan_a.stdout
    plan_c = run_hive("plan", str(desired), "--home", str(home), "--labels", "gpu=c")
    assert "provision" not in plan_c.stdout and plan_c.returncode == 0, plan_c.stdout
    assert plan_c.stdout.count("not selected:") == 2
    plan_all = run_hive("plan", str(desired), "--home", str(home))
    assert "provision Model/for-a" in plan_all.stdout and "provision Model/for-b" in plan_all.stdout

    # validate still validates every record, selected or not.
    (desired / "bad.yaml").write_text(
        model_yaml("bad", f"file:{tiny_model}")
        + selector % "b"
        + "      - {key: x, operator: In}\n"
    )
    bad = run_hive("validate", str(desired), "--labels", "gpu=a")
    assert bad.returncode == 2
    assert "spec.hiveSelector.matchExpressions" in bad.stdout

    wrong = run_hive("validate", str(desired), "--labels", "gpu")
    assert wrong.returncode == 2 and "is not key=value" in wrong.stderr
