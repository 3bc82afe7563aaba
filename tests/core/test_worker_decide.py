"""The worker planner, one key at a time (tables): what `plan_worker` decides from a
record, what was seen of the process and the history, and how `record_exit` applies the
restart policy and CrashLoopBackOff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hive.core.worker_decide import (
    Decision,
    Escalate,
    Facts,
    Forget,
    Nothing,
    Placement,
    Replace,
    Report,
    Running,
    Start,
    Stop,
    Stopping,
    Unschedulable,
    Wait,
    plan_worker,
)
from hive.core.worker_history import (
    Ended,
    History,
    Instant,
    Rules,
    record_exit,
    record_spawn_failure,
    record_start,
)
from hive.core.worker_plan import ABSENT, REMOVED, ModelView
from hive.core.workers import spec_hash
from hive.model.devices import GpuInfo
from hive.model.manifests import WorkerSpec
from hive.model.observed import ArtifactStatus, ModelMetadata, ObservedModel
from hive.model.runtimes import ArgSpec, RuntimeEntry
from hive.model.status import WorkerPhase
from hive.model.workers import ExitInfo, WorkerState

SHA = "a" * 64
MB = 1 << 20
WALL = datetime(2026, 1, 1, tzinfo=UTC)
NOW = Instant(monotonic=1000.0, wall=WALL)
RULES = Rules()
ENTRY = RuntimeEntry(
    id="llama",
    argv=("srv", "{ctx_size}"),
    args={"ctx_size": ArgSpec(type="int", default=0, min=0)},
)
GPU = GpuInfo(index=0, uuid="GPU-x", name="fake", vram_total_bytes=8000 * MB, vram_free_bytes=0)


def spec(**changes: Any) -> WorkerSpec:
    return WorkerSpec.model_validate({"model": "tiny", "runtime": "llama", **changes})


def observed(status: ArtifactStatus = ArtifactStatus.AVAILABLE) -> ObservedModel:
    meta = ModelMetadata(
        id="tiny",
        name="tiny",
        path=Path("/home/models/tiny/model.gguf"),
        size=MB,
        status=status,
        added_at=WALL,
        sha256=SHA,
        context_length=256,
        block_count=2,
        embedding_length=64,
        head_count=4,
        head_count_kv=2,
    )
    return ObservedModel(name="tiny", directory=Path("/m/tiny"), metadata=meta, file_size=MB)


THERE = ModelView(name="tiny", observed=observed())


def state(of: WorkerSpec | None = None) -> WorkerState:
    return WorkerState(
        name="w",
        worker_id="w-1234abcd",
        instance="i",
        pid=4242,
        create_time=1.0,
        host="127.0.0.1",
        port=9000,
        argv=("srv",),
        runtime="llama",
        worker_type="cpu",
        model="tiny",
        model_path=Path("/home/models/tiny/model.gguf"),
        model_sha256=SHA,
        device="CPU-0",
        spec_hash=spec_hash(of or spec(), model_sha256=SHA),
        started_at=WALL,
        log_path=Path("/home/logs/workers/w.log"),
    )


def running(**changes: Any) -> Running:
    return Running(**{"state": state(), "ready": True, "start_timeout": 120.0, **changes})


def facts(**changes: Any) -> Facts:
    values: dict[str, Any] = {
        "model": THERE,
        "runtimes": {"llama": ENTRY},
        "boot": None,
        "placement": Placement(ram_available_bytes=64_000 * MB),
        "generation": 1,
    }
    return Facts(**{**values, **changes})


def exit_(code: int | None = None, sig: int | None = None) -> ExitInfo:
    return ExitInfo(at=WALL, code=code, signal=sig)


CRASHED = History(
    failures_in_a_row=2,
    next_start=1005.0,
    last_exit=exit_(1).model_copy(update={"reason": "Exited"}),
    restart_next=True,
)


# -- plan_worker ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("record", "seen", "history", "expected"),
    [
        pytest.param(spec(), facts(), History(), Start, id="no-process-starts"),
        pytest.param(
            spec(),
            facts(),
            History(restart_next=True, restarts=2),
            Start,
            id="restart-after-a-crash",
        ),
        pytest.param(
            spec(),
            facts(),
            CRASHED,
            Wait(
                until=1005.0,
                report=Report(
                    phase=WorkerPhase.DEAD,
                    reason="CrashLoopBackOff",
                    message="back-off 20s restarting failed worker (exit code 1); next "
                    "restart in 5.0s",
                    degraded=(
                        "CrashLoopBackOff",
                        "back-off 20s restarting failed worker (exit code 1); next restart in 5.0s",
                    ),
                ),
            ),
            id="crash-loop-back-off-waits",
        ),
        pytest.param(
            spec(),
            facts(),
            CRASHED.model_copy(update={"next_start": 1000.0}),
            Start,
            id="back-off-over-starts",
        ),
        pytest.param(
            spec(state="stopped"),
            facts(),
            History(),
            Nothing(
                report=Report(
                    phase=WorkerPhase.DEAD,
                    reason="Stopped",
                    message="state: stopped (set state: running to start it)",
                )
            ),
            id="stopped-stays-dead",
        ),
        pytest.param(
            spec(restartPolicy="Never"),
            facts(generation=3),
            History(halted_generation=3, last_exit=exit_(1)),
            Nothing(
                report=Report(
                    phase=WorkerPhase.DEAD,
                    reason="Failed",
                    message="exit code 1; restartPolicy Never does not restart it (change the "
                    "record to start it again)",
                    degraded=("Failed", "exit code 1"),
                )
            ),
            id="halted-generation-failed",
        ),
        pytest.param(
            spec(restartPolicy="OnFailure"),
            facts(generation=3),
            History(halted_generation=3, last_exit=exit_(0)),
            Nothing(
                report=Report(
                    phase=WorkerPhase.DEAD,
                    reason="Completed",
                    message="exit code 0; restartPolicy OnFailure does not restart it (change "
                    "the record to start it again)",
                )
            ),
            id="halted-generation-completed",
        ),
        pytest.param(
            spec(restartPolicy="Never"),
            facts(generation=4),
            History(halted_generation=3, last_exit=exit_(1)),
            Start,
            id="halted-then-record-changed-starts",
        ),
        pytest.param(None, facts(model=None), History(), Forget(), id="no-record-forgotten"),
        pytest.param(
            None,
            facts(model=None, sources_synced=False),
            History(),
            Nothing(),
            id="no-record-sources-not-synced-waits",
        ),
    ],
)
def test_a_worker_without_a_process(
    record: WorkerSpec | None, seen: Facts, history: History, expected: Decision | type
) -> None:
    decision = plan_worker(record, seen, history, NOW, rules=RULES)
    if isinstance(expected, type):
        assert isinstance(decision, expected)
        assert isinstance(decision, Start)
        assert decision.restarting == history.restart_next
        assert decision.launch.entry.id == "llama"
    else:
        assert decision == expected


@pytest.mark.parametrize(
    ("record", "seen", "expected"),
    [
        pytest.param(
            spec(),
            facts(process=running()),
            Nothing(
                report=Report(
                    phase=WorkerPhase.RUNNING,
                    ready=True,
                    reason="Healthy",
                    message="serving tiny on http://127.0.0.1:9000",
                )
            ),
            id="healthy",
        ),
        pytest.param(
            spec(),
            facts(process=running(health_failures=2, health_error="timed out")),
            Nothing(
                report=Report(
                    phase=WorkerPhase.RUNNING,
                    ready=True,
                    reason="Healthy",
                    message="serving tiny on http://127.0.0.1:9000",
                    degraded=("HealthCheckFailing", "2 failed: timed out"),
                )
            ),
            id="health-failing-below-threshold",
        ),
        pytest.param(
            spec(),
            facts(process=running(ready=False)),
            Nothing(
                report=Report(
                    phase=WorkerPhase.STARTING,
                    progressing=True,
                    reason="Starting",
                    message="waiting for 127.0.0.1:9000 to answer its health check",
                )
            ),
            id="starting",
        ),
        pytest.param(
            spec(args={"ctx_size": 128}),
            facts(process=running()),
            Replace(message="its record changed (model, runtime, device, port or args)"),
            id="spec-changed-replace",
        ),
        pytest.param(
            spec(state="stopped"),
            facts(process=running()),
            Stop(reason="Stopped", message="state: stopped"),
            id="state-stopped",
        ),
        pytest.param(
            spec(),
            facts(process=running(), model=ModelView(name="tiny", observed=None, gone=REMOVED)),
            Stop(reason="ModelGone", message="model tiny is gone: removed from disk"),
            id="model-gone",
        ),
        pytest.param(
            spec(),
            facts(
                process=running(),
                model=ModelView(name="tiny", observed=observed(), gone=ABSENT, why=ABSENT),
            ),
            Stop(reason="ModelGone", message="model tiny is gone: state is absent"),
            id="model-absent",
        ),
        pytest.param(
            spec(),
            facts(process=running(restart_requested=True)),
            Stop(reason="RestartRequested", message="a restart was requested"),
            id="restart-requested",
        ),
        pytest.param(
            spec(),
            facts(process=running(unhealthy=True, health_failures=3, health_error="HTTP 503")),
            Stop(reason="Unhealthy", message="3 health checks failed in a row (HTTP 503)"),
            id="unhealthy",
        ),
        pytest.param(
            spec(),
            facts(process=running(ready=False, start_timed_out=True, health_error="refused")),
            Stop(
                reason="StartTimeout",
                message="no healthy answer within 120s of starting (refused)",
            ),
            id="start-timeout",
        ),
        pytest.param(
            None,
            facts(process=running(), model=None, sources_synced=False),
            Nothing(
                report=Report(
                    phase=WorkerPhase.RUNNING,
                    ready=True,
                    reason="WaitingForSources",
                    message="adopted; kept until every source has synced",
                )
            ),
            id="adopted-sources-not-synced",
        ),
        pytest.param(
            None,
            facts(process=running(), model=None),
            Stop(reason="Removed", message="no source declares it any more"),
            id="adopted-no-record-removed",
        ),
        pytest.param(
            spec(),
            facts(process=running(stop=Stopping(reason="Stopped", message="", deadline=1002.5))),
            Wait(until=1002.5),
            id="stopping-waits-for-its-deadline",
        ),
        pytest.param(
            spec(),
            facts(process=running(stop=Stopping(reason="Stopped", message="", deadline=1000.0))),
            Escalate(killed=False),
            id="stop-deadline-passed-sigkill",
        ),
        pytest.param(
            spec(),
            facts(
                process=running(
                    stop=Stopping(reason="Stopped", message="", deadline=999.0, killed=True)
                )
            ),
            Escalate(killed=True),
            id="still-there-after-sigkill",
        ),
    ],
)
def test_a_worker_with_a_process(
    record: WorkerSpec | None, seen: Facts, expected: Decision
) -> None:
    assert plan_worker(record, seen, History(), NOW, rules=RULES) == expected


def pending(
    reason: str, message: str, *, narrate: bool, retry: float | None, resources: bool = False
) -> tuple[str, str, bool, float | None, bool]:
    return reason, message, narrate, retry, resources


@pytest.mark.parametrize(
    ("record", "seen", "expected"),
    [
        pytest.param(
            spec(),
            facts(placement=Placement(ram_available_bytes=10 * MB)),
            pending(
                "Unschedulable",
                "Unschedulable: InsufficientMemory: needs 66 MiB",
                narrate=True,
                retry=15.0,
                resources=True,
            ),
            id="does-not-fit-ram",
        ),
        pytest.param(
            spec(device="GPU-0"),
            facts(placement=Placement(gpus=(GPU,), ram_available_bytes=64_000 * MB)),
            pending(
                "Unschedulable",
                "Unschedulable: InsufficientVRAM: needs 66 MiB",
                narrate=True,
                retry=15.0,
                resources=True,
            ),
            id="does-not-fit-vram",
        ),
        pytest.param(
            spec(runtime="vllm"),
            facts(),
            pending(
                "UnknownRuntime",
                "UnknownRuntime: runtime 'vllm' is not in the worker catalog (known: llama)",
                narrate=True,
                retry=15.0,
            ),
            id="unknown-runtime",
        ),
        pytest.param(
            spec(args={"ctx_size": -1}),
            facts(),
            pending(
                "InvalidArgs",
                "args.ctx_size: -1 ",
                narrate=False,
                retry=None,
            ),
            id="invalid-args-wait-for-the-record",
        ),
        pytest.param(
            spec(),
            facts(model=ModelView(name="tiny", observed=observed(ArtifactStatus.DOWNLOADING))),
            pending(
                "ModelNotReady",
                "ModelNotReady: model tiny is Downloading; the worker starts once it is Available",
                narrate=False,
                retry=None,
            ),
            id="model-not-ready-waits-unsaid",
        ),
        pytest.param(
            spec(),
            facts(model=ModelView(name="tiny", observed=None, gone=REMOVED)),
            pending(
                "ModelGone",
                "ModelGone: model tiny is gone: removed from disk; the worker starts again",
                narrate=False,
                retry=None,
            ),
            id="model-gone-waits-unsaid",
        ),
    ],
)
def test_a_worker_that_cannot_start(
    record: WorkerSpec, seen: Facts, expected: tuple[str, str, bool, float | None, bool]
) -> None:
    reason, message, narrate, retry, resources = expected
    decision = plan_worker(record, seen, History(), NOW, rules=RULES)
    assert isinstance(decision, Unschedulable)
    assert decision.report.phase == WorkerPhase.PENDING
    assert decision.report.reason == reason
    assert decision.report.message.startswith(message)
    assert decision.report.degraded is not None
    assert (decision.narrate, decision.retry_after, decision.for_resources) == (
        narrate,
        retry,
        resources,
    )


def test_invalid_args_say_to_fix_the_record() -> None:
    decision = plan_worker(spec(args={"ctx_size": -1}), facts(), History(), NOW, rules=RULES)
    assert isinstance(decision, Unschedulable)
    assert decision.report.message.endswith("(fix the record; hive tries again when it changes)")


# -- record_exit ---------------------------------------------------------------------------
def ended(code: int | None = 1, sig: int | None = None, **changes: Any) -> Ended:
    return Ended(exit=exit_(code, sig), **changes)


def test_crash_loop_intervals_double_to_the_cap() -> None:
    history, delays, now = History(), [], NOW
    for _ in range(8):
        history, outcome = record_exit(
            history, ended(1), policy="Always", generation=1, now=now, rules=RULES
        )
        assert outcome.restart_in is not None
        delays.append(outcome.restart_in)
        assert history.next_start == now.monotonic + outcome.restart_in
        assert history.next_start_at == now.wall + timedelta(seconds=outcome.restart_in)
        now = Instant(monotonic=history.next_start, wall=history.next_start_at)
    assert delays == [10, 20, 40, 80, 160, 300, 300, 300]
    assert history.failures_in_a_row == 8
    assert history.restart_next


def test_crash_loop_intervals_follow_the_settings() -> None:
    rules = Rules(crashloop_base=0.5, crashloop_cap=3.0)
    history, delays = History(), []
    for _ in range(5):
        history, outcome = record_exit(
            history, ended(1), policy="Always", generation=1, now=NOW, rules=rules
        )
        delays.append(outcome.restart_in)
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize(
    ("policy", "code", "sig", "restart_in", "halted"),
    [
        ("Always", 0, None, 10.0, None),
        ("Always", 1, None, 10.0, None),
        ("Always", None, 9, 10.0, None),
        ("OnFailure", 0, None, None, 7),
        ("OnFailure", 1, None, 10.0, None),
        ("OnFailure", None, 9, 10.0, None),
        ("Never", 0, None, None, 7),
        ("Never", 1, None, None, 7),
        ("Never", None, 9, None, 7),
    ],
)
def test_restart_policies(
    policy: str, code: int | None, sig: int | None, restart_in: float | None, halted: int | None
) -> None:
    history, outcome = record_exit(
        History(), ended(code, sig), policy=policy, generation=7, now=NOW, rules=RULES
    )
    assert not outcome.asked
    assert outcome.restart_in == restart_in
    assert history.halted_generation == halted
    assert history.failures_in_a_row == (1 if restart_in else 0)
    assert history.last_exit == exit_(code, sig)
    assert history.restart_next


@pytest.mark.parametrize(
    ("healthy_for", "delay"), [(599.0, 80.0), (600.0, 10.0)], ids=["599s", "600s"]
)
def test_a_long_healthy_run_starts_a_new_streak(healthy_for: float, delay: float) -> None:
    history = History(failures_in_a_row=3)
    end = ended(None, 9, ready_at=NOW.monotonic - healthy_for)
    history, outcome = record_exit(history, end, policy="Always", generation=1, now=NOW)
    assert outcome.restart_in == delay


@pytest.mark.parametrize(
    ("reason", "restart_next"),
    [
        ("Stopped", False),
        ("Removed", False),
        ("ModelGone", False),
        ("Shutdown", False),
        ("RestartRequested", True),
    ],
)
def test_an_asked_end_is_no_failure(reason: str, restart_next: bool) -> None:
    before = History(restarts=4, failures_in_a_row=2, next_start=900.0, next_start_at=WALL)
    history, outcome = record_exit(
        before,
        ended(None, 15, stop_reason=reason, stop_message="why"),
        policy="Always",
        generation=1,
        now=NOW,
    )
    assert outcome.asked
    assert outcome.restart_in is None
    assert outcome.exit.reason == reason
    assert outcome.exit.message == "why"
    assert (history.restarts, history.failures_in_a_row) == (4, 2)
    assert (history.next_start, history.next_start_at) == (0.0, None)
    assert history.restart_next == restart_next


def test_a_replace_starts_the_counts_over() -> None:
    before = History(restarts=4, failures_in_a_row=2, next_start=900.0)
    history, outcome = record_exit(
        before, ended(None, 15, stop_reason="Replaced"), policy="Always", generation=2, now=NOW
    )
    assert outcome.asked
    assert (history.restarts, history.failures_in_a_row, history.next_start) == (0, 0, 0.0)
    assert not history.restart_next


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        ({"unhealthy": True}, "Unhealthy"),
        ({"start_timed_out": True}, "StartTimeout"),
        ({}, "Exited"),
        ({"unhealthy": True, "stop_reason": "Unhealthy"}, "Unhealthy"),
    ],
)
def test_an_unasked_end_says_why_and_backs_off(flags: dict[str, Any], reason: str) -> None:
    _, outcome = record_exit(
        History(), ended(None, 15, **flags), policy="Always", generation=1, now=NOW
    )
    assert not outcome.asked
    assert outcome.exit.reason == reason
    assert outcome.restart_in == 10.0


def test_an_end_without_a_record_is_kept_but_not_restarted() -> None:
    history, outcome = record_exit(History(), ended(1), policy=None, generation=0, now=NOW)
    assert not outcome.asked
    assert outcome.restart_in is None
    assert history.failures_in_a_row == 0
    assert history.last_exit == exit_(1)
    assert history.halted_generation is None


def test_a_refused_spawn_counts_in_the_streak() -> None:
    history, delay = record_spawn_failure(
        History(failures_in_a_row=1), reason="SpawnFailed", message="no such file", now=NOW
    )
    assert delay == 20.0
    assert history.next_start == NOW.monotonic + 20.0
    assert history.last_exit == ExitInfo(at=WALL, reason="SpawnFailed", message="no such file")
    decision = plan_worker(spec(), facts(), history, NOW, rules=RULES)
    assert isinstance(decision, Wait)
    assert decision.report is not None
    assert "(exit code" not in decision.report.message


def test_a_start_counts_restarts_only() -> None:
    assert record_start(History(restarts=1), restarting=False) == History(restarts=1)
    assert record_start(History(restarts=1, restart_next=True), restarting=True) == History(
        restarts=2
    )
