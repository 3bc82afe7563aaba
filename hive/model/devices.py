"""Devices and placement records: the GPUs a probe saw, a worker's memory estimate, and
whether it fits on its device. Produced by `hive.observers.gpus` and `hive.core.placement`."""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class GpuInfo(BaseModel):
    """One GPU as the probe saw it; readings the driver does not support are None."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int = Field(ge=0, description="The n of device GPU-<n> (the NVML index).")
    uuid: str
    name: str
    vram_total_bytes: int = Field(ge=0)
    vram_free_bytes: int = Field(ge=0)
    temperature_celsius: float | None = None
    utilization_percent: float | None = None
    power_watts: float | None = None
    compute_capability: str | None = Field(default=None, examples=["8.9"])

    @property
    def device(self) -> str:
        """The device name manifests use: `GPU-<index>`."""
        return f"GPU-{self.index}"


class MemoryEstimate(BaseModel):
    """Bytes a llama.cpp worker needs on its device: weights, KV cache and compute buffers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_bytes: int = Field(ge=0)
    kv_cache_bytes: int = Field(ge=0)
    overhead_bytes: int = Field(ge=0)
    total_bytes: int = Field(ge=0)
    #: False when the GGUF header lacked what the KV cache size needs; it is then counted as 0.
    kv_cache_known: bool = True

    @model_validator(mode="after")
    def _total_is_the_sum(self) -> Self:
        parts = self.model_bytes + self.kv_cache_bytes + self.overhead_bytes
        if self.total_bytes != parts:
            raise ValueError(f"total_bytes {self.total_bytes} is not the sum of the parts {parts}")
        return self


class PlacementReason(StrEnum):
    FITS = "Fits"
    NO_SUCH_DEVICE = "NoSuchDevice"
    INSUFFICIENT_VRAM = "InsufficientVRAM"
    INSUFFICIENT_MEMORY = "InsufficientMemory"


class Placement(BaseModel):
    """Whether a worker fits on its device, with a message that gives memory in MiB and
    the model file's size in MB."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fits: bool
    reason: PlacementReason
    message: str
    needed_bytes: int = Field(ge=0)
    #: Free VRAM of the GPU or available RAM; None when the device does not exist.
    available_bytes: int | None = Field(default=None, ge=0)
