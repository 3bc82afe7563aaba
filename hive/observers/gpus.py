"""GPU observer: what GPUs this machine has, how much VRAM is free, and what each worker uses.

Behind the `GpuProbe` Protocol: `NvmlProbe` (NVIDIA's NVML), `NoGpuProbe`, and `FakeGpuProbe`
(a JSON file that tests rewrite while hive runs). `probe_from_setting` picks one.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hive.model.devices import GpuInfo
from hive.model.units import MIB

__all__ = [
    "FakeGpuProbe",
    "GpuProbe",
    "NoGpuProbe",
    "NvmlProbe",
    "probe_from_setting",
]

T = TypeVar("T")
_RACY_NS = 2_000_000_000


class GpuProbe(Protocol):
    """Reads GPUs; never raises for a missing driver or an unsupported reading.

    Calls block briefly (NVML is a C library): from asyncio, call them in a thread.
    """

    @property
    def error(self) -> str | None:
        """Why GPUs could not be read (no driver, a malformed fake file), or None."""
        ...

    def gpus(self) -> list[GpuInfo]:
        """The GPUs seen now, by index; empty when there are none or they cannot be read."""
        ...

    def process_vram_bytes(self, pids: Collection[int]) -> dict[int, int]:
        """VRAM used by each of `pids`, summed over GPUs; pids on no GPU are absent."""
        ...


class NoGpuProbe:
    """A machine without GPUs, by choice (`gpus: none`): nothing to report, nothing wrong."""

    error: str | None = None

    def gpus(self) -> list[GpuInfo]:
        return []

    def process_vram_bytes(self, pids: Collection[int]) -> dict[int, int]:
        return {}


class NvmlProbe:
    """NVIDIA GPUs through NVML (nvidia-ml-py's `pynvml`), initialised on first use.

    Without a driver or the library, it reports no GPUs and keeps the reason in `error`. A
    reading a GPU does not support (temperature, power, ...) is None. Process ids are the ones
    NVML reports: the host's, which differ from a container's own pid namespace.
    """

    def __init__(self, *, nvml: Any = None) -> None:
        # `nvml` stands in for the pynvml module in tests; None imports the real one.
        self._nvml = nvml
        self._lock = threading.Lock()
        self._initialized = False
        self._init_error: str | None = None
        self._last_error: str | None = None

    @property
    def error(self) -> str | None:
        with self._lock:
            self._ensure()
            return self._init_error or self._last_error

    def gpus(self) -> list[GpuInfo]:
        with self._lock:
            nvml = self._ensure()
            if nvml is None:
                return []
            problems: list[str] = []
            found: list[GpuInfo] = []
            for index, handle in self._handles(nvml, problems):
                info = self._read_gpu(nvml, index, handle, problems)
                if info is not None:
                    found.append(info)
            self._last_error = "; ".join(problems) or None
            return found

    def process_vram_bytes(self, pids: Collection[int]) -> dict[int, int]:
        wanted = set(pids)
        if not wanted:
            return {}
        with self._lock:
            nvml = self._ensure()
            if nvml is None:
                return {}
            problems: list[str] = []
            used: dict[int, int] = {}
            for index, handle in self._handles(nvml, problems):
                try:
                    processes = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
                except nvml.NVMLError as exc:
                    problems.append(f"GPU-{index}: cannot list processes: {exc}")
                    continue
                for process in processes:
                    pid = int(process.pid)
                    if pid in wanted:
                        # None when the driver hides it (some containers): on a GPU, size unknown.
                        nbytes = process.usedGpuMemory
                        used[pid] = used.get(pid, 0) + (int(nbytes) if nbytes is not None else 0)
            self._last_error = "; ".join(problems) or None
            return used

    def close(self) -> None:
        """Shut NVML down if this probe started it; a later call starts it again."""
        with self._lock:
            if self._initialized and self._nvml is not None:
                with contextlib.suppress(self._nvml.NVMLError):
                    self._nvml.nvmlShutdown()
            self._initialized = False
            self._init_error = None

    def _ensure(self) -> Any:
        """The NVML module, initialised; None (and `_init_error` set) when it cannot be."""
        if self._initialized:
            return self._nvml
        if self._init_error is not None:
            return None
        try:
            if self._nvml is None:
                import pynvml

                self._nvml = pynvml
            self._nvml.nvmlInit()
        except Exception as exc:  # An external library's boundary: record why, never raise.
            self._init_error = f"NVML unavailable, no GPU reported: {exc or type(exc).__name__}"
            return None
        self._initialized = True
        return self._nvml

    @staticmethod
    def _handles(nvml: Any, problems: list[str]) -> list[tuple[int, Any]]:
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except nvml.NVMLError as exc:
            problems.append(f"cannot count GPUs: {exc}")
            return []
        handles: list[tuple[int, Any]] = []
        for index in range(count):
            try:
                handles.append((index, nvml.nvmlDeviceGetHandleByIndex(index)))
            except nvml.NVMLError as exc:
                problems.append(f"GPU-{index}: {exc}")
        return handles

    @staticmethod
    def _read_gpu(nvml: Any, index: int, handle: Any, problems: list[str]) -> GpuInfo | None:
        try:
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        except nvml.NVMLError as exc:
            problems.append(f"GPU-{index}: cannot read memory: {exc}")
            return None

        def optional(read: Callable[[], T]) -> T | None:
            try:
                return read()
            except nvml.NVMLError:  # NotSupported, NoPermission, GpuIsLost, ...
                return None

        name = optional(lambda: _text(nvml.nvmlDeviceGetName(handle)))
        uuid = optional(lambda: _text(nvml.nvmlDeviceGetUUID(handle)))
        temperature = optional(
            lambda: float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
        )
        utilization = optional(lambda: float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu))
        power = optional(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0)  # milliwatts
        capability = optional(lambda: nvml.nvmlDeviceGetCudaComputeCapability(handle))
        return GpuInfo(
            index=index,
            uuid=uuid or f"GPU-unknown-{index}",
            name=name or "Unknown GPU",
            vram_total_bytes=int(memory.total),
            vram_free_bytes=int(memory.free),
            temperature_celsius=temperature,
            utilization_percent=utilization,
            power_watts=power,
            compute_capability=(
                f"{capability[0]}.{capability[1]}" if capability is not None else None
            ),
        )


def _text(value: str | bytes) -> str:
    # Older nvidia-ml-py releases return bytes.
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class _FakeGpu(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int = Field(ge=0)
    name: str = "Fake GPU"
    uuid: str | None = None
    vram_total_mb: int = Field(ge=0)
    vram_free_mb: int = Field(ge=0)
    temperature_celsius: float | None = None
    utilization_percent: float | None = None
    power_watts: float | None = None
    compute_capability: str | None = None

    @model_validator(mode="after")
    def _free_within_total(self) -> _FakeGpu:
        if self.vram_free_mb > self.vram_total_mb:
            raise ValueError(
                f"vram_free_mb {self.vram_free_mb} exceeds vram_total_mb {self.vram_total_mb}"
            )
        return self

    def info(self) -> GpuInfo:
        return GpuInfo(
            index=self.index,
            uuid=self.uuid or f"GPU-fake-{self.index}",
            name=self.name,
            vram_total_bytes=self.vram_total_mb * MIB,
            vram_free_bytes=self.vram_free_mb * MIB,
            temperature_celsius=self.temperature_celsius,
            utilization_percent=self.utilization_percent,
            power_watts=self.power_watts,
            compute_capability=self.compute_capability,
        )


class _FakeFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    gpus: list[_FakeGpu] = []
    #: pid -> MiB of VRAM it uses (summed over GPUs).
    processes: dict[int, Annotated[int, Field(ge=0)]] = {}

    @model_validator(mode="after")
    def _unique_indices(self) -> _FakeFile:
        indices = [g.index for g in self.gpus]
        duplicates = sorted({i for i in indices if indices.count(i) > 1})
        if duplicates:
            raise ValueError(f"GPU index {', '.join(map(str, duplicates))} appears twice")
        return self


class FakeGpuProbe:
    """GPUs described by a JSON file, read again whenever it changes (by inode, mtime, size).

    The file: `{"gpus": [{"index": 0, "name": "Fake GPU", "vram_total_mb": 24000,
    "vram_free_mb": 20000}], "processes": {"1234": 512}}`, sizes in MiB (as nvidia-smi
    counts them); optional per GPU: uuid (default `GPU-fake-<index>`), temperature_celsius,
    utilization_percent, power_watts, compute_capability. A missing or malformed file reports
    no GPUs, and `error` names the file and the problem.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._key: tuple[int, int, int] | None = None
        self._gpus: list[GpuInfo] = []
        self._processes: dict[int, int] = {}
        self._error: str | None = None
        self._racy = False

    @property
    def error(self) -> str | None:
        with self._lock:
            self._refresh()
            return self._error

    def gpus(self) -> list[GpuInfo]:
        with self._lock:
            self._refresh()
            return list(self._gpus)

    def process_vram_bytes(self, pids: Collection[int]) -> dict[int, int]:
        with self._lock:
            self._refresh()
            return {pid: self._processes[pid] for pid in pids if pid in self._processes}

    def _refresh(self) -> None:
        try:
            with self.path.open("rb") as f:
                st = os.fstat(f.fileno())
                key = (st.st_ino, st.st_mtime_ns, st.st_size)
                if key == self._key and not self._racy:
                    return
                # A rewrite within the file system's timestamp granularity can keep all three;
                # a file modified moments before it was read is read again until it settles.
                self._racy = time.time_ns() - st.st_mtime_ns < _RACY_NS
                raw = f.read()
        except OSError as exc:
            self._set(None, [], {}, f"{self.path}: cannot read fake GPU file: {exc.strerror}")
            return
        try:
            parsed = _FakeFile.model_validate_json(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors()
            )
            self._set(key, [], {}, f"{self.path}: malformed fake GPU file: {problems}")
            return
        gpus = sorted((g.info() for g in parsed.gpus), key=lambda g: g.index)
        processes = {pid: mb * MIB for pid, mb in parsed.processes.items()}
        self._set(key, gpus, processes, None)

    def _set(
        self,
        key: tuple[int, int, int] | None,
        gpus: list[GpuInfo],
        processes: dict[int, int],
        error: str | None,
    ) -> None:
        self._key, self._gpus, self._processes, self._error = key, gpus, processes, error


def probe_from_setting(value: str) -> GpuProbe:
    """The probe a `gpus` setting names: "auto" (NVML), "none", or "fake:/path/to/gpus.json"."""
    if value == "auto":
        return NvmlProbe()
    if value == "none":
        return NoGpuProbe()
    if value.startswith("fake:"):
        path = value.removeprefix("fake:")
        if not path:
            raise ValueError("fake: needs a file, e.g. fake:/path/to/gpus.json")
        return FakeGpuProbe(Path(path))
    raise ValueError(
        f"{value!r} is not a GPU probe setting: use auto (NVML), none, or fake:/path/to/gpus.json"
    )
