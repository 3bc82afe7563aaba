"""The worker planner: what `hive plan` says hive would do with each Worker, from the
records, the live workers, the catalog, the runtimes and the devices (a table)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hive.core.worker_plan import plan_workers
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
            ["stop Worker/w, PID 4242 (no record declares it)"],
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
            ["cannot start Worker/w: Unschedulable: InsufficientVRAM: needs 66 MB"],
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
            ["cannot start Worker/w: Unschedulable: InsufficientMemory: needs 66 MB"],
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
                "catalog (known: gone, llama)"
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
                "cannot start Worker/w: ModelNotReady: Model/tiny is not on disk and no "
                "record provisions it"
            ],
            id="model-nowhere",
        ),
        pytest.param(
            {"w": spec()},
            {},
            {"tiny": model(ArtifactStatus.FAILED)},
            set(),
            RAM,
            ["cannot start Worker/w: ModelNotReady: Model/tiny is Failed and no record"],
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
