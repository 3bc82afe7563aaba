"""Tests for the GGUF header parser and the tiny example model it is checked against.

The tiny model comes from examples/make_tiny_model.py; gguf-py's GGUFReader is the reference.
"""

from __future__ import annotations

import hashlib
import importlib.util
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import gguf
import numpy as np
import pytest
from gguf.quants import quantize
from gguf.utility import model_weight_count_rounded_notation
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hive.errors import GgufError
from hive.model.gguf import GgufFacts, parameter_count_label
from hive.observers import gguf as observer
from hive.observers.gguf import read_gguf_facts

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "make_tiny_model.py"
# Generous: a parser that loops over a corrupt 2**60 count would take years, not a second.


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hive_example_make_tiny_model", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return _load_example()


@pytest.fixture(scope="module")
def tiny_model(example: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path: Path = example.make_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.gguf")
    return path


@pytest.fixture(scope="module")
def tiny_bytes(tiny_model: Path) -> bytes:
    return tiny_model.read_bytes()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _expect_gguf_error(path: Path, *, contains: str = "") -> GgufError:
    with pytest.raises(GgufError) as info:
        read_gguf_facts(path)
    assert str(path) in info.value.message
    assert contains in info.value.message
    return info.value


def _header(*, version: int = 3, tensor_count: int = 0, kv_count: int = 1) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, tensor_count, kv_count)


def _gguf_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


# --- the tiny example model -----------------------------------------------------------------


def test_tiny_model_is_small_and_deterministic(example: ModuleType, tmp_path: Path) -> None:
    first = example.make_tiny_model(tmp_path / "a" / "nested" / "tiny.gguf")
    second = example.make_tiny_model(tmp_path / "b.gguf")
    other_seed = example.make_tiny_model(tmp_path / "c.gguf", seed=1)
    assert first == tmp_path / "a" / "nested" / "tiny.gguf"
    assert 0 < first.stat().st_size < 1_000_000
    assert _sha256(first) == _sha256(second)
    assert _sha256(first) != _sha256(other_seed)
    assert first.stat().st_size == other_seed.stat().st_size


def test_tiny_model_cli_prints_path_and_size(
    example: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "deep" / "dir" / "cli.gguf"
    assert example.main([str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed
    assert str(out.stat().st_size) in printed


def test_tiny_model_has_every_llama_tensor_in_llama_cpp_shapes(tiny_model: Path) -> None:
    reader = gguf.GGUFReader(tiny_model)
    # ggml `ne` order (fastest-varying first), as llama.cpp's loader checks them.
    shapes = {t.name: [int(d) for d in t.shape] for t in reader.tensors}
    types = {t.tensor_type for t in reader.tensors}
    n_vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    assert types == {gguf.GGMLQuantizationType.F32}
    expected = {
        "token_embd.weight": [64, n_vocab],
        "output_norm.weight": [64],
        "output.weight": [64, n_vocab],
    }
    for i in range(2):
        expected |= {
            f"blk.{i}.attn_norm.weight": [64],
            f"blk.{i}.attn_q.weight": [64, 64],
            f"blk.{i}.attn_k.weight": [64, 32],
            f"blk.{i}.attn_v.weight": [64, 32],
            f"blk.{i}.attn_output.weight": [64, 64],
            f"blk.{i}.ffn_norm.weight": [64],
            f"blk.{i}.ffn_gate.weight": [64, 128],
            f"blk.{i}.ffn_down.weight": [128, 64],
            f"blk.{i}.ffn_up.weight": [64, 128],
        }
    assert shapes == expected
    all_tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    assert all_tokens[:3] == ["<unk>", "<s>", "</s>"]
    assert all(f"<0x{b:02X}>" in all_tokens for b in range(256))
    assert reader.fields["tokenizer.ggml.model"].contents() == "llama"


# --- facts of valid files -------------------------------------------------------------------


def test_facts_of_tiny_model_match_gguf_reader(tiny_model: Path) -> None:
    facts = read_gguf_facts(tiny_model)
    reader = gguf.GGUFReader(tiny_model)
    assert facts.architecture == "llama"
    assert facts.name == "hive-tiny-llama"
    assert facts.gguf_version == 3
    assert facts.block_count == 2
    assert facts.embedding_length == 64
    assert facts.context_length == 256
    assert (facts.head_count, facts.head_count_kv) == (4, 2)
    assert facts.head_count == reader.fields["llama.attention.head_count"].contents()
    assert facts.head_count_kv == reader.fields["llama.attention.head_count_kv"].contents()
    assert facts.file_type == 0
    assert facts.quantization == "F32"
    assert facts.dominant_type == "F32"
    assert facts.tensor_count == len(reader.tensors) == 21
    assert facts.kv_count == reader.fields["GGUF.kv_count"].contents()
    assert facts.kv_count == len(reader.fields) - 3  # the reader adds version and both counts
    assert facts.parameter_count == sum(int(t.n_elements) for t in reader.tensors)
    assert facts.parameter_count_label == parameter_count_label(facts.parameter_count)


def test_facts_are_frozen(tiny_model: Path) -> None:
    facts = read_gguf_facts(tiny_model)
    with pytest.raises(ValueError, match="frozen"):
        facts.name = "other"  # type: ignore[misc]
    assert GgufFacts.model_validate(facts.model_dump()) == facts


def test_tensor_data_is_not_read(tiny_model: Path, tiny_bytes: bytes, tmp_path: Path) -> None:
    reader = gguf.GGUFReader(tiny_model)
    data = bytearray(tiny_bytes)
    data[reader.data_offset :] = bytes(len(data) - reader.data_offset)  # zero every weight
    path = tmp_path / "zeroed.gguf"
    path.write_bytes(bytes(data))
    assert read_gguf_facts(path) == read_gguf_facts(tiny_model)


def test_large_string_array_and_other_architecture(tmp_path: Path) -> None:
    path = tmp_path / "bert.gguf"
    writer = gguf.GGUFWriter(path, "bert")
    writer.add_name("big vocab")
    writer.add_context_length(512)
    writer.add_embedding_length(32)
    writer.add_block_count(3)
    writer.add_tokenizer_model("bert")
    writer.add_token_list([f"tok{i}" for i in range(50_000)])
    writer.add_token_scores([float(i) for i in range(50_000)])
    writer.add_array("test.nested", [[1, 2, 3], [4], ["a", "bc"]])
    writer.add_array("test.bytes", b"\x00\x01\x02")
    writer.add_string("test.text", "naïve ✓")
    rng = np.random.default_rng(0)
    writer.add_tensor("big_f16", rng.standard_normal((64, 96)).astype(np.float16))
    writer.add_tensor("small_f32", rng.standard_normal((3, 5, 7)).astype(np.float32))
    q8 = quantize(rng.standard_normal((4, 64)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("q8", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    facts = read_gguf_facts(path)
    assert facts.architecture == "bert"
    assert facts.name == "big vocab"
    assert (facts.context_length, facts.embedding_length, facts.block_count) == (512, 32, 3)
    assert facts.file_type is None
    assert facts.quantization == "F16"  # the dominant tensor type by bytes
    assert facts.tensor_count == 3
    assert facts.kv_count == 11  # general.architecture, general.name and the nine added above
    assert facts.parameter_count == 64 * 96 + 3 * 5 * 7 + 4 * 64
    assert facts.parameter_count_label == "6.5K"


def test_metadata_only_file(tmp_path: Path) -> None:
    path = tmp_path / "vocab.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    facts = read_gguf_facts(path)
    assert facts.tensor_count == 0
    assert facts.parameter_count is None
    assert facts.parameter_count_label is None
    assert facts.quantization == "Q4_K_M"
    assert facts.context_length is None
    assert (facts.head_count, facts.head_count_kv) == (None, None)


def _write(path: Path, arch: str, fill: Callable[[gguf.GGUFWriter], None], **kw: Any) -> Path:
    writer = gguf.GGUFWriter(path, arch, **kw)
    fill(writer)
    writer.add_string("test.after", "still read")  # a key after the head counts
    writer.add_name("after the head counts")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return path


_VT = gguf.GGUFValueType


@pytest.mark.parametrize(
    ("head_count", "head_count_kv", "item_type", "expected"),
    [
        (32, 8, None, (32, 8)),
        ([16, 16, 12, 16], [4, 0, 2, 4], None, (16, 4)),  # per layer (OpenELM, hybrids): max
        ([8, 8], [0, 0], _VT.UINT64, (8, 0)),
        ([7], [2, 3], _VT.UINT8, (7, 3)),
        ([7, 6], [-1, -3], _VT.INT16, (7, None)),  # negative: implausible, so unknown
        ([2.0, 4.0], [True], None, (None, None)),  # arrays of floats or bools say nothing
        (12, 4, _VT.UINT16, (12, 4)),  # scalars of other integer types
        (2**40, 4, _VT.UINT64, (2**40, 4)),
        (-2, 4, _VT.INT32, (None, 4)),
    ],
)
def test_head_counts(
    tmp_path: Path,
    head_count: Any,
    head_count_kv: Any,
    item_type: gguf.GGUFValueType | None,
    expected: tuple[int | None, ...],
) -> None:
    def fill(writer: gguf.GGUFWriter) -> None:
        writer.add_block_count(4)
        for suffix, value in (("head_count", head_count), ("head_count_kv", head_count_kv)):
            key = f"qwen2.attention.{suffix}"
            if isinstance(value, list):
                writer.add_key_value(key, value, _VT.ARRAY, sub_type=item_type)
            else:
                writer.add_key_value(key, value, item_type or _VT.get_type(value))

    facts = read_gguf_facts(_write(tmp_path / "heads.gguf", "qwen2", fill))
    assert (facts.head_count, facts.head_count_kv) == expected
    assert facts.name == "after the head counts"
    assert facts.block_count == 4


def test_head_counts_of_another_architecture_are_ignored(tmp_path: Path) -> None:
    def fill(writer: gguf.GGUFWriter) -> None:
        writer.add_uint32("llama.attention.head_count", 32)
        writer.add_array("llama.attention.head_count_kv", [8, 8])

    facts = read_gguf_facts(_write(tmp_path / "other.gguf", "gemma", fill))
    assert (facts.architecture, facts.head_count, facts.head_count_kv) == ("gemma", None, None)


def test_head_counts_big_endian(tmp_path: Path) -> None:
    def fill(writer: gguf.GGUFWriter) -> None:
        writer.add_head_count(40)
        writer.add_head_count_kv([10, 5, 10])

    path = _write(tmp_path / "be.gguf", "llama", fill, endianess=gguf.GGUFEndian.BIG)
    facts = read_gguf_facts(path)
    assert (facts.head_count, facts.head_count_kv) == (40, 10)


def test_overlong_per_layer_array_is_skipped_not_read(tmp_path: Path) -> None:
    def fill(writer: gguf.GGUFWriter) -> None:
        writer.add_array(
            "llama.attention.head_count", b"\x01" * (observer._MAX_PER_LAYER_ITEMS + 1)
        )
        writer.add_head_count_kv([1] * observer._MAX_PER_LAYER_ITEMS)

    facts = read_gguf_facts(_write(tmp_path / "long.gguf", "llama", fill))
    assert (facts.head_count, facts.head_count_kv) == (None, 1)
    assert facts.name == "after the head counts"


def test_empty_per_layer_array(tmp_path: Path) -> None:
    path = tmp_path / "empty.gguf"
    kv = _gguf_string("general.architecture") + struct.pack("<I", 8) + _gguf_string("llama")
    kv += _gguf_string("llama.attention.head_count") + struct.pack("<IIQ", 9, 4, 0)
    kv += _gguf_string("llama.attention.head_count_kv") + struct.pack("<III", 4, 2, 9)
    path.write_bytes(_header(kv_count=3) + kv + bytes(32))
    facts = read_gguf_facts(path)
    assert (facts.head_count, facts.head_count_kv) == (None, 2)


def test_per_layer_array_past_end_of_file(tmp_path: Path) -> None:
    path = tmp_path / "heads.gguf"
    kv = _gguf_string("general.architecture") + struct.pack("<I", 8) + _gguf_string("llama")
    kv += _gguf_string("llama.attention.head_count_kv") + struct.pack("<IIQ", 9, 4, 1000)
    path.write_bytes(_header(kv_count=2) + kv + struct.pack("<4I", 8, 8, 8, 8))
    error = _expect_gguf_error(path, contains="array count of 1000")
    assert "'llama.attention.head_count_kv'" in error.message


def test_big_endian_file(tmp_path: Path) -> None:
    path = tmp_path / "be.gguf"
    writer = gguf.GGUFWriter(path, "gpt2", endianess=gguf.GGUFEndian.BIG)
    writer.add_block_count(7)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_token_list(["a", "b"])
    writer.add_tensor("w", np.zeros((2, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    facts = read_gguf_facts(path)
    assert (facts.architecture, facts.block_count, facts.quantization) == ("gpt2", 7, "Q8_0")
    assert facts.parameter_count == 16


def test_version_2_is_read(tiny_bytes: bytes, tmp_path: Path) -> None:
    path = tmp_path / "v2.gguf"
    path.write_bytes(tiny_bytes[:4] + struct.pack("<I", 2) + tiny_bytes[8:])
    facts = read_gguf_facts(path)
    assert facts.gguf_version == 2
    assert facts.architecture == "llama"


def test_unknown_file_type_falls_back_to_dominant_tensor_type(tmp_path: Path) -> None:
    path = tmp_path / "ft.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_file_type(999)
    writer.add_tensor("w", np.zeros((4, 4), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    facts = read_gguf_facts(path)
    assert (facts.file_type, facts.quantization) == (999, "F16")


def test_custom_alignment(tmp_path: Path) -> None:
    path = tmp_path / "aligned.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_custom_alignment(256)
    writer.add_tensor("a", np.zeros(3, dtype=np.float32))
    writer.add_tensor("b", np.zeros((5, 7), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert read_gguf_facts(path).parameter_count == 3 + 35
    data = path.read_bytes()
    reader = gguf.GGUFReader(path)
    assert reader.data_offset % 256 == 0
    end_of_b = int(reader.tensors[1].data_offset) + int(reader.tensors[1].n_bytes)
    path.write_bytes(data[:end_of_b])  # trailing padding may go ...
    assert read_gguf_facts(path).parameter_count == 3 + 35
    path.write_bytes(data[: end_of_b - 1])  # ... tensor bytes may not
    _expect_gguf_error(path, contains="data of tensor 2 of 2 ends at byte")
    at = data.index(b"general.alignment") + len(b"general.alignment") + 4
    path.write_bytes(data[:at] + struct.pack("<I", 96) + data[at + 4 :])
    _expect_gguf_error(path, contains="general.alignment 96 is not a power of two")


def test_type_tables_match_gguf_py() -> None:
    for qtype, (block, type_size) in gguf.GGML_QUANT_SIZES.items():
        assert observer._GGML_TYPES[int(qtype)] == (qtype.name, block, type_size)
    assert len(observer._GGML_TYPES) == len(gguf.GGML_QUANT_SIZES)
    for ftype in gguf.LlamaFileType:
        if ftype is gguf.LlamaFileType.GUESSED:
            continue
        assert observer._FILE_TYPES[int(ftype)] == ftype.name.removeprefix("MOSTLY_").replace(
            "ALL_", ""
        )


@pytest.mark.parametrize(
    ("count", "label"),
    [
        (1_100_048_384, "1.1B"),
        (8_030_261_248, "8.0B"),
        (70_426_624, "70M"),
        (117_000, "117K"),
        (1_000_001, "1.0M"),
        (0, "0"),
    ],
)
def test_parameter_count_label_examples(count: int, label: str) -> None:
    assert parameter_count_label(count) == label


@given(st.integers(min_value=1, max_value=10**15))
def test_parameter_count_label_matches_gguf_py(count: int) -> None:
    assert parameter_count_label(count) == model_weight_count_rounded_notation(count)


# --- broken files ---------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    _expect_gguf_error(tmp_path / "absent.gguf", contains="cannot read")


def test_directory(tmp_path: Path) -> None:
    _expect_gguf_error(tmp_path, contains="cannot read")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    _expect_gguf_error(path, contains="empty")


def test_wrong_magic_says_so_without_the_files_bytes(tmp_path: Path) -> None:
    """Any readable file may be named as a source (/etc/shadow): none of its bytes are
    echoed into the error, the event or the status."""
    path = tmp_path / "model.gguf"
    path.write_bytes(b"Hunter2:$6$salt$hash:19000:0:99999:7:::\n")
    error = _expect_gguf_error(path, contains="not a GGUF file (no GGUF magic)")
    assert "Hunt" not in error.message
    assert "b'" not in error.message


@pytest.mark.parametrize(
    ("version", "contains"),
    [(1, "version 1 is not supported"), (4, "unsupported GGUF version 4"), (0, "version 0")],
)
def test_unsupported_versions(
    tiny_bytes: bytes, tmp_path: Path, version: int, contains: str
) -> None:
    path = tmp_path / "v.gguf"
    path.write_bytes(tiny_bytes[:4] + struct.pack("<I", version) + tiny_bytes[8:])
    _expect_gguf_error(path, contains=contains)


def test_every_truncation_is_an_error(tiny_model: Path, tiny_bytes: bytes, tmp_path: Path) -> None:
    reader = gguf.GGUFReader(tiny_model)
    end_of_data = max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors)
    assert end_of_data == len(tiny_bytes)
    cuts = list(range(2048))
    cuts += range(2048, reader.data_offset, 97)
    cuts += range(reader.data_offset, len(tiny_bytes), 4099)
    cuts += range(len(tiny_bytes) - 8, len(tiny_bytes))
    path = tmp_path / "cut.gguf"
    for cut in cuts:
        path.write_bytes(tiny_bytes[:cut])
        error = _expect_gguf_error(path)
        if cut == 0:
            assert "empty" in error.message
        elif cut < 4:
            assert "not a GGUF file" in error.message
        else:
            assert "truncated" in error.message or "past the end" in error.message, error


def _tokens_count_offset(data: bytes) -> int:
    key = b"tokenizer.ggml.tokens"
    at = data.index(key) + len(key)
    assert struct.unpack_from("<II", data, at) == (9, 8)  # an array of strings
    return at + 8


def test_huge_array_count(tiny_bytes: bytes, tmp_path: Path) -> None:
    at = _tokens_count_offset(tiny_bytes)
    path = tmp_path / "count.gguf"
    path.write_bytes(tiny_bytes[:at] + struct.pack("<Q", 2**60) + tiny_bytes[at + 8 :])
    error = _expect_gguf_error(path, contains=f"array count of {2**60}")
    assert "'tokenizer.ggml.tokens'" in error.message


def test_huge_fixed_size_array_count(tmp_path: Path) -> None:
    path = tmp_path / "fixed.gguf"
    kv = _gguf_string("a") + struct.pack("<IIQ", 9, 12, 2**60)  # array of float64
    path.write_bytes(_header() + kv + bytes(64))
    _expect_gguf_error(path, contains="past the end of the file")


def test_huge_string_length_in_array(tiny_bytes: bytes, tmp_path: Path) -> None:
    at = _tokens_count_offset(tiny_bytes) + 8  # the first token's length
    path = tmp_path / "strlen.gguf"
    path.write_bytes(tiny_bytes[:at] + struct.pack("<Q", 2**60) + tiny_bytes[at + 8 :])
    _expect_gguf_error(path, contains=f"string of length {2**60}")


def test_huge_key_length(tiny_bytes: bytes, tmp_path: Path) -> None:
    path = tmp_path / "keylen.gguf"
    path.write_bytes(tiny_bytes[:24] + struct.pack("<Q", 2**63 + 5) + tiny_bytes[32:])
    _expect_gguf_error(path, contains="key 1 of")


@pytest.mark.parametrize(("field", "offset"), [("tensor count", 8), ("key/value count", 16)])
def test_huge_header_counts(tiny_bytes: bytes, tmp_path: Path, field: str, offset: int) -> None:
    path = tmp_path / "counts.gguf"
    path.write_bytes(tiny_bytes[:offset] + struct.pack("<Q", 2**60) + tiny_bytes[offset + 8 :])
    _expect_gguf_error(path, contains=f"{field} of {2**60}")


def test_string_value_past_end_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "kv.gguf"
    kv = _gguf_string("general.name") + struct.pack("<IQ", 8, 1000) + b"short"
    path.write_bytes(_header(kv_count=1) + kv + bytes(40))
    error = _expect_gguf_error(path, contains="string length of 1000 at byte 48 runs past")
    assert "while reading key 1 of 1 ('general.name')" in error.message


def test_unknown_value_type(tmp_path: Path) -> None:
    path = tmp_path / "vt.gguf"
    path.write_bytes(_header() + _gguf_string("x") + struct.pack("<I", 77) + bytes(32))
    _expect_gguf_error(path, contains="unknown value type 77")


def test_invalid_utf8_key(tmp_path: Path) -> None:
    path = tmp_path / "utf.gguf"
    key = b"\xff\xfe"
    path.write_bytes(_header() + struct.pack("<Q", 2) + key + struct.pack("<IB", 0, 1))
    _expect_gguf_error(path, contains="not valid UTF-8")


def test_too_many_dimensions(tmp_path: Path) -> None:
    path = tmp_path / "dims.gguf"
    info = _gguf_string("t") + struct.pack("<I", 5) + struct.pack("<5Q", 1, 1, 1, 1, 1)
    info += struct.pack("<IQ", 0, 0)
    path.write_bytes(_header(tensor_count=1, kv_count=0) + info + bytes(64))
    _expect_gguf_error(path, contains="5 dimensions")


def test_tensor_data_past_end_of_file(tmp_path: Path) -> None:
    path = tmp_path / "data.gguf"
    info = _gguf_string("t") + struct.pack("<I", 2) + struct.pack("<2Q", 1000, 1000)
    info += struct.pack("<IQ", 0, 0)
    path.write_bytes(_header(tensor_count=1, kv_count=0) + info + bytes(64))
    _expect_gguf_error(path, contains="data of tensor 1 of 1 ends at byte")


def test_deeply_nested_arrays_do_not_recurse(tmp_path: Path) -> None:
    depth = 20_000
    nested = struct.pack("<IQ", 9, 1) * depth + struct.pack("<IQ", 0, 0)
    path = tmp_path / "nested.gguf"
    path.write_bytes(_header() + _gguf_string("deep") + struct.pack("<I", 9) + nested)
    facts = read_gguf_facts(path)
    assert (facts.kv_count, facts.tensor_count) == (1, 0)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def header_end(tiny_model: Path) -> int:
    return int(gguf.GGUFReader(tiny_model).data_offset)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_header_gives_facts_or_gguf_error(
    data: st.DataObject, tiny_bytes: bytes, header_end: int, fuzz_dir: Path
) -> None:
    flips = data.draw(
        st.lists(
            st.tuples(st.integers(0, header_end - 1), st.integers(1, 255)),
            min_size=1,
            max_size=8,
        )
    )
    mutated = bytearray(tiny_bytes)
    for at, mask in flips:
        mutated[at] ^= mask
    path = fuzz_dir / "fuzzed.gguf"
    path.write_bytes(bytes(mutated))
    outcome: GgufFacts | GgufError
    try:
        outcome = read_gguf_facts(path)
    except GgufError as e:  # Any other exception type fails the test.
        outcome = e
    if isinstance(outcome, GgufError):
        assert outcome.message.startswith(f"{path}: ")
    else:
        assert outcome.tensor_count <= len(mutated) // 24
        assert outcome.kv_count <= len(mutated) // 13
