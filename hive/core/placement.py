"""Placement math: how much memory a llama.cpp worker needs, and whether it fits on its device.

Pure: GGUF facts and a GPU probe's readings in, a `MemoryEstimate` and a `Placement` out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from hive.model.devices import GpuInfo, MemoryEstimate, Placement, PlacementReason
from hive.model.units import MIB, mebibytes, megabytes

__all__ = [
    "CPU_DEVICE",
    "OVERHEAD_BASE_BYTES",
    "OVERHEAD_FRACTION",
    "check_fit",
    "estimate_memory",
]

#: Compute buffers: a fixed part plus a share of the weights (see `estimate_memory`).
OVERHEAD_BASE_BYTES = 64 * MIB
OVERHEAD_FRACTION = 0.05
_KV_BYTES_PER_VALUE = 2  # llama.cpp's default cache type, f16

_DEVICE_RE = re.compile(r"GPU-(0|[1-9][0-9]*)")
CPU_DEVICE = "CPU-0"


def estimate_memory(
    *,
    model_bytes: int,
    ctx_size: int,
    block_count: int | None,
    embedding_length: int | None,
    head_count: int | None,
    head_count_kv: int | None,
) -> MemoryEstimate:
    """Estimate what a llama.cpp worker with context `ctx_size` needs for a model.

    - Weights: `model_bytes`, the size of the GGUF file(s) (the header is negligible).
    - KV cache, in llama.cpp's default f16 cache: 2 (K and V) × block_count × ctx_size ×
      width × 2 bytes, where width is embedding_length × head_count_kv / head_count (the K/V
      width under grouped-query attention) when both head counts are known and nonzero, else
      embedding_length (plain multi-head attention, an overestimate for GQA models). When
      block_count or embedding_length is unknown the KV cache is counted as 0 bytes and the
      estimate says `kv_cache_known=False`.
    - Overhead for compute buffers and scratch: 64 MiB + 5% of the weights. llama.cpp sizes
      these by batch size, vocabulary and graph, which a header does not fully tell; this is a
      rough margin, deliberately on the generous side of what small and mid-size models use.

    Raises ValueError for a negative size or count.
    """
    for name, value in (
        ("model_bytes", model_bytes),
        ("ctx_size", ctx_size),
        ("block_count", block_count),
        ("embedding_length", embedding_length),
        ("head_count", head_count),
        ("head_count_kv", head_count_kv),
    ):
        if value is not None and value < 0:
            raise ValueError(f"{name} must not be negative, got {value}")

    kv_known = block_count is not None and embedding_length is not None
    kv_bytes = 0
    if block_count is not None and embedding_length is not None:
        width = embedding_length
        if head_count and head_count_kv is not None:
            width = embedding_length * head_count_kv // head_count
        kv_bytes = 2 * block_count * ctx_size * width * _KV_BYTES_PER_VALUE
    overhead = OVERHEAD_BASE_BYTES + int(model_bytes * OVERHEAD_FRACTION)
    return MemoryEstimate(
        model_bytes=model_bytes,
        kv_cache_bytes=kv_bytes,
        overhead_bytes=overhead,
        total_bytes=model_bytes + kv_bytes + overhead,
        kv_cache_known=kv_known,
    )


def check_fit(
    *,
    estimate: MemoryEstimate,
    device: str,
    gpus: Sequence[GpuInfo],
    ram_available_bytes: int,
) -> Placement:
    """Whether `estimate` fits on `device` ("CPU-0" or "GPU-<n>").

    A GPU is compared by its free VRAM, the CPU by the available RAM. A device that is not on
    this machine (or not a device name at all) gives NoSuchDevice and the devices that are.
    """
    needed = estimate.total_bytes
    if device == CPU_DEVICE:
        available = max(ram_available_bytes, 0)
        fits = needed <= available
        return Placement(
            fits=fits,
            reason=PlacementReason.FITS if fits else PlacementReason.INSUFFICIENT_MEMORY,
            message=_message(
                estimate,
                fits=fits,
                available=available,
                device=device,
                kind="of RAM available",
            ),
            needed_bytes=needed,
            available_bytes=available,
        )

    match = _DEVICE_RE.fullmatch(device)
    gpu = None
    if match is not None:
        index = int(match.group(1))
        gpu = next((g for g in gpus if g.index == index), None)
    if gpu is None:
        names = ", ".join(g.device for g in sorted(gpus, key=lambda g: g.index))
        there = f"GPUs: {names}" if names else "no GPU found"
        what = "does not exist on this machine" if match else "is not a device (CPU-0 or GPU-<n>)"
        return Placement(
            fits=False,
            reason=PlacementReason.NO_SUCH_DEVICE,
            message=f"{device} {what} ({there})",
            needed_bytes=needed,
            available_bytes=None,
        )

    available = gpu.vram_free_bytes
    fits = needed <= available
    return Placement(
        fits=fits,
        reason=PlacementReason.FITS if fits else PlacementReason.INSUFFICIENT_VRAM,
        message=_message(estimate, fits=fits, available=available, device=gpu.device, kind="free"),
        needed_bytes=needed,
        available_bytes=available,
    )


def _message(
    estimate: MemoryEstimate, *, fits: bool, available: int, device: str, kind: str
) -> str:
    """'needs N MiB (model M MB + KV cache K MiB + overhead O MiB) and|but <device> has
    A MiB <kind>': memory in MiB (as nvidia-smi counts it), the model's file size in MB
    (as `hive get models` and the log show it)."""
    # Rounding to the nearest MiB keeps "needed <= available" true of the printed numbers; a
    # misfit rounds needed up and available down instead, so it never reads "5 MiB but 5 MiB".
    if fits:
        needed, free = mebibytes(estimate.total_bytes), mebibytes(available)
    else:
        needed = mebibytes(estimate.total_bytes, rounding="up")
        free = mebibytes(available, rounding="down")
    kv = mebibytes(estimate.kv_cache_bytes) if estimate.kv_cache_known else "unknown"
    needs = (
        f"needs {needed} (model {megabytes(estimate.model_bytes)}"
        f" + KV cache {kv} + overhead {mebibytes(estimate.overhead_bytes)})"
    )
    return f"{needs} {'and' if fits else 'but'} {device} has {free} {kind}"
