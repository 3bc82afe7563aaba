"""The worker planner: what `hive plan` says hive would do with each Worker, from the
records, the live workers, the catalog, the runtimes and the devices (a table)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hive.core.worker_decide import plan_workers
from hive.core.worker_plan import (
    ABSENT,
    BY_API,
    REMOVED,
    Launch,
    ModelView,
    Why,
    fit,
    start_check,
    stop_reason,
)
from hive.core.workers import spec_hash
from hive.model.actions import describe_worker
from hive.model.devices import GpuInfo
from hive.model.manifests import WorkerSpec
from hive.model.observed import ArtifactStatus, ModelMetadata, ObservedModel
from hive.model.runtimes import ArgSpec, RuntimeEntry
from hive.model.workers import WorkerState

SHA = "a" * 64
MB = 1 << 20
ENTRY = RuntimeEntry(
    id="llama",
    argv=("srv", "{ctx_size}", "{n_gpu_layers}"),
    args={
        "ctx_size": ArgSpec(type="int", default=0, min=0),
        "n_gpu_layers": ArgSpec(type="int", default=999, min=0, max=999, cpu_value=0),
    },
)
MISSING = ENTRY.model_copy(
    update={"id": "gone", "available": False, "unavailable_reason": "no gone on PATH"}
)
RUNTIMES = {"llama": ENTRY, "gone": MISSING}
GPU = GpuInfo(index=0, uuid="GPU-x", name="fake", vram_total_bytes=8000 * MB, vram_free_bytes=0)


def spec(**changes: Any) -> WorkerSpec:
    return WorkerSpec.model_validate({"model": "tiny", "runtime": "llama", **changes})


def model(status: ArtifactStatus = ArtifactStatus.AVAILABLE, size: int = MB) -> ObservedModel:
    meta = ModelMetadata(
        id="tiny",
        name="tiny",
        path=Path("/home/models/tiny/model.gguf"),
        size=size,
        status=status,
        added_at=datetime(2026, 1, 1, tzinfo=UTC),
        sha256=SHA,
        context_length=256,
        block_count=2,
        embedding_length=64,
        head_count=4,
        head_count_kv=2,
    )
    return ObservedModel(
        name="tiny", directory=Path("/home/models/tiny"), metadata=meta, file_size=size
    )


def state(name: str = "w", *, of: WorkerSpec | None = None) -> WorkerState:
    return WorkerState(
        name=name,
        worker_id=f"{name}-1234abcd",
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
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        log_path=Path("/home/logs/workers/w.log"),
    )


RAM = 64_000 * MB


@pytest.mark.parametrize(
    ("desired", "running", "models", "provisioning", "ram", "lines"),
    [
        pytest.param({}, {}, {}, set(), RAM, [], id="nothing"),
        pytest.param(
            {"w": spec()},
            {"w": state()},
            {"tiny": model()},
            set(),
            RAM,
            [],
            id="running-as-declared",
        ),
        pytest.param(
            {"w": spec()},
            {},
            {"tiny": model()},
            set(),
            RAM,
            ["start Worker/w (llama serving tiny on CPU-0: no process runs it)"],
            id="stopped-worker-is-started",
        ),
        pytest.param(
            {"w": spec(args={"ctx_size": 512})},
            {},
            {"tiny": model()},
            set(),
            RAM,
            [
                "start Worker/w (llama serving tiny on CPU-0: no process runs it; args "
                "adjusted: ctx_size: asked 512, using 256 (the model was trained with a "
                "context of 256 tokens))"
            ],
            id="start-says-the-adjusted-args",
        ),
        pytest.param(
            {"w": spec()},
            {},
            {},
            {"tiny"},
            RAM,
            ["start Worker/w (llama serving tiny on CPU-0, once Model/tiny is provisioned)"],
            id="start-after-its-model",
        ),
        pytest.param(
            {},
            {"w": state()},
            {"tiny": model()},
            set(),
            RAM,
            ["stop Worker/w, PID 4242 (no source declares it any more)"],
            id="no-record-stops",
        ),
        pytest.param(
            {"w": spec(state="stopped")},
            {"w": state()},
            {"tiny": model()},
            set(),
            RAM,
            ["stop Worker/w, PID 4242 (state: stopped)"],
            id="state-stopped-stops",
        ),
        pytest.param(
            {"w": spec(state="stopped")}, {}, {"tiny": model()}, set(), RAM, [], id="stays-stopped"
        ),
        pytest.param(
            {"w": spec(args={"ctx_size": 128})},
            {"w": state()},
            {"tiny": model()},
            set(),
            RAM,
            [
                "replace Worker/w, PID 4242 (its record changed (model, runtime, device, "
                "port or args))"
            ],
            id="changed-args-replace",
        ),
        pytest.param(
            {"w": spec(device="GPU-0")},
            {},
            {"tiny": model()},
            set(),
            RAM,
            ["cannot start Worker/w: Unschedulable: InsufficientVRAM: needs 66 MiB"],
            id="no-vram",
        ),
        pytest.param(
            {"w": spec(device="GPU-3")},
            {},
            {"tiny": model()},
            set(),
            RAM,
            ["cannot start Worker/w: Unschedulable: NoSuchDevice: GPU-3 does not exist"],
            id="no-such-gpu",
        ),
        pytest.param(
            {"w": spec()},
            {},
            {"tiny": model()},
            set(),
            10 * MB,
            ["cannot start Worker/w: Unschedulable: InsufficientMemory: needs 66 MiB"],
            id="no-ram",
        ),
        pytest.param(
            {"w": spec(runtime="nope")},
            {},
            {"tiny": model()},
            set(),
            RAM,
            [
                "cannot start Worker/w: UnknownRuntime: runtime 'nope' is not in the worker "
                "catalog (known: llama, gone)"
            ],
            id="unknown-runtime",
        ),
        pytest.param(
            {"w": spec(runtime="gone")},
            {},
            {"tiny": model()},
            set(),
            RAM,
            ["cannot start Worker/w: RuntimeUnavailable: runtime gone: no gone on PATH"],
            id="runtime-unavailable",
        ),
        pytest.param(
            {"w": spec(args={"threads": 2})},
            {},
            {"tiny": model()},
            set(),
            RAM,
            ["cannot start Worker/w: InvalidArgs: args.threads: runtime llama does not declare"],
            id="invalid-args",
        ),
        pytest.param(
            {"w": spec()},
            {},
            {},
            set(),
            RAM,
            [
                "cannot start Worker/w: ModelNotReady: model tiny is not on disk; the worker "
                "starts once it is Available (no record provisions it)"
            ],
            id="model-nowhere",
        ),
        pytest.param(
            {"w": spec()},
            {},
            {"tiny": model(ArtifactStatus.FAILED)},
            set(),
            RAM,
            ["cannot start Worker/w: ModelNotReady: model tiny is Failed; the worker starts"],
            id="model-failed",
        ),
    ],
)
def test_plan_workers(
    desired: dict[str, WorkerSpec],
    running: dict[str, WorkerState],
    models: dict[str, ObservedModel],
    provisioning: set[str],
    ram: int,
    lines: list[str],
) -> None:
    actions = plan_workers(
        desired,
        running,
        models=models,
        provisioning=provisioning,
        runtimes=RUNTIMES,
        gpus=[GPU],
        ram_available_bytes=ram,
    )
    described = [describe_worker(a) for a in actions]
    assert len(described) == len(lines), described
    for text, start in zip(described, lines, strict=True):
        assert text.startswith(start), text


def test_workers_are_planned_in_name_order_with_their_keys() -> None:
    actions = plan_workers(
        {"b": spec(), "a": spec()},
        {"c": state("c")},
        models={"tiny": model()},
        provisioning=set(),
        runtimes=RUNTIMES,
        gpus=[],
        ram_available_bytes=RAM,
    )
    assert [str(a.key) for a in actions] == ["Worker/a", "Worker/b", "Worker/c"]


def gone_file() -> ObservedModel:
    """The model's directory is there, its file is not (removed by hand)."""
    return model().model_copy(update={"file_size": None})


@pytest.mark.parametrize(
    ("models", "absent", "lines"),
    [
        pytest.param(
            {},
            set(),
            ["stop Worker/w, PID 4242 (model tiny is gone: removed from disk)"],
            id="model-directory-removed",
        ),
        pytest.param(
            {"tiny": gone_file()},
            set(),
            ["stop Worker/w, PID 4242 (model tiny is gone: removed from disk)"],
            id="model-file-removed",
        ),
        pytest.param(
            {"tiny": model()},
            {"tiny"},
            ["stop Worker/w, PID 4242 (model tiny is gone: state is absent)"],
            id="model-state-absent",
        ),
    ],
)
def test_a_worker_whose_model_went_is_stopped_for_that_reason(
    models: dict[str, ObservedModel], absent: set[str], lines: list[str]
) -> None:
    """The supervisor stops these (ModelGone); the plan said "replace … its record
    changed" for a removed model, and nothing at all for `state: absent`."""
    actions = plan_workers(
        {"w": spec()},
        {"w": state()},
        models=models,
        provisioning={"tiny"},
        runtimes=RUNTIMES,
        gpus=[],
        ram_available_bytes=RAM,
        absent=absent,
    )
    assert [describe_worker(a) for a in actions] == lines


def test_a_stopped_worker_of_an_absent_model_cannot_start() -> None:
    actions = plan_workers(
        {"w": spec()},
        {},
        models={"tiny": model()},
        provisioning=set(),
        runtimes=RUNTIMES,
        gpus=[],
        ram_available_bytes=RAM,
        absent={"tiny"},
    )
    assert [describe_worker(a) for a in actions] == [
        "cannot start Worker/w: ModelGone: model tiny is gone: state is absent; the worker "
        "starts again once the model is back"
    ]


# -- the rules themselves, as the supervisor asks them ---------------------------------------
def view(observed: ObservedModel | None = None, **changes: Any) -> ModelView:
    return ModelView(name="tiny", observed=observed, **changes)


@pytest.mark.parametrize(
    ("record", "model_view", "flags", "expected"),
    [
        pytest.param(spec(), view(model()), {}, None, id="as-declared"),
        pytest.param(None, None, {}, ("Removed", "no source declares it any more"), id="removed"),
        pytest.param(None, None, {"sources_synced": False}, None, id="adopted-before-sync"),
        pytest.param(
            spec(state="stopped"), view(model()), {}, ("Stopped", "state: stopped"), id="stopped"
        ),
        pytest.param(
            spec(),
            view(None),
            {},
            ("ModelGone", "model tiny is gone: removed from disk"),
            id="model-not-on-disk",
        ),
        pytest.param(
            spec(),
            view(gone_file(), gone=BY_API, why=BY_API),
            {},
            ("ModelGone", "model tiny is gone: deleted by API request"),
            id="deleted-by-api",
        ),
        pytest.param(
            spec(),
            view(model(), gone=ABSENT, why=ABSENT),
            {},
            ("ModelGone", "model tiny is gone: state is absent"),
            id="absent-before-the-files-go",
        ),
        pytest.param(
            spec(args={"ctx_size": 128}),
            view(model()),
            {},
            ("Replaced", "its record changed (model, runtime, device, port or args)"),
            id="replaced",
        ),
        pytest.param(
            spec(),
            view(model()),
            {"restart_requested": True},
            ("RestartRequested", "a restart was requested"),
            id="restart",
        ),
        pytest.param(
            spec(), view(model()), {"unhealthy": "3 failed"}, ("Unhealthy", "3 failed"), id="sick"
        ),
        pytest.param(
            spec(),
            view(model()),
            {"start_timed_out": "no answer"},
            ("StartTimeout", "no answer"),
            id="start-timeout",
        ),
        pytest.param(
            spec(state="stopped"),
            view(None),
            {"unhealthy": "x"},
            ("Stopped", "state: stopped"),
            id="the-record-first",
        ),
    ],
)
def test_stop_reason(
    record: WorkerSpec | None,
    model_view: ModelView | None,
    flags: dict[str, Any],
    expected: tuple[str, str] | None,
) -> None:
    why = stop_reason(record, running=state(), model=model_view, **flags)
    assert ((why.reason, why.message) if why is not None else None) == expected


@pytest.mark.parametrize(
    ("record", "model_view", "reason", "message"),
    [
        pytest.param(
            spec(runtime="nope"),
            view(model()),
            "UnknownRuntime",
            "runtime 'nope' is not in the worker catalog (known: llama, gone; add one under "
            "/home/workers)",
            id="unknown-runtime",
        ),
        pytest.param(
            spec(runtime="gone"),
            view(model()),
            "RuntimeUnavailable",
            "runtime gone: no gone on PATH",
            id="runtime-unavailable",
        ),
        pytest.param(
            spec(args={"threads": 2}),
            view(None),
            "InvalidArgs",
            "args.threads: runtime llama does not declare it (it has: ctx_size, n_gpu_layers)",
            id="args-before-the-model",
        ),
        pytest.param(
            spec(),
            view(None, gone=REMOVED),
            "ModelGone",
            "model tiny is gone: removed from disk; the worker starts again once the model is back",
            id="model-went",
        ),
        pytest.param(
            spec(),
            view(model(), gone=ABSENT, why=ABSENT),
            "ModelGone",
            "model tiny is gone: state is absent; the worker starts again once the model is back",
            id="model-absent",
        ),
        pytest.param(
            spec(),
            view(None),
            "ModelNotReady",
            "model tiny is not on disk; the worker starts once it is Available",
            id="model-never-seen",
        ),
        pytest.param(
            spec(),
            view(model(ArtifactStatus.DOWNLOADING)),
            "ModelNotReady",
            "model tiny is Downloading; the worker starts once it is Available",
            id="model-downloading",
        ),
    ],
)
def test_start_check_says_what_keeps_a_worker_pending(
    record: WorkerSpec, model_view: ModelView, reason: str, message: str
) -> None:
    checked = start_check(
        record,
        runtimes=RUNTIMES,
        model=model_view,
        boot=None,
        runtime_root=Path("/home/workers"),
    )
    assert isinstance(checked, Why)
    assert (checked.reason, checked.message) == (reason, message)


def test_start_check_then_fit() -> None:
    checked = start_check(
        spec(args={"ctx_size": 512}), runtimes=RUNTIMES, model=view(model()), boot=None
    )
    assert isinstance(checked, Launch)
    assert checked.args == {"ctx_size": 256, "n_gpu_layers": 0}
    assert checked.adjusted is not None and checked.adjusted[0] == "ContextAboveTrained"
    assert fit(checked, device="CPU-0", gpus=[], ram_available_bytes=RAM) is None
    blocked = fit(checked, device="GPU-0", gpus=[GPU], ram_available_bytes=RAM)
    assert blocked is not None and blocked.reason == "Unschedulable"
    assert blocked.message.startswith("InsufficientVRAM: needs")
