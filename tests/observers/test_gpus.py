"""GPU probes: NVML without a driver reports no GPUs and why; NVML's per-GPU gaps become None
(against a stand-in for pynvml); the fake probe follows its JSON file as tests rewrite it."""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from hive.model.devices import GpuInfo
from hive.model.units import MIB
from hive.observers.gpus import (
    FakeGpuProbe,
    GpuProbe,
    NoGpuProbe,
    NvmlProbe,
    probe_from_setting,
)

NOT_SUPPORTED = pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
GIB = 1 << 30

# --- NVML, the real library on this machine -------------------------------------------------


def test_real_nvml_never_raises_and_explains_an_empty_answer() -> None:
    probe = NvmlProbe()
    gpus = probe.gpus()
    used = probe.process_vram_bytes({os.getpid()})
    if probe.error is not None:  # No driver or no library (this machine): say why, report none.
        assert gpus == []
        assert used == {}
        assert "NVML" in probe.error
    else:  # A machine with an NVIDIA driver.
        assert [g.index for g in gpus] == list(range(len(gpus)))
        assert all(0 <= g.vram_free_bytes <= g.vram_total_bytes for g in gpus)
    probe.close()


# --- NVML, against a stand-in module --------------------------------------------------------


@dataclass
class FakeDevice:
    """What one GPU answers; an NVMLError in a field is raised instead."""

    memory: Any = field(default_factory=lambda: SimpleNamespace(total=24 * GIB, free=20 * GIB))
    name: Any = "NVIDIA Test"
    uuid: Any = "GPU-1111"
    temperature: Any = 41
    utilization: Any = field(default_factory=lambda: SimpleNamespace(gpu=37, memory=5))
    power_mw: Any = 71_500
    capability: Any = (9, 0)
    processes: Any = field(default_factory=list)


def _answer(value: Any) -> Any:
    if isinstance(value, pynvml.NVMLError):
        raise value
    return value


class FakeNvml:
    """The slice of pynvml that NvmlProbe uses, with the real error classes."""

    NVMLError = pynvml.NVMLError
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU

    def __init__(self, devices: list[FakeDevice], *, init_error: Exception | None = None) -> None:
        self.devices = devices
        self.init_error = init_error
        self.count_error: Exception | None = None
        self.init_calls = 0
        self.shutdown_calls = 0

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(_answer(self.count_error or self.devices))

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDevice:
        return self.devices[index]

    def nvmlDeviceGetMemoryInfo(self, handle: FakeDevice) -> Any:
        return _answer(handle.memory)

    def nvmlDeviceGetName(self, handle: FakeDevice) -> Any:
        return _answer(handle.name)

    def nvmlDeviceGetUUID(self, handle: FakeDevice) -> Any:
        return _answer(handle.uuid)

    def nvmlDeviceGetTemperature(self, handle: FakeDevice, sensor: int) -> Any:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return _answer(handle.temperature)

    def nvmlDeviceGetUtilizationRates(self, handle: FakeDevice) -> Any:
        return _answer(handle.utilization)

    def nvmlDeviceGetPowerUsage(self, handle: FakeDevice) -> Any:
        return _answer(handle.power_mw)

    def nvmlDeviceGetCudaComputeCapability(self, handle: FakeDevice) -> Any:
        return _answer(handle.capability)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeDevice) -> Any:
        return _answer(handle.processes)


def proc(pid: int, used: int | None) -> SimpleNamespace:
    return SimpleNamespace(pid=pid, usedGpuMemory=used)


def test_nvml_reads_every_gpu() -> None:
    nvml = FakeNvml([FakeDevice(), FakeDevice(name=b"Old Driver GPU", uuid=b"GPU-2222")])
    probe = NvmlProbe(nvml=nvml)
    assert probe.gpus() == [
        GpuInfo(
            index=0,
            uuid="GPU-1111",
            name="NVIDIA Test",
            vram_total_bytes=24 * GIB,
            vram_free_bytes=20 * GIB,
            temperature_celsius=41.0,
            utilization_percent=37.0,
            power_watts=71.5,
            compute_capability="9.0",
        ),
        GpuInfo(
            index=1,
            uuid="GPU-2222",
            name="Old Driver GPU",  # older nvidia-ml-py releases answer bytes
            vram_total_bytes=24 * GIB,
            vram_free_bytes=20 * GIB,
            temperature_celsius=41.0,
            utilization_percent=37.0,
            power_watts=71.5,
            compute_capability="9.0",
        ),
    ]
    assert probe.error is None


def test_unsupported_readings_are_none_not_errors() -> None:
    device = FakeDevice(
        name=NOT_SUPPORTED,
        uuid=NOT_SUPPORTED,
        temperature=NOT_SUPPORTED,
        utilization=pynvml.NVMLError(pynvml.NVML_ERROR_NO_PERMISSION),
        power_mw=NOT_SUPPORTED,
        capability=NOT_SUPPORTED,
    )
    probe = NvmlProbe(nvml=FakeNvml([device]))
    (info,) = probe.gpus()
    assert (info.temperature_celsius, info.utilization_percent, info.power_watts) == (
        None,
        None,
        None,
    )
    assert info.compute_capability is None
    assert (info.name, info.uuid) == ("Unknown GPU", "GPU-unknown-0")
    assert info.vram_free_bytes == 20 * GIB
    assert probe.error is None


def test_a_gpu_whose_memory_cannot_be_read_is_left_out_and_named() -> None:
    lost = pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
    nvml = FakeNvml([FakeDevice(), FakeDevice(memory=lost), FakeDevice()])
    probe = NvmlProbe(nvml=nvml)
    assert [g.index for g in probe.gpus()] == [0, 2]
    assert probe.error is not None
    assert "GPU-1" in probe.error
    assert str(lost) in probe.error
    nvml.devices[1] = FakeDevice()  # the GPU answers again
    assert [g.index for g in probe.gpus()] == [0, 1, 2]
    assert probe.error is None


def test_a_failing_device_count_gives_no_gpus_and_the_reason() -> None:
    nvml = FakeNvml([FakeDevice()])
    nvml.count_error = pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)
    probe = NvmlProbe(nvml=nvml)
    assert probe.gpus() == []
    assert probe.error is not None
    assert "cannot count GPUs" in probe.error


@pytest.mark.parametrize(
    "init_error",
    [
        pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND),
        pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED),
        OSError("libnvidia-ml.so.1: cannot open shared object file"),
    ],
)
def test_init_failure_reports_no_gpus_and_is_tried_once(init_error: Exception) -> None:
    nvml = FakeNvml([FakeDevice()], init_error=init_error)
    probe = NvmlProbe(nvml=nvml)
    for _ in range(3):
        assert probe.gpus() == []
        assert probe.process_vram_bytes({1, 2}) == {}
    assert probe.error is not None
    assert str(init_error) in probe.error
    assert nvml.init_calls == 1


def test_missing_pynvml_module_is_an_error_not_an_exception(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    probe = NvmlProbe()
    assert probe.gpus() == []
    assert probe.error is not None
    assert "pynvml" in probe.error


def test_nvml_is_initialised_once_across_threads() -> None:
    nvml = FakeNvml([FakeDevice(), FakeDevice()])
    probe = NvmlProbe(nvml=nvml)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: len(probe.gpus()), range(200)))
    assert results == [2] * 200
    assert nvml.init_calls == 1


def test_close_shuts_nvml_down_and_a_later_call_starts_it_again() -> None:
    nvml = FakeNvml([FakeDevice()])
    probe = NvmlProbe(nvml=nvml)
    assert len(probe.gpus()) == 1
    probe.close()
    assert nvml.shutdown_calls == 1
    assert len(probe.gpus()) == 1
    assert nvml.init_calls == 2


def test_process_vram_is_summed_over_gpus() -> None:
    nvml = FakeNvml(
        [
            FakeDevice(processes=[proc(100, 3 * GIB), proc(200, GIB), proc(999, GIB)]),
            FakeDevice(processes=[proc(100, GIB), proc(300, None)]),
            FakeDevice(processes=NOT_SUPPORTED),
        ]
    )
    probe = NvmlProbe(nvml=nvml)
    # 300 is on a GPU but the driver hides its usage; 400 is on none; 999 was not asked for.
    assert probe.process_vram_bytes([100, 200, 300, 400]) == {100: 4 * GIB, 200: GIB, 300: 0}
    assert probe.error is not None
    assert "GPU-2: cannot list processes" in probe.error
    assert probe.process_vram_bytes([]) == {}


# --- the fake probe -------------------------------------------------------------------------


def write_gpus(
    path: Path, gpus: list[dict[str, Any]], processes: dict[str, int] | None = None
) -> None:
    path.write_text(json.dumps({"gpus": gpus, "processes": processes or {}}))


def test_fake_probe_reads_its_file(tmp_path: Path) -> None:
    path = tmp_path / "gpus.json"
    write_gpus(
        path,
        [
            {
                "index": 1,
                "name": "Big",
                "vram_total_mb": 80_000,
                "vram_free_mb": 1_000,
                "uuid": "GPU-abc",
                "temperature_celsius": 55,
                "compute_capability": "9.0",
            },
            {"index": 0, "name": "Fake GPU", "vram_total_mb": 24000, "vram_free_mb": 20000},
        ],
        {"1234": 512, "77": 0},
    )
    probe = FakeGpuProbe(path)
    first, second = probe.gpus()
    assert first == GpuInfo(
        index=0,
        uuid="GPU-fake-0",
        name="Fake GPU",
        vram_total_bytes=24_000 * MIB,
        vram_free_bytes=20_000 * MIB,
    )
    assert (second.index, second.uuid, second.name) == (1, "GPU-abc", "Big")
    assert (second.temperature_celsius, second.compute_capability) == (55.0, "9.0")
    assert second.power_watts is None
    assert probe.process_vram_bytes([1234, 77, 5]) == {1234: 512 * MIB, 77: 0}
    assert probe.error is None


def test_fake_probe_follows_rewrites_at_once(tmp_path: Path) -> None:
    path = tmp_path / "gpus.json"
    probe = FakeGpuProbe(path)
    for free in (20_000, 10_000, 30_000, 0):  # same size, same inode, same second
        write_gpus(path, [{"index": 0, "vram_total_mb": 40_000, "vram_free_mb": free}])
        assert [g.vram_free_bytes for g in probe.gpus()] == [free * MIB]
    path.unlink()
    assert probe.gpus() == []
    assert probe.error is not None
    assert str(path) in probe.error
    assert "cannot read" in probe.error


def test_fake_probe_rereads_a_same_size_rewrite_with_the_same_recent_mtime(tmp_path: Path) -> None:
    path = tmp_path / "gpus.json"
    write_gpus(path, [{"index": 0, "vram_total_mb": 40_000, "vram_free_mb": 11_111}])
    mtime = path.stat().st_mtime_ns
    probe = FakeGpuProbe(path)
    assert probe.gpus()[0].vram_free_bytes == 11_111 * MIB
    write_gpus(path, [{"index": 0, "vram_total_mb": 40_000, "vram_free_mb": 22_222}])
    os.utime(path, ns=(mtime, mtime))  # a coarse clock: the rewrite kept the timestamp
    assert probe.gpus()[0].vram_free_bytes == 22_222 * MIB


def test_fake_probe_does_not_reread_a_settled_unchanged_file(tmp_path: Path) -> None:
    path = tmp_path / "gpus.json"
    write_gpus(path, [{"index": 0, "vram_total_mb": 40_000, "vram_free_mb": 11_111}])
    old = path.stat().st_mtime_ns - 60 * 10**9
    os.utime(path, ns=(old, old))
    probe = FakeGpuProbe(path)
    assert probe.gpus()[0].vram_free_bytes == 11_111 * MIB
    # Change the bytes behind its back, keeping inode, size and timestamp: the cache answers.
    write_gpus(path, [{"index": 0, "vram_total_mb": 40_000, "vram_free_mb": 22_222}])
    os.utime(path, ns=(old, old))
    assert probe.gpus()[0].vram_free_bytes == 11_111 * MIB
    os.utime(path, ns=(old + 1, old + 1))  # any change of timestamp is seen
    assert probe.gpus()[0].vram_free_bytes == 22_222 * MIB


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "Invalid JSON"),
        ('{"gpus": [{"index": 0, "vram_total_mb": 100}]}', "gpus.0.vram_free_mb: Field required"),
        ('{"gpus": [{"index": 0, "vram_total_mb": 100, "vram_free_mb": 200}]}', "exceeds"),
        ('{"gpus": [{"index": -1, "vram_total_mb": 1, "vram_free_mb": 1}]}', "gpus.0.index"),
        (
            '{"gpus": [{"index": 0, "vram_total_mb": 1, "vram_free_mb": 1},'
            ' {"index": 0, "vram_total_mb": 1, "vram_free_mb": 1}]}',
            "GPU index 0 appears twice",
        ),
        ('{"gpus": [], "processes": {"abc": 5}}', "processes.abc"),
        ('{"gpus": [], "procs": {}}', "procs: Extra inputs are not permitted"),
        ("[]", "file:"),
    ],
)
def test_malformed_fake_file_gives_no_gpus_and_says_why(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "gpus.json"
    path.write_text(content)
    probe = FakeGpuProbe(path)
    assert probe.gpus() == []
    assert probe.process_vram_bytes([1]) == {}
    assert probe.error is not None
    assert probe.error.startswith(f"{path}: malformed fake GPU file: ")
    assert problem in probe.error
    write_gpus(path, [{"index": 0, "vram_total_mb": 1, "vram_free_mb": 1}])  # fixed
    assert len(probe.gpus()) == 1
    assert probe.error is None


# --- choosing a probe -----------------------------------------------------------------------


def test_no_gpu_probe() -> None:
    probe = NoGpuProbe()
    assert (probe.gpus(), probe.process_vram_bytes([1]), probe.error) == ([], {}, None)


def test_probe_from_setting(tmp_path: Path) -> None:
    assert isinstance(probe_from_setting("auto"), NvmlProbe)
    assert isinstance(probe_from_setting("none"), NoGpuProbe)
    fake = probe_from_setting(f"fake:{tmp_path}/gpus.json")
    assert isinstance(fake, FakeGpuProbe)
    assert fake.path == tmp_path / "gpus.json"
    probes: list[GpuProbe] = [NvmlProbe(), NoGpuProbe(), fake]  # all three satisfy the Protocol
    assert len(probes) == 3


@pytest.mark.parametrize("value", ["", "nvml", "AUTO", "fake:", "fake", "gpu:0"])
def test_probe_from_setting_refuses_anything_else(value: str) -> None:
    with pytest.raises(ValueError, match=r"auto|fake:/path"):
        probe_from_setting(value)
