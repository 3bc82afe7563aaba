"""Facts read from a GGUF model file's header.

Produced by `hive.observers.gguf.read_gguf_facts`; read by whatever reports on or places a model.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class GgufFacts(BaseModel):
    """What a GGUF header says about a model, without touching its tensor data."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gguf_version: int = Field(ge=1, description="GGUF format version (2 or 3).")
    tensor_count: int = Field(ge=0)
    kv_count: int = Field(ge=0, description="Number of metadata key/value pairs.")
    architecture: str | None = Field(
        default=None, description="general.architecture, e.g. 'llama'."
    )
    name: str | None = Field(default=None, description="general.name.")
    file_type: int | None = Field(
        default=None, description="general.file_type as stored (llama.cpp LLAMA_FTYPE number)."
    )
    quantization: str | None = Field(
        default=None,
        description="Name of the file type ('F32', 'Q4_K_M', ...); when the file does not say,"
        " the tensor type holding the most bytes.",
    )
    dominant_type: str | None = Field(
        default=None,
        description="The tensor type holding the most bytes ('Q4_K', 'F32', ...): what the "
        "weights mostly are, whatever general.file_type claims.",
    )
    parameter_count: int | None = Field(
        default=None, ge=0, description="Sum of element counts over all tensors."
    )
    parameter_count_label: str | None = Field(
        default=None, description="parameter_count rounded for people: '1.1B', '70M', '117K'."
    )
    context_length: int | None = Field(default=None, ge=0)
    embedding_length: int | None = Field(default=None, ge=0)
    block_count: int | None = Field(default=None, ge=0)
    head_count: int | None = Field(
        default=None,
        ge=0,
        description="{arch}.attention.head_count: attention (query) heads; the largest per-layer"
        " value when the file stores one per layer.",
    )
    head_count_kv: int | None = Field(
        default=None,
        ge=0,
        description="{arch}.attention.head_count_kv: key/value heads (fewer than head_count under"
        " grouped-query attention); the largest per-layer value when stored per layer.",
    )


def parameter_count_label(count: int) -> str:
    """Round a parameter count the way GGUF size labels do: at least two significant digits.

    1_100_048_384 -> '1.1B', 8_030_261_248 -> '8.0B', 70_426_624 -> '70M', 117_000 -> '117K'.
    """
    if count <= 0:
        return "0"
    # Same arithmetic as gguf-py's model_weight_count_rounded_notation, float rounding included,
    # so labels agree with the general.size_label that converters write.
    if count > 10**12:
        scaled, suffix = count * 1e-12, "T"
    elif count > 10**9:
        scaled, suffix = count * 1e-9, "B"
    elif count > 10**6:
        scaled, suffix = count * 1e-6, "M"
    else:
        scaled, suffix = count * 1e-3, "K"
    decimals = max(2 - len(str(round(scaled)).lstrip("0")), 0)
    return f"{scaled:.{decimals}f}{suffix}"
