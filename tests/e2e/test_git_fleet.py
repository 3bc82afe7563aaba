"""Ten hives, one repository: ten real `hive serve` subprocesses on loopback (separate homes
and ports, `--label gpu=a` on three), each with a git source on the same bare repository.
A commit adding a Worker whose spec.hiveSelector picks gpu=a runs it (a real scripted
worker process) on exactly those three; the other seven count it as not selected; a commit
removing it stops it on all three; every hive shows the same applied revision."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from tests.conftest import (
    Hive,
    install_scripted_runtime,
    model_yaml,
    poll,
    worker_processes,
    worker_yaml,
)
from tests.sources.test_git import Repo

TOKEN = "ten-hives-test-token-0123"
SOURCE = "git:fleet"
HIVES = 10
GPU_A = (0, 4, 8)  # the hives labelled gpu=a
FAST = {"HIVE_HEALTH_START_INTERVAL": "0.05", "HIVE_HEALTH_INTERVAL": "0.5"}
T = TypeVar("T")


def for_gpu_a(text: str) -> str:
    return text + "  hiveSelector:\n    matchLabels: {gpu: a}\n"


def fleet_source(hive: Hive) -> dict[str, Any]:
    (source,) = [s for s in hive.get("/v1/status")["sources"] if s["name"] == SOURCE]
    found: dict[str, Any] = source
    return found


def ready_of(hive: Hive) -> str | None:
    """The message of the fleet source's Ready condition once it is True."""
    (ready,) = [c for c in fleet_source(hive)["conditions"] if c["type"] == "Ready"]
    return str(ready["message"]) if ready["status"] == "True" else None


def on_all(hives: list[Hive], fn: Callable[[Hive], T]) -> list[T]:
    """`fn` on every hive at once (one thread each), the answers in the hives' order."""
    with ThreadPoolExecutor(len(hives)) as pool:
        return list(pool.map(fn, hives))


def sync(hive: Hive) -> Any:
    code, body = hive.post(f"/v1/sources/{SOURCE}/sync")
    assert code == 200, body
    return body


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def fleet(tmp_path: Path, worker_ports: range) -> Iterator[tuple[Repo, list[Hive]]]:
    """The repository and ten hives on it, started together; all stopped at the end, even
    when the test fails (a hive that did not start is stopped too)."""
    repo = Repo(tmp_path / "repo")
    hives: list[Hive] = []
    for i in range(HIVES):
        home = tmp_path / f"home-{i}"
        install_scripted_runtime(home)
        port = worker_ports.start + i
        labels = ["--label", "gpu=a"] if i in GPU_A else ["--label", "gpu=b"]
        hives.append(
            Hive(
                home=home,
                desired=[],
                log=tmp_path / f"hive-{i}.log",
                env={"HIVE_TOKEN": TOKEN, **FAST},
                extra_args=[
                    *("--gpu-probe", "none", "--worker-ports", f"{port}-{port}", *labels),
                    *("--git", repo.url, "--git-ref", "main", "--git-name", "fleet"),
                    *("--git-interval", "3600"),  # only the test's syncs fetch
                ],
            )
        )
    try:
        on_all(hives, Hive.start)
        yield repo, hives
    finally:
        on_all(hives, Hive.stop)  # SIGTERM, then SIGKILL; each stops its workers


def test_ten_hives_apply_a_selected_worker_on_exactly_the_three_it_selects(
    fleet: tuple[Repo, list[Hive]], tiny_model: Path
) -> None:
    repo, hives = fleet
    began = time.time() - 1.0
    selected = [hives[i] for i in GPU_A]
    others = [h for i, h in enumerate(hives) if i not in GPU_A]

    # A Model for every hive (no selector) and a Worker for gpu=a only.
    added = repo.commit(
        {
            "models/tiny.yaml": model_yaml("tiny", f"file:{tiny_model}"),
            "workers/chat.yaml": for_gpu_a(worker_yaml("chat", "tiny", args={"mode": "serve"})),
        },
        "tiny everywhere, chat on gpu=a",
    )
    revision = f"main@sha1:{added}"
    for answer in on_all(hives, sync):
        assert answer["outcome"] == "applied", answer
        assert answer["lastAppliedRevision"] == revision

    running = on_all(selected, lambda h: h.wait_worker("chat", "Running", timeout=30))
    pids = [w["observed"]["pid"] for w in running]
    assert len(set(pids)) == 3 and not any(gone(p) for p in pids)
    for hive in others:
        hive.wait_phase("tiny", "Available")
        assert hive.worker("chat") is None
        source = fleet_source(hive)
        assert (source["records"], source["not_selected"]) == (1, 1)
        assert source["not_selected_keys"] == ["Worker/chat"]
    told = poll(
        lambda: [e for e in others[0].events if e.get("action") == "source_synced"],
        what="source_synced",
    )
    assert (
        f"revision {revision} applied: 1 record(s) (and 1 for other hives)" in told[-1]["message"]
    )
    for hive in selected:
        source = fleet_source(hive)
        assert (source["records"], source["not_selected"]) == (2, 0)
    # Exactly three worker processes were started in this test, the three hives'.
    assert sorted(p.pid for p in worker_processes(since=began)) == sorted(pids)
    assert {fleet_source(h)["git"]["lastAppliedRevision"] for h in hives} == {revision}
    # Ready (health-gated) on every hive, for that revision and its objects here.
    for hive, objects in [(h, 2) for h in selected] + [(h, 1) for h in others]:
        ready = poll(partial(ready_of, hive), timeout=20, what="the source Ready")
        assert ready == f"revision {revision}: {objects} object(s) converged"

    # Removing the Worker: stopped on all three, the Model stays everywhere.
    removed = repo.commit({"workers/chat.yaml": None}, "chat removed")
    revision = f"main@sha1:{removed}"
    for answer in on_all(hives, sync):
        assert answer["lastAppliedRevision"] == revision, answer
    poll(lambda: all(gone(p) for p in pids), timeout=20, what="the three workers to be gone")
    poll(
        lambda: all(h.worker("chat") is None for h in selected),
        timeout=20,
        what="Worker/chat gone from the three hives",
    )
    statuses = on_all(hives, fleet_source)
    assert {s["git"]["lastAppliedRevision"] for s in statuses} == {revision}
    assert {s["git"]["lastAttemptedRevision"] for s in statuses} == {revision}
    assert all((s["records"], s["not_selected"], s["errors"]) == (1, 0, []) for s in statuses)
    assert all(h.phase("tiny") == "Available" for h in hives)
