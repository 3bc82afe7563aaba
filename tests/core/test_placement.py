"""Placement: a worker's memory estimate (weights + f16 KV cache + overhead) and whether it
fits on CPU-0 or a GPU, with messages that give memory in MiB and the model's file size in MB."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from hive.core.placement import OVERHEAD_BASE_BYTES, check_fit, estimate_memory
from hive.model.devices import GpuInfo, MemoryEstimate, PlacementReason
from hive.model.units import MIB, megabytes

GiB = 1 << 30


def gpu(index: int, *, free_mb: int, total_mb: int = 24_000) -> GpuInfo:
    return GpuInfo(
        index=index,
        uuid=f"GPU-test-{index}",
        name="Test GPU",
        vram_total_bytes=total_mb * MIB,
        vram_free_bytes=free_mb * MIB,
    )


def gpu0(*, free_bytes: int) -> GpuInfo:
    return GpuInfo(
        index=0, uuid="u", name="g", vram_total_bytes=free_bytes, vram_free_bytes=free_bytes
    )


def estimate(*, total_mb: int) -> MemoryEstimate:
    return MemoryEstimate(
        model_bytes=total_mb * MIB, kv_cache_bytes=0, overhead_bytes=0, total_bytes=total_mb * MIB
    )


# --- estimate_memory ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("facts", "ctx_size", "kv_bytes"),
    [
        # Llama 3 8B: 32 layers, 4096 wide, 32 heads, 8 KV heads (GQA). llama.cpp reports a
        # 1024 MiB f16 KV cache at 8192 context.
        ((32, 4096, 32, 8), 8192, 1024 * MIB),
        # Llama 2 7B: plain multi-head attention; 2048 MiB at 4096 context.
        ((32, 4096, 32, 32), 4096, 2 * GiB),
        # Head counts unknown: the full embedding width (as if MHA), an upper bound.
        ((32, 4096, None, None), 4096, 2 * GiB),
        ((32, 4096, 32, None), 4096, 2 * GiB),
        ((32, 4096, 0, 8), 4096, 2 * GiB),  # a zero head count is treated as unknown
        # The tiny example model: 2 layers, 64 wide, 4 heads, 2 KV heads.
        ((2, 64, 4, 2), 256, 2 * 2 * 256 * 32 * 2),
        ((32, 4096, 32, 8), 0, 0),
    ],
)
def test_kv_cache_is_f16_k_and_v_per_layer_per_token(
    facts: tuple[int, int, int | None, int | None], ctx_size: int, kv_bytes: int
) -> None:
    block_count, embedding_length, head_count, head_count_kv = facts
    e = estimate_memory(
        model_bytes=4 * GiB,
        ctx_size=ctx_size,
        block_count=block_count,
        embedding_length=embedding_length,
        head_count=head_count,
        head_count_kv=head_count_kv,
    )
    assert e.kv_cache_bytes == kv_bytes
    assert e.kv_cache_known
    assert e.model_bytes == 4 * GiB
    assert e.overhead_bytes == 64 * MIB + int(4 * GiB * 0.05)
    assert e.total_bytes == e.model_bytes + e.kv_cache_bytes + e.overhead_bytes


@pytest.mark.parametrize(("block_count", "embedding_length"), [(None, 4096), (32, None)])
def test_missing_facts_count_no_kv_cache_and_say_so(
    block_count: int | None, embedding_length: int | None
) -> None:
    e = estimate_memory(
        model_bytes=100 * MIB,
        ctx_size=4096,
        block_count=block_count,
        embedding_length=embedding_length,
        head_count=32,
        head_count_kv=8,
    )
    assert (e.kv_cache_bytes, e.kv_cache_known) == (0, False)
    assert e.total_bytes == 100 * MIB + OVERHEAD_BASE_BYTES + 5 * MIB
    placement = check_fit(estimate=e, device="CPU-0", gpus=[], ram_available_bytes=GiB)
    assert "KV cache unknown" in placement.message


@pytest.mark.parametrize(
    "bad",
    [{"model_bytes": -1}, {"ctx_size": -1}, {"block_count": -2}, {"head_count_kv": -8}],
)
def test_negative_inputs_are_refused(bad: dict[str, int]) -> None:
    args: dict[str, int | None] = {
        "model_bytes": MIB,
        "ctx_size": 512,
        "block_count": 2,
        "embedding_length": 64,
        "head_count": 4,
        "head_count_kv": 2,
    }
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        estimate_memory(**(args | bad))  # type: ignore[arg-type]


def test_an_estimate_whose_total_is_not_the_sum_is_refused() -> None:
    with pytest.raises(ValidationError, match="not the sum"):
        MemoryEstimate(model_bytes=1, kv_cache_bytes=2, overhead_bytes=3, total_bytes=7)


# --- check_fit ------------------------------------------------------------------------------

TWO_GPUS = [gpu(1, free_mb=3_000), gpu(0, free_mb=20_000)]


@pytest.mark.parametrize(
    ("device", "needed_mb", "ram_mb", "fits", "reason", "available_mb"),
    [
        ("GPU-0", 5_120, 0, True, PlacementReason.FITS, 20_000),
        ("GPU-0", 20_000, 0, True, PlacementReason.FITS, 20_000),  # exactly full
        ("GPU-0", 20_001, 10**6, False, PlacementReason.INSUFFICIENT_VRAM, 20_000),
        ("GPU-1", 5_120, 10**6, False, PlacementReason.INSUFFICIENT_VRAM, 3_000),
        ("CPU-0", 5_120, 8_000, True, PlacementReason.FITS, 8_000),
        ("CPU-0", 5_120, 5_000, False, PlacementReason.INSUFFICIENT_MEMORY, 5_000),
        ("CPU-0", 5_120, -1, False, PlacementReason.INSUFFICIENT_MEMORY, 0),
        ("GPU-2", 1, 10**6, False, PlacementReason.NO_SUCH_DEVICE, None),
    ],
)
def test_check_fit_table(
    device: str,
    needed_mb: int,
    ram_mb: int,
    fits: bool,
    reason: PlacementReason,
    available_mb: int | None,
) -> None:
    placement = check_fit(
        estimate=estimate(total_mb=needed_mb),
        device=device,
        gpus=TWO_GPUS,
        ram_available_bytes=ram_mb * MIB,
    )
    assert placement.fits is fits
    assert placement.reason == reason
    assert placement.needed_bytes == needed_mb * MIB
    expected_available = available_mb * MIB if available_mb is not None else None
    assert placement.available_bytes == expected_available


def test_messages_give_memory_in_mib_and_the_model_file_as_get_models_does() -> None:
    """A 4.37 GB file reads `4,370 MB` here as in `hive get models` and the log (decimal
    megabytes); memory, counted in mebibytes as nvidia-smi does, is labelled MiB."""
    model = 4_370_000_000
    e = MemoryEstimate(
        model_bytes=model,
        kv_cache_bytes=512 * MIB,
        overhead_bytes=238 * MIB,
        total_bytes=model + 750 * MIB,
    )
    assert megabytes(model) == "4,370 MB"
    on_gpu1 = check_fit(estimate=e, device="GPU-1", gpus=TWO_GPUS, ram_available_bytes=0)
    assert on_gpu1.message == (
        "needs 4,918 MiB (model 4,370 MB + KV cache 512 MiB + overhead 238 MiB)"
        " but GPU-1 has 3,000 MiB free"
    )
    assert on_gpu1.reason == "InsufficientVRAM"
    on_gpu0 = check_fit(estimate=e, device="GPU-0", gpus=TWO_GPUS, ram_available_bytes=0)
    assert on_gpu0.message.endswith(") and GPU-0 has 20,000 MiB free")
    on_cpu = check_fit(estimate=e, device="CPU-0", gpus=[], ram_available_bytes=4_096 * MIB)
    assert on_cpu.message.endswith(" but CPU-0 has 4,096 MiB of RAM available")
    assert on_cpu.reason == "InsufficientMemory"


@pytest.mark.parametrize(
    ("device", "gpus", "message"),
    [
        ("GPU-3", TWO_GPUS, "GPU-3 does not exist on this machine (GPUs: GPU-0, GPU-1)"),
        ("GPU-0", [], "GPU-0 does not exist on this machine (no GPU found)"),
        ("CPU-1", [], "CPU-1 is not a device (CPU-0 or GPU-<n>) (no GPU found)"),
        ("GPU-01", TWO_GPUS, "GPU-01 is not a device (CPU-0 or GPU-<n>) (GPUs: GPU-0, GPU-1)"),
    ],
)
def test_no_such_device_lists_the_devices_there(
    device: str, gpus: list[GpuInfo], message: str
) -> None:
    placement = check_fit(
        estimate=estimate(total_mb=1), device=device, gpus=gpus, ram_available_bytes=GiB
    )
    assert (placement.fits, placement.reason) == (False, "NoSuchDevice")
    assert placement.message == message


def test_a_near_miss_never_reads_as_equal_numbers() -> None:
    e = MemoryEstimate(
        model_bytes=5 * MIB + 1, kv_cache_bytes=0, overhead_bytes=0, total_bytes=5 * MIB + 1
    )
    placement = check_fit(
        estimate=e, device="GPU-0", gpus=[gpu(0, free_mb=5)], ram_available_bytes=0
    )
    assert not placement.fits
    assert placement.message.startswith("needs 6 MiB")
    assert placement.message.endswith("but GPU-0 has 5 MiB free")


# --- properties -----------------------------------------------------------------------------

sizes = st.integers(min_value=0, max_value=1 << 40)
optional_counts = st.none() | st.integers(min_value=0, max_value=256)


@st.composite
def estimates(draw: st.DrawFn) -> MemoryEstimate:
    return estimate_memory(
        model_bytes=draw(sizes),
        ctx_size=draw(st.integers(min_value=0, max_value=1 << 20)),
        block_count=draw(optional_counts),
        embedding_length=draw(st.none() | st.integers(min_value=0, max_value=16_384)),
        head_count=draw(optional_counts),
        head_count_kv=draw(optional_counts),
    )


@given(e=estimates(), free=sizes, more=sizes, device=st.sampled_from(["CPU-0", "GPU-0"]))
def test_more_free_memory_never_turns_a_fit_into_a_misfit(
    e: MemoryEstimate, free: int, more: int, device: str
) -> None:
    def place(available: int) -> bool:
        return check_fit(
            estimate=e,
            device=device,
            gpus=[gpu0(free_bytes=available)],
            ram_available_bytes=available,
        ).fits

    assert place(free) <= place(free + more)  # fits implies still fits


@given(e=estimates(), free=sizes, device=st.sampled_from(["CPU-0", "GPU-0"]))
def test_the_printed_numbers_agree_with_the_verdict(
    e: MemoryEstimate, free: int, device: str
) -> None:
    placement = check_fit(
        estimate=e,
        device=device,
        gpus=[gpu0(free_bytes=free)],
        ram_available_bytes=free,
    )
    assert placement.fits is (e.total_bytes <= free)
    match = re.match(r"needs ([\d,]+) MiB .* has ([\d,]+) MiB", placement.message)
    assert match is not None
    needed, available = (int(group.replace(",", "")) for group in match.groups())
    assert (needed <= available) is placement.fits


@given(
    model_bytes=sizes,
    ctx=st.integers(min_value=0, max_value=1 << 20),
    extra_ctx=st.integers(min_value=0, max_value=1 << 20),
    block_count=optional_counts,
    embedding_length=st.none() | st.integers(min_value=0, max_value=16_384),
    head_count=optional_counts,
    head_count_kv=optional_counts,
)
def test_a_longer_context_never_needs_less(
    model_bytes: int,
    ctx: int,
    extra_ctx: int,
    block_count: int | None,
    embedding_length: int | None,
    head_count: int | None,
    head_count_kv: int | None,
) -> None:
    def total(ctx_size: int) -> int:
        return estimate_memory(
            model_bytes=model_bytes,
            ctx_size=ctx_size,
            block_count=block_count,
            embedding_length=embedding_length,
            head_count=head_count,
            head_count_kv=head_count_kv,
        ).total_bytes

    assert total(ctx + extra_ctx) >= total(ctx) >= model_bytes + OVERHEAD_BASE_BYTES


@given(
    block_count=st.integers(min_value=0, max_value=256),
    embedding_length=st.integers(min_value=0, max_value=16_384),
    head_count=st.integers(min_value=1, max_value=256),
    data=st.data(),
)
def test_grouped_query_attention_never_needs_more_than_multi_head(
    block_count: int, embedding_length: int, head_count: int, data: st.DataObject
) -> None:
    head_count_kv = data.draw(st.integers(min_value=0, max_value=head_count))

    def kv(kv_heads: int | None) -> int:
        return estimate_memory(
            model_bytes=0,
            ctx_size=4096,
            block_count=block_count,
            embedding_length=embedding_length,
            head_count=head_count,
            head_count_kv=kv_heads,
        ).kv_cache_bytes

    assert kv(head_count_kv) <= kv(head_count) == kv(None)
