"""Workers end to end: a real `hive serve` spawning real processes (the built-in llama-cpp
runtime on the tiny model, and the test-only scripted runtime for the behaviours), health
checks, restarts with back-off, stop, adoption after SIGKILL, placement and ports."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import (
    ROOT,
    Hive,
    bindable,
    install_scripted_runtime,
    model_yaml,
    poll,
    run_hive,
    worker_yaml,
    write_atomic,
)

pytestmark = pytest.mark.e2e

#: Fast settings: the behaviours are the defaults', only the clock runs faster.
FAST = {
    "HIVE_HEALTH_START_INTERVAL": "0.05",
    "HIVE_HEALTH_INTERVAL": "0.2",
    "HIVE_CRASHLOOP_BASE": "0.5",
    "HIVE_PLACEMENT_RETRY": "0.3",
}


@pytest.fixture
def ports(worker_ports: range) -> range:
    return worker_ports


@pytest.fixture
def setup(
    tmp_path: Path, tiny_model: Path, hive_factory: Callable[..., Hive], ports: range
) -> Callable[..., tuple[Hive, Path]]:
    """A hive with the model `tiny` declared and the scripted runtime installed; returns
    the hive and the desired directory."""

    def make(
        *,
        grace: float = 2.0,
        start_timeout: float = 15.0,
        env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
        stop_workers: bool = True,
        workers: str = "",
        resync: float = 30.0,
    ) -> tuple[Hive, Path]:
        home = tmp_path / "home"
        install_scripted_runtime(home, grace=grace, start_timeout=start_timeout)
        desired = tmp_path / "desired"
        desired.mkdir(exist_ok=True)
        (desired / "model.yaml").write_text(model_yaml("tiny", f"file://{tiny_model}"))
        if workers:
            (desired / "workers.yaml").write_text(workers)
        hive = hive_factory(
            desired=[desired],
            home=home,
            env={**FAST, **(env or {})},
            extra_args=[
                "--worker-ports",
                f"{ports.start}-{ports.stop - 1}",
                "--gpu-probe",
                "none",
                *(extra_args or []),
            ],
            stop_workers=stop_workers,
            resync=resync,
        )
        return hive, desired

    return make


def worker_get(url: str, path: str) -> Any:
    with urllib.request.urlopen(url + path, timeout=10) as r:
        return json.load(r)


def stamps(path: Path) -> list[tuple[str, float]]:
    """The scripted workers' "start"/"exit" lines (`SCRIPTED_WORKER_STAMPS`), in order."""
    if not path.exists():
        return []
    lines = [line.split() for line in path.read_text().splitlines()]
    return [(what, float(t)) for what, t in lines]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# -- the real inference runtime --------------------------------------------------------------
def test_llama_cpp_worker_answers_a_completion_with_its_args(
    setup: Callable[..., tuple[Hive, Path]],
) -> None:
    hive, _ = setup(
        env={"HIVE_METRICS_INTERVAL": "0.3"},
        workers=worker_yaml(
            "chat", "tiny", runtime="llama-cpp", args={"ctx_size": 256, "threads": 1}
        ),
    )
    w = hive.wait_worker("chat", "Running", timeout=60)
    facts = w["observed"]
    assert facts["status"] == "running"
    assert facts["worker_type"] == "cpu"
    assert facts["model"] == "tiny"
    url = facts["url"]
    request = urllib.request.Request(
        url + "/v1/completions",
        data=json.dumps({"prompt": "hello", "max_tokens": 8, "ignore_eos": True}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        body = json.load(r)
    assert body["choices"][0]["text"]
    assert body["usage"]["completion_tokens"] == 8
    props = worker_get(url, "/props")
    assert props["default_generation_settings"]["n_ctx"] == 256  # args reached llama.cpp
    models = worker_get(url, "/v1/models")
    assert models["data"][0]["id"] == "tiny"
    # The model's catalog entry says a worker used it.
    model = hive.model("tiny")
    assert model is not None
    assert model["observed"]["metadata"]["last_accessed"] is not None

    # Performance scraped from llama.cpp's /metrics reaches the worker's status.
    def scraped() -> dict[str, Any] | None:
        metrics = (hive.worker("chat") or {}).get("observed", {}).get("metrics") or {}
        return metrics if (metrics.get("tokens_generated") or 0) >= 8 else None

    poll(scraped, timeout=30, what="the completion's tokens in the scraped metrics")
    # ... and hive's own Prometheus endpoint.
    with urllib.request.urlopen(hive.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    assert 'hive_worker_up{device="CPU-0",model="tiny",worker="chat"} 1.0' in text
    assert 'hive_worker_tokens_generated_total{worker="chat"}' in text
    assert 'hive_objects{kind="Worker",phase="Running"} 1.0' in text


def test_args_hive_changes_are_said_and_a_cpu_worker_gets_no_gpu_offload(
    setup: Callable[..., tuple[Hive, Path]],
) -> None:
    """ctx_size 512 on a model trained with 256, n_gpu_layers 20 on CPU-0: the worker runs
    with 256 and 0, a warning says so, and its status carries ArgsAdjusted."""
    hive, _ = setup(
        workers=worker_yaml(
            "chat",
            "tiny",
            runtime="llama-cpp",
            args={"ctx_size": 512, "n_gpu_layers": 20, "threads": 1},
        ),
    )
    w = hive.wait_worker("chat", "Running", timeout=60)
    event = hive.wait_event("worker_args_adjusted", obj="Worker/chat")
    assert event["level"] == "warning"
    assert "ctx_size: asked 512, using 256" in event["message"]
    assert "n_gpu_layers: asked 20, using 0 (CPU-0 is not a GPU" in event["message"]
    adjusted = [c for c in w["status"]["conditions"] if c["type"] == "ArgsAdjusted"]
    assert adjusted and adjusted[0]["status"] == "True"
    assert adjusted[0]["reason"] == "SeveralArgs"
    assert "asked 512, using 256" in adjusted[0]["message"]
    banner = Path(w["observed"]["log_path"]).read_text().splitlines()[0]  # hive's argv line
    assert "--ctx-size 256 " in banner and "--n-gpu-layers 0 " in banner
    props = worker_get(w["observed"]["url"], "/props")
    assert props["default_generation_settings"]["n_ctx"] == 256


# -- environment and placement ---------------------------------------------------------------
def test_worker_gets_markers_and_its_gpu_and_not_the_token(
    setup: Callable[..., tuple[Hive, Path]], tmp_path: Path
) -> None:
    gpus = tmp_path / "gpus.json"
    gpus.write_text(
        json.dumps(
            {
                "gpus": [
                    {"index": 0, "name": "Fake A", "vram_total_mb": 24000, "vram_free_mb": 20000},
                    {"index": 1, "name": "Fake B", "vram_total_mb": 24000, "vram_free_mb": 20000},
                ]
            }
        )
    )
    hive, _ = setup(
        workers=worker_yaml("g1", "tiny", device="GPU-1"),
        env={"HIVE_TOKEN": "sekrit-sekrit-sekrit"},
        extra_args=["--gpu-probe", f"fake:{gpus}"],
    )
    w = hive.wait_worker("g1", "Running")
    env = worker_get(w["observed"]["url"], "/env")
    assert env["CUDA_VISIBLE_DEVICES"] == "1"
    assert env["HIVE_WORKER_ID"] == w["observed"]["worker_id"]
    instance = (Path(hive.home) / "state" / "instance-id").read_text().strip()
    assert env["HIVE_INSTANCE"] == instance
    assert "HIVE_TOKEN" not in env
    assert w["observed"]["worker_type"] == "cuda"


def test_cpu_worker_sees_no_gpu(setup: Callable[..., tuple[Hive, Path]]) -> None:
    hive, _ = setup(workers=worker_yaml("c", "tiny"))
    w = hive.wait_worker("c", "Running")
    assert worker_get(w["observed"]["url"], "/env")["CUDA_VISIBLE_DEVICES"] == ""


def test_model_too_large_for_free_vram_is_unschedulable_until_room_appears(
    setup: Callable[..., tuple[Hive, Path]], tmp_path: Path
) -> None:
    gpus = tmp_path / "gpus.json"

    def write_gpus(free_mb: int) -> None:
        write_atomic(
            gpus,
            json.dumps(
                {"gpus": [{"index": 0, "name": "A", "vram_total_mb": 100, "vram_free_mb": free_mb}]}
            ),
        )

    write_gpus(10)  # the tiny model plus overhead needs ~65 MiB
    hive, _ = setup(
        workers=worker_yaml("big", "tiny", device="GPU-0"),
        extra_args=["--gpu-probe", f"fake:{gpus}"],
    )
    w = hive.wait_worker("big", "Pending", saying="Unschedulable")
    ready = next(c for c in w["status"]["conditions"] if c["type"] == "Degraded")
    assert "Unschedulable" in w["status"]["message"]
    assert "InsufficientVRAM" in ready["message"]
    assert "GPU-0 has 10 MiB free" in ready["message"]
    hive.wait_event("worker_unschedulable", obj="Worker/big")
    write_gpus(100)
    hive.wait_worker("big", "Running")


def test_a_gpu_that_does_not_exist_is_unschedulable(
    setup: Callable[..., tuple[Hive, Path]],
) -> None:
    hive, _ = setup(workers=worker_yaml("nogpu", "tiny", device="GPU-3"))
    w = hive.wait_worker("nogpu", "Pending", saying="NoSuchDevice")
    assert "NoSuchDevice" in w["status"]["message"]
    assert "no GPU found" in w["status"]["message"]


# -- ports -----------------------------------------------------------------------------------
def test_two_workers_asking_for_one_port(
    setup: Callable[..., tuple[Hive, Path]], ports: range
) -> None:
    port = ports.start + 5
    hive, _ = setup(
        workers=worker_yaml("a", "tiny", port=port) + "---\n" + worker_yaml("b", "tiny", port=port)
    )

    def one_running_one_refused() -> bool:
        phases = {n: hive.worker_phase(n) for n in ("a", "b")}
        return sorted(phases.values(), key=str) == ["Pending", "Running"]

    poll(one_running_one_refused, timeout=20, what="one worker running, one refused")
    loser = "a" if hive.worker_phase("a") == "Pending" else "b"
    winner = "b" if loser == "a" else "a"
    w = hive.worker(loser)
    assert w is not None
    assert f"port {port} is already used by worker {winner}" in w["status"]["message"]


def test_all_ports_busy_is_a_clear_condition(
    setup: Callable[..., tuple[Hive, Path]], ports: range
) -> None:
    held = []
    for port in ports:
        s = socket.socket()
        s.bind(("127.0.0.1", port))
        s.listen()
        held.append(s)
    try:
        hive, _ = setup(workers=worker_yaml("p", "tiny"))
        w = hive.wait_worker("p", "Pending", saying="no free port")
        assert f"no free port in {ports.start}-{ports.stop - 1}" in w["status"]["message"]
        held.pop().close()  # one port frees up: the worker starts on it
        w = hive.wait_worker("p", "Running")
        assert w["observed"]["port"] == ports.stop - 1
    finally:
        for s in held:
            s.close()


def test_a_spec_port_taken_by_another_process(
    setup: Callable[..., tuple[Hive, Path]], ports: range
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports.start))
        s.listen()
        hive, _ = setup(workers=worker_yaml("p", "tiny", port=ports.start))
        w = hive.wait_worker("p", "Pending", saying="in use by another process")
        assert "in use by another process" in w["status"]["message"]


# -- stop ------------------------------------------------------------------------------------
def test_removing_the_record_stops_the_whole_group_and_frees_the_port(
    setup: Callable[..., tuple[Hive, Path]],
) -> None:
    hive, desired = setup(grace=2.0, workers=worker_yaml("s", "tiny", args={"child": True}))
    w = hive.wait_worker("s", "Running")
    pid, port = w["observed"]["pid"], w["observed"]["port"]
    group = [p.pid for p in psutil.process_iter() if _pgid(p.pid) == pid]
    assert len(group) == 2  # the worker and the grandchild it started
    (desired / "workers.yaml").unlink()
    poll(lambda: all(gone(p) for p in group), timeout=3.0, what="the process group to be gone")
    poll(lambda: bindable(port), timeout=1.0, what=f"port {port} to be free")
    hive.wait_event("worker_proc_del_ok", obj="Worker/s")
    assert hive.actions("Worker/s")[-3:] == [
        "worker_proc_del_start",
        "worker_proc_del_sigterm",
        "worker_proc_del_ok",
    ]
    assert not (Path(hive.home) / "state" / "workers" / "s.json").exists()
    poll(lambda: hive.worker("s") is None, timeout=5, what="the worker to be forgotten")


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def test_a_worker_ignoring_sigterm_is_killed_after_the_grace(
    setup: Callable[..., tuple[Hive, Path]],
) -> None:
    hive, desired = setup(
        grace=1.0, workers=worker_yaml("stubborn", "tiny", args={"mode": "ignore-term"})
    )
    pid = hive.wait_worker("stubborn", "Running")["observed"]["pid"]
    write_atomic(
        desired / "workers.yaml",
        worker_yaml("stubborn", "tiny", args={"mode": "ignore-term"}, state="stopped"),
    )
    hive.wait_event("worker_proc_del_sigkill", obj="Worker/stubborn", timeout=5)
    poll(lambda: gone(pid), timeout=3, what="the stubborn worker to be gone")
    w = hive.wait_worker("stubborn", "Dead")
    assert w["status"]["conditions"][0]["reason"] == "Stopped"


# -- restarts --------------------------------------------------------------------------------
def test_kill_9_shows_crash_loop_back_off_until_the_restart(
    setup: Callable[..., tuple[Hive, Path]],
) -> None:
    """A back-off far longer than the test: CrashLoopBackOff holds while the test looks, on
    however slow a machine."""
    hive, _ = setup(env={"HIVE_CRASHLOOP_BASE": "300"}, workers=worker_yaml("k", "tiny"))
    pid = hive.wait_worker("k", "Running")["observed"]["pid"]
    os.kill(pid, signal.SIGKILL)
    dead = hive.wait_worker("k", "Dead")
    assert dead["status"]["conditions"][0]["reason"] == "CrashLoopBackOff"
    assert dead["observed"]["next_restart_time"] is not None
    assert dead["observed"]["last_exit"]["signal"] == signal.SIGKILL
    assert "killed by SIGKILL" in dead["observed"]["last_exit_text"]
    event = hive.wait_event("worker_restart_scheduled", obj="Worker/k")
    assert event["data"]["delay_seconds"] == 300
    # `hive get workers` shows it as kubectl does: STATUS CrashLoopBackOff, the whole message.
    table = run_hive("get", "workers", "--url", hive.url)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split()[:2] == ["NAME", "STATUS"]
    assert row.split()[:2] == ["k", "CrashLoopBackOff"]
    assert "back-off 300s restarting failed worker (killed by SIGKILL); next restart in " in row
    assert row.endswith("s")  # not cut at 60 characters
    assert hive.worker_phase("k") == "Dead"  # still waiting: nothing restarted it early


def test_kill_9_restarts_after_the_back_off(
    setup: Callable[..., tuple[Hive, Path]], tmp_path: Path
) -> None:
    log = tmp_path / "stamps"
    hive, _ = setup(
        env={"HIVE_CRASHLOOP_BASE": "0.5", "SCRIPTED_WORKER_STAMPS": str(log)},
        workers=worker_yaml("k", "tiny"),
    )
    pid = hive.wait_worker("k", "Running")["observed"]["pid"]
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    w = hive.wait_worker("k", "Running", restarts=1)
    assert w["observed"]["pid"] != pid
    assert w["observed"]["last_exit"]["signal"] == signal.SIGKILL
    event = hive.wait_event("worker_restart_scheduled", obj="Worker/k")
    assert event["data"]["delay_seconds"] == 0.5
    # The new process really started no sooner than the back-off after the kill.
    starts = [t for what, t in stamps(log) if what == "start"]
    assert len(starts) == 2, starts
    assert starts[1] - killed >= 0.5, f"restarted {starts[1] - killed:.3f} s after SIGKILL"


def test_crash_loop_intervals_double(
    setup: Callable[..., tuple[Hive, Path]], tmp_path: Path
) -> None:
    log = tmp_path / "stamps"
    hive, _ = setup(
        env={"HIVE_CRASHLOOP_BASE": "0.25", "SCRIPTED_WORKER_STAMPS": str(log)},
        workers=worker_yaml("c", "tiny", args={"mode": "crash"}),
    )

    def delays() -> list[float] | None:
        found = [
            e["data"]["delay_seconds"]
            for e in list(hive.events)
            if e["action"] == "worker_restart_scheduled" and e.get("object") == "Worker/c"
        ]
        return found if len(found) >= 4 else None

    assert poll(delays, timeout=20, what="four restarts")[:4] == [0.25, 0.5, 1.0, 2.0]
    # The waits really happened: each crash to the next process's start, as the processes
    # themselves saw it, is at least the back-off narrated for it.
    seen = poll(
        lambda: s if len(s := stamps(log)) >= 10 else None,
        timeout=20,
        what="five starts and exits",
    )
    assert [what for what, _ in seen[:10]] == ["start", "exit"] * 5
    gaps = [seen[i + 1][1] - seen[i][1] for i in range(1, 9, 2)]
    for gap, delay in zip(gaps, [0.25, 0.5, 1.0, 2.0], strict=True):
        assert gap >= delay, f"restarted {gap:.3f} s after a crash, back-off {delay} s: {gaps}"
    w = hive.worker("c")
    assert w is not None
    assert w["observed"]["last_exit"]["code"] == 3
    assert "crashing at start as asked" in "\n".join(
        worker_get(hive.url, "/v1/workers/c")["observed"]["log_tail"]
    )


def test_restart_policy_never_and_on_failure(setup: Callable[..., tuple[Hive, Path]]) -> None:
    hive, _ = setup(
        workers=worker_yaml(
            "never", "tiny", args={"mode": "exit-after", "delay": 0.3}, restart_policy="Never"
        )
        + "---\n"
        + worker_yaml(
            "onfail", "tiny", args={"mode": "exit-after", "delay": 0.3}, restart_policy="OnFailure"
        )
    )
    w = hive.wait_worker("never", "Dead")
    assert w["observed"]["last_exit"]["code"] == 4
    assert w["status"]["conditions"][0]["reason"] == "Failed"
    hive.wait_worker("onfail", "Running", restarts=1)
    assert hive.worker("never")["observed"]["restarts"] == 0  # type: ignore[index]


def test_unhealthy_worker_is_restarted(setup: Callable[..., tuple[Hive, Path]]) -> None:
    hive, _ = setup(workers=worker_yaml("sick", "tiny", args={"mode": "sicken", "delay": 0.5}))
    hive.wait_event("worker_unhealthy", obj="Worker/sick")
    w = hive.wait_worker("sick", "Running", restarts=1)
    assert w["observed"]["last_exit"]["reason"] == "Unhealthy"


def test_never_healthy_times_out_at_start(setup: Callable[..., tuple[Hive, Path]]) -> None:
    hive, _ = setup(
        start_timeout=1.0, workers=worker_yaml("mute", "tiny", args={"mode": "never-healthy"})
    )
    event = hive.wait_event("worker_start_timeout", obj="Worker/mute")
    assert "no healthy answer within 1s" in event["message"]
    w = hive.wait_worker("mute", "Dead")
    assert w["observed"]["last_exit"]["reason"] == "StartTimeout"


def test_slow_start_is_starting_then_running(setup: Callable[..., tuple[Hive, Path]]) -> None:
    hive, _ = setup(workers=worker_yaml("slow", "tiny", args={"mode": "slow-start", "delay": 1.5}))
    w = hive.wait_worker("slow", "Starting")
    assert w["observed"]["status"] == "starting"
    hive.wait_worker("slow", "Running")


def test_explicit_restart_and_spec_change(setup: Callable[..., tuple[Hive, Path]]) -> None:
    hive, desired = setup(workers=worker_yaml("r", "tiny"))
    pid = hive.wait_worker("r", "Running")["observed"]["pid"]
    code, body = hive.post("/v1/workers/r/restart")
    assert code == 202, body
    w = hive.wait_worker("r", "Running", restarts=1)
    assert w["observed"]["pid"] != pid
    assert w["observed"]["restarted_at"] is not None
    pid = w["observed"]["pid"]
    write_atomic(desired / "workers.yaml", worker_yaml("r", "tiny", args={"delay": 0.1}))
    hive.wait_event("worker_replace", obj="Worker/r")
    poll(
        lambda: (hive.worker("r") or {}).get("observed", {}).get("pid") not in (None, pid),
        timeout=15,
        what="a new process after the spec change",
    )
    w = hive.wait_worker("r", "Running")
    assert w["observed"]["restarts"] == 0  # a new spec is a new start, not a restart
    code, body = hive.post("/v1/workers/nobody/restart")
    assert code == 404


# -- waiting for what a worker needs ---------------------------------------------------------
def test_worker_waits_for_its_model_and_runtime(
    setup: Callable[..., tuple[Hive, Path]], tiny_model: Path
) -> None:
    hive, desired = setup(
        workers=worker_yaml("later", "not-yet")
        + "---\n"
        + worker_yaml("nort", "tiny", runtime="no-such-runtime")
        + "---\n"
        + worker_yaml("badargs", "tiny", args={"ctx": 5})
    )
    w = hive.wait_worker("later", "Pending")
    assert "ModelNotReady" in w["status"]["message"]
    w = hive.wait_worker("nort", "Pending", saying="no-such-runtime")
    assert "no-such-runtime" in w["status"]["message"]
    assert "llama-cpp" in w["status"]["message"]
    w = hive.wait_worker("badargs", "Pending", saying="args.ctx")
    assert "args.ctx: runtime scripted does not declare it" in w["status"]["message"]
    (desired / "later-model.yaml").write_text(model_yaml("not-yet", f"file://{tiny_model}"))
    hive.wait_worker("later", "Running")


# -- a model that goes under its workers ---------------------------------------------------
#: Far beyond every deadline below: only the prompt path (inotify on <home>/models, the
#: deletion's own hooks) can pass, not the periodic resync.
LONG_RESYNC = 600.0


def _stopped_for_the_model(hive: Hive, worker: str, pid: int, why: str) -> None:
    """The worker's process is gone, within seconds, and every word said about it names
    the model's going (never "its record changed")."""
    poll(lambda: gone(pid), timeout=10, what=f"worker {worker} (PID {pid}) to be stopped")
    stop = hive.wait_event("worker_model_gone", obj=f"Worker/{worker}")
    assert f"model tiny is gone: {why}" in stop["message"]
    model = hive.wait_event("model_gone", obj="Model/tiny")
    assert model["message"].startswith(f"Model tiny is gone: {why}")
    assert model["data"]["reason"] == why
    kill = next(
        e
        for e in list(hive.events)
        if e["action"] == "worker_proc_del_start" and e.get("object") == f"Worker/{worker}"
    )
    assert f"model tiny is gone: {why}" in kill["message"]
    assert "worker_replace" not in hive.actions(f"Worker/{worker}")
    assert not any("record changed" in e["message"] for e in list(hive.events))


@pytest.mark.parametrize("what", ["directory", "file"])
def test_a_model_removed_by_hand_stops_its_workers_at_once_and_they_come_back(
    setup: Callable[..., tuple[Hive, Path]], what: str
) -> None:
    hive, _ = setup(workers=worker_yaml("s", "tiny"), resync=LONG_RESYNC)
    pid = hive.wait_worker("s", "Running")["observed"]["pid"]
    if what == "directory":
        shutil.rmtree(hive.home / "models" / "tiny")  # rm -rf, by hand
    else:
        (hive.home / "models" / "tiny" / "model.gguf").unlink()  # its directory stays
    _stopped_for_the_model(hive, "s", pid, "removed from disk")
    # The record still wants the model: it is provisioned again, and the worker restarts.
    w = hive.wait_worker("s", "Running", timeout=20)
    assert w["observed"]["pid"] != pid
    assert hive.actions("Model/tiny").count("model_download_complete") == 2


def test_state_absent_stops_the_workers_of_the_model(
    setup: Callable[..., tuple[Hive, Path]], tiny_model: Path
) -> None:
    hive, desired = setup(workers=worker_yaml("s", "tiny"), resync=LONG_RESYNC)
    pid = hive.wait_worker("s", "Running")["observed"]["pid"]
    write_atomic(desired / "model.yaml", model_yaml("tiny", f"file://{tiny_model}", state="absent"))
    _stopped_for_the_model(hive, "s", pid, "state is absent")
    w = hive.wait_worker("s", "Pending", saying="ModelGone")
    assert w["status"]["message"].startswith("ModelGone: model tiny is gone: state is absent")
    hive.wait_phase("tiny", "Absent")
    assert not (hive.home / "models" / "tiny").exists()


def test_hive_delete_refuses_a_model_in_use_and_force_stops_its_workers(
    setup: Callable[..., tuple[Hive, Path]],
) -> None:
    hive, desired = setup(workers=worker_yaml("s", "tiny"), resync=LONG_RESYNC)
    pid = hive.wait_worker("s", "Running")["observed"]["pid"]
    (desired / "model.yaml").unlink()  # no record wants the model; its files stay
    hive.wait_event("manifest_removed", obj="Model/tiny")
    delete = [sys.executable, "-m", "hive", "delete", "model", "tiny", "--url", hive.url]

    refused = subprocess.run(delete, capture_output=True, text=True, cwd=ROOT)
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert refused.stderr.splitlines() == [
        "hive: model tiny is not deleted: worker(s) s use it. Remove or stop them first, or "
        "run `hive delete model tiny --force` to delete it anyway (hive stops them; they "
        "start again once the model is back)"
    ]
    assert (hive.home / "models" / "tiny" / "model.gguf").exists()
    assert not gone(pid)

    forced = subprocess.run([*delete, "--force"], capture_output=True, text=True, cwd=ROOT)
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout == "model tiny deleted; worker(s) s are stopped until it is back\n"
    _stopped_for_the_model(hive, "s", pid, "deleted by API request")
    w = hive.wait_worker("s", "Pending", saying="ModelGone")
    assert w["status"]["message"].startswith(
        "ModelGone: model tiny is gone: deleted by API request"
    )


# -- adoption --------------------------------------------------------------------------------
def test_sigkilled_hive_adopts_its_workers(
    setup: Callable[..., tuple[Hive, Path]], hive_factory: Callable[..., Hive], ports: range
) -> None:
    names = [f"w{i}" for i in range(5)]
    hive, desired = setup(
        stop_workers=False, workers="---\n".join(worker_yaml(n, "tiny") for n in names)
    )
    pids = {n: hive.wait_worker(n, "Running")["observed"]["pid"] for n in names}
    hive.kill()
    assert not any(gone(p) for p in pids.values())  # hive's death leaves them running
    again = hive_factory(
        desired=[desired],
        home=hive.home,
        env=FAST,
        extra_args=["--worker-ports", f"{ports.start}-{ports.stop - 1}", "--gpu-probe", "none"],
    )
    for n in names:
        w = again.wait_worker(n, "Running")
        assert w["observed"]["pid"] == pids[n]
        assert w["observed"]["restarts"] == 0
        assert w["observed"]["adopted"] is True
    assert again.actions().count("worker_adopted") == 5
    assert "worker_spawn_start" not in again.actions()
    write_atomic(desired / "workers.yaml", "---\n".join(worker_yaml(n, "tiny") for n in names[1:]))
    poll(lambda: gone(pids["w0"]), timeout=5, what="w0 to be stopped")
    assert all(not gone(pids[n]) for n in names[1:])


def test_adoption_never_touches_a_stranger_with_a_reused_pid(
    setup: Callable[..., tuple[Hive, Path]], hive_factory: Callable[..., Hive], ports: range
) -> None:
    """A state record whose pid now belongs to another process is stale: cleaned, and the
    stranger is left alone; the worker is started again."""
    hive, desired = setup(stop_workers=False, workers=worker_yaml("x", "tiny"))
    pid = hive.wait_worker("x", "Running")["observed"]["pid"]
    hive.kill()
    os.killpg(pid, signal.SIGKILL)
    poll(lambda: gone(pid), timeout=5, what="the worker to die")
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        state_file = Path(hive.home) / "state" / "workers" / "x.json"
        state = json.loads(state_file.read_text())
        state["pid"] = stranger.pid
        state_file.write_text(json.dumps(state))
        again = hive_factory(
            desired=[desired],
            home=hive.home,
            env=FAST,
            extra_args=["--worker-ports", f"{ports.start}-{ports.stop - 1}", "--gpu-probe", "none"],
        )
        again.wait_event("worker_state_stale", obj="Worker/x")
        w = again.wait_worker("x", "Running")
        assert w["observed"]["pid"] != stranger.pid
        assert stranger.poll() is None  # untouched
    finally:
        stranger.kill()
        stranger.wait()


# -- logs, API and CLI -----------------------------------------------------------------------
def test_logs_tail_follow_and_cli(setup: Callable[..., tuple[Hive, Path]]) -> None:
    hive, _ = setup(workers=worker_yaml("l", "tiny"))
    hive.wait_worker("l", "Running")
    with urllib.request.urlopen(hive.url + "/v1/workers/l/logs?tail=5", timeout=10) as r:
        text = r.read().decode()
    assert "scripted worker: listening on" in text
    out = subprocess.run(
        [sys.executable, "-m", "hive", "logs", "l", "--url", hive.url, "--tail", "2"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout
    assert "listening on" in out
    table = run_hive("get", "workers", "--url", hive.url).stdout
    assert table.splitlines()[0].split()[:3] == ["NAME", "STATUS", "MODEL"]
    assert table.splitlines()[1].split()[:3] == ["l", "Running", "tiny"]
    # follow: the lines so far, then a new one as the worker writes it
    log_path = Path(hive.home) / "logs" / "workers" / "l.log"
    with urllib.request.urlopen(
        hive.url + "/v1/workers/l/logs?tail=1&follow=1", timeout=10
    ) as stream:
        first = _next_data(stream)
        assert "listening on" in first["line"]
        with log_path.open("a") as fh:
            fh.write("a line written later\n")
        assert _next_data(stream)["line"] == "a line written later"
    runtimes = worker_get(hive.url, "/v1/runtimes")
    ids = {r["id"]: r for r in runtimes["items"]}
    assert ids["llama-cpp"]["available"] is True
    assert ids["scripted"]["origin"].endswith("workers/scripted/metadata.json")
    status = worker_get(hive.url, "/v1/status")
    assert status["workers"]["workers_running"] == 1


def _next_data(stream: Any) -> dict[str, Any]:
    for raw in stream:
        line = raw.decode().rstrip("\n")
        if line.startswith("data: "):
            return dict(json.loads(line[6:]))
    raise AssertionError("stream ended")


def test_bad_runtime_entry_is_reported_not_fatal(
    setup: Callable[..., tuple[Hive, Path]], tmp_path: Path
) -> None:
    bad = tmp_path / "home" / "workers" / "broken"
    bad.mkdir(parents=True)
    (bad / "metadata.json").write_text('{"id": "broken", "argv": ["{nope}"]}')
    hive, _ = setup(workers=worker_yaml("fine", "tiny"))
    hive.wait_worker("fine", "Running")
    event = hive.wait_event("runtime_entry_invalid")
    assert "broken/metadata.json" in event["message"]
    assert "{nope}" in event["message"]
    errors = worker_get(hive.url, "/v1/runtimes")["errors"]
    assert errors and "nope" in errors[0]["message"]


@pytest.fixture
def queen() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A loopback stand-in for the Queen that records worker heartbeats."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    beats: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/v1/worker-heartbeat":
                beats.append(json.loads(body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", beats
    finally:
        server.shutdown()


def test_llama_cpp_worker_heartbeats_to_the_queen(
    setup: Callable[..., tuple[Hive, Path]], queen: tuple[str, list[dict[str, Any]]]
) -> None:
    url, beats = queen
    hive, _ = setup(
        env={"HIVE_HEARTBEAT_INTERVAL": "0.2"},
        extra_args=["--queen-url", url],
        workers=worker_yaml("hb", "tiny", runtime="llama-cpp", args={"ctx_size": 128}),
    )
    w = hive.wait_worker("hb", "Running", timeout=60)
    poll(
        lambda: any(b["worker"]["status"] == "ready" for b in beats),
        timeout=20,
        what="a ready beat",
    )
    # rbee's worker contract: {"worker": {id, model_id, device, port, status, ...}, timestamp}
    beat = next(b["worker"] for b in beats if b["worker"]["status"] == "ready")
    assert beat["id"] == w["observed"]["worker_id"]
    assert beat["model_id"] == "tiny"
    assert beat["device"] == "CPU-0"
    assert beat["port"] == w["observed"]["port"]
    assert beat["implementation"] == "hive-llama-cpp"
    assert beats[0]["worker"]["status"] == "starting"


def test_a_queen_found_by_discovery_reaches_the_workers_started_after(
    setup: Callable[..., tuple[Hive, Path]], queen: tuple[str, list[dict[str, Any]]]
) -> None:
    """rbee's usual order: the Queen finds the hive (`/v1/capabilities?queen_url=`), no
    `--queen-url`; a worker started afterwards heartbeats to it."""
    url, beats = queen
    hive, desired = setup(env={"HIVE_HEARTBEAT_INTERVAL": "0.2"})
    hive.wait_phase("tiny", "Available")
    found = worker_get(hive.url, f"/v1/capabilities?queen_url={url}")
    assert found["devices"][-1]["id"] == "CPU-0"
    workers = worker_yaml("hb", "tiny", runtime="llama-cpp", args={"ctx_size": 128})
    (desired / "workers.yaml").write_text(workers)
    hive.wait_worker("hb", "Running", timeout=60)
    poll(lambda: beats, timeout=20, what="a worker heartbeat to the discovered Queen")
    assert beats[0]["worker"]["model_id"] == "tiny"


def test_the_examples_converge_to_a_model_and_a_worker_that_answers(
    tmp_path: Path, tiny_model: Path, hive_factory: Callable[..., Hive], ports: range
) -> None:
    """What `make run` shows: examples/desired-state/ as shipped (only the worker's port
    moved off 9000, which a `make run` on this machine may hold)."""
    desired = tmp_path / "desired-state"
    desired.mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny-llama.gguf").write_bytes(tiny_model.read_bytes())
    examples = ROOT / "examples" / "desired-state"
    for manifest in examples.glob("*.yaml"):
        text = manifest.read_text().replace("port: 9000", f"port: {ports.start}")
        (desired / manifest.name).write_text(text)
    assert f"port: {ports.start}" in (desired / "workers.yaml").read_text()
    hive = hive_factory(desired=[desired], home=tmp_path / "home", env=FAST)
    hive.wait_phase("tiny-llama", "Available")
    w = hive.wait_worker("tiny-llama-cpu", "Running", timeout=60)
    assert w["observed"]["port"] == ports.start
    request = urllib.request.Request(
        f"http://127.0.0.1:{ports.start}/v1/completions",
        data=json.dumps({"prompt": "Hello", "max_tokens": 4, "ignore_eos": True}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        body = json.load(r)
    assert body["model"] == "tiny-llama"
    assert body["usage"]["completion_tokens"] == 4


def test_a_worker_log_over_its_size_is_rotated(setup: Callable[..., tuple[Hive, Path]]) -> None:
    hive, _ = setup(
        env={"HIVE_WORKER_LOG_MAX_BYTES": "4096"}, workers=worker_yaml("chatty", "tiny")
    )
    hive.wait_worker("chatty", "Running")
    log = hive.home / "logs" / "workers" / "chatty.log"
    with log.open("ab") as fh:  # as a worker that talks a lot would
        fh.write(b"x" * 10_000 + b"\n")
    poll(
        lambda: (log.parent / "chatty.log.1").exists() and log.stat().st_size < 4096,
        timeout=15,
        what="the log rotated by its size",
    )
    assert b"x" * 10_000 in (log.parent / "chatty.log.1").read_bytes()
