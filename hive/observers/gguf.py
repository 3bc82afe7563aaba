"""Fast, defensive GGUF header parser (stdlib mmap + struct, no tensor data read).

Observers call `read_gguf_facts` on a model file on disk; its `GgufFacts` feed status and placement.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import ValidationError

from hive.errors import GgufError
from hive.model.gguf import GgufFacts, parameter_count_label
from hive.model.text import clip, show

__all__ = ["read_gguf_facts"]

_MAGIC = b"GGUF"
_SUPPORTED_VERSIONS = (2, 3)
_DEFAULT_ALIGNMENT = 32
_MAX_DIMS = 4  # GGML_MAX_DIMS

# GGUF metadata value types.
_T_BOOL = 7
_T_STRING = 8
_T_ARRAY = 9
# Fixed-size value types: type -> (struct code, size in bytes).
_FIXED: dict[int, tuple[str, int]] = {
    0: ("B", 1),  # UINT8
    1: ("b", 1),  # INT8
    2: ("H", 2),  # UINT16
    3: ("h", 2),  # INT16
    4: ("I", 4),  # UINT32
    5: ("i", 4),  # INT32
    6: ("f", 4),  # FLOAT32
    _T_BOOL: ("?", 1),
    10: ("Q", 8),  # UINT64
    11: ("q", 8),  # INT64
    12: ("d", 8),  # FLOAT64
}
_INTEGER_TYPES = frozenset({0, 1, 2, 3, 4, 5, 10, 11})
# Smallest encoding of one array item, by item type: bounds an array's count by the bytes left.
_MIN_ITEM_SIZE = {**{t: size for t, (_, size) in _FIXED.items()}, _T_STRING: 8, _T_ARRAY: 12}

_QK_K = 256
# ggml tensor types: id -> (name, elements per block, bytes per block). Mirrors ggml.h.
_GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 2 + 16),
    3: ("Q4_1", 32, 2 + 2 + 16),
    6: ("Q5_0", 32, 2 + 4 + 16),
    7: ("Q5_1", 32, 2 + 2 + 4 + 16),
    8: ("Q8_0", 32, 2 + 32),
    9: ("Q8_1", 32, 4 + 4 + 32),
    10: ("Q2_K", 256, 2 + 2 + _QK_K // 16 + _QK_K // 4),
    11: ("Q3_K", 256, 2 + _QK_K // 4 + _QK_K // 8 + 12),
    12: ("Q4_K", 256, 2 + 2 + _QK_K // 2 + 12),
    13: ("Q5_K", 256, 2 + 2 + _QK_K // 2 + _QK_K // 8 + 12),
    14: ("Q6_K", 256, 2 + _QK_K // 2 + _QK_K // 4 + _QK_K // 16),
    15: ("Q8_K", 256, 4 + _QK_K + _QK_K // 8),
    16: ("IQ2_XXS", 256, 2 + _QK_K // 4),
    17: ("IQ2_XS", 256, 2 + _QK_K // 4 + _QK_K // 32),
    18: ("IQ3_XXS", 256, 2 + _QK_K // 4 + _QK_K // 8),
    19: ("IQ1_S", 256, 2 + _QK_K // 8 + _QK_K // 16),
    20: ("IQ4_NL", 32, 2 + 16),
    21: ("IQ3_S", 256, 2 + _QK_K // 4 + _QK_K // 8 + _QK_K // 32 + 4),
    22: ("IQ2_S", 256, 2 + _QK_K // 4 + _QK_K // 16),
    23: ("IQ4_XS", 256, 2 + 2 + _QK_K // 2 + _QK_K // 64),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, _QK_K // 8 + _QK_K // 16 + _QK_K // 32),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 2 + 4 * 13),
    35: ("TQ2_0", 256, 2 + 64),
    39: ("MXFP4", 32, 1 + 16),
    40: ("NVFP4", 64, 4 + 32),
    41: ("Q1_0", 128, 2 + 16),
}

# llama.cpp's LLAMA_FTYPE numbering (general.file_type) -> quantization name.
_FILE_TYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    4: "Q4_1_SOME_F16",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    33: "Q4_0_4_4",
    34: "Q4_0_4_8",
    35: "Q4_0_8_8",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
    39: "NVFP4",
    40: "Q1_0",
}

# Smallest encodings: a key/value pair (key length, empty key, type, one-byte value) and a
# tensor info (name length, empty name, n_dims, type, offset). They bound the header counts.
_MIN_KV_SIZE = 8 + 4 + 1
_MIN_TENSOR_INFO_SIZE = 8 + 4 + 4 + 8

_ARCH_KEYS = (
    "context_length",
    "embedding_length",
    "block_count",
    "attention.head_count",
    "attention.head_count_kv",
)
# Keys that some models store as one integer per layer (OpenELM, hybrid models): the largest
# value is kept. Longer arrays than this are skipped, not read, so a corrupt count costs nothing.
_PER_LAYER_KEYS = ("attention.head_count", "attention.head_count_kv")
_MAX_PER_LAYER_ITEMS = 1 << 16


class _Bad(Exception):
    """Internal: the file is truncated or corrupt at the cursor; `detail` says how."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class _Cursor:
    """A position in the mapped file with bounds-checked reads."""

    def __init__(self, buf: mmap.mmap, *, big_endian: bool) -> None:
        self.buf = buf
        self.size = len(buf)
        self.pos = 0
        order = ">" if big_endian else "<"
        self.u32 = struct.Struct(order + "I")
        self.u64 = struct.Struct(order + "Q")
        self.order = order

    def need(self, n: int) -> None:
        if n > self.size - self.pos:
            raise _Bad(f"truncated at byte {self.size} (needed {n} bytes at byte {self.pos})")

    def read_u32(self) -> int:
        self.need(4)
        (value,) = self.u32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return int(value)

    def read_u64(self) -> int:
        self.need(8)
        (value,) = self.u64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return int(value)

    def read_count(self, *, item_size: int, what: str) -> int:
        """Read a u64 count of items at least `item_size` bytes each that must fit in the file."""
        start = self.pos
        count = self.read_u64()
        if count * item_size > self.size - self.pos:
            raise _Bad(
                f"{what} of {count} at byte {start} runs past the end of the file"
                f" ({self.size} bytes)"
            )
        return count

    def read_bytes(self, *, what: str) -> bytes:
        """Read a GGUF string (u64 length + bytes) as raw bytes."""
        length = self.read_count(item_size=1, what=f"{what} length")
        data = self.buf[self.pos : self.pos + length]
        self.pos += length
        return data

    def skip_string(self) -> None:
        self.read_count(item_size=1, what="string length")
        # read_count checked the length fits; skip it without copying.
        self.pos += self.u64.unpack_from(self.buf, self.pos - 8)[0]

    def read_scalar(self, value_type: int) -> int | float | bool:
        code, size = _FIXED[value_type]
        self.need(size)
        value: int | float | bool = struct.unpack_from(self.order + code, self.buf, self.pos)[0]
        self.pos += size
        return value

    def read_value_type(self) -> int:
        start = self.pos
        value_type = self.read_u32()
        if value_type not in _MIN_ITEM_SIZE:
            raise _Bad(f"unknown value type {value_type} at byte {start}")
        return value_type

    def read_int_array_max(self) -> int | None:
        """The largest item of an integer array (type tag already read); None when the array
        is empty, holds something other than integers, or is implausibly long (then skipped)."""
        start = self.pos
        item_type, count = self._array_header()
        if item_type not in _INTEGER_TYPES or count == 0 or count > _MAX_PER_LAYER_ITEMS:
            self.pos = start
            self.skip_array()
            return None
        code, size = _FIXED[item_type]
        # _array_header checked that count * size fits in the file.
        items = struct.unpack_from(f"{self.order}{count}{code}", self.buf, self.pos)
        self.pos += count * size
        return int(max(items))

    def skip_array(self) -> None:
        """Skip an array's payload (type tag already read), walking only what must be walked."""
        # An explicit stack instead of recursion: nested arrays cannot exhaust Python's stack.
        stack = [self._array_header()]
        while stack:
            item_type, remaining = stack[-1]
            if item_type == _T_ARRAY:
                if remaining == 0:
                    stack.pop()
                else:
                    stack[-1] = (item_type, remaining - 1)
                    stack.append(self._array_header())
                continue
            stack.pop()
            if item_type == _T_STRING:
                self._skip_strings(remaining)
            else:
                # _array_header checked that count * size fits in the file.
                self.pos += remaining * _FIXED[item_type][1]

    def _array_header(self) -> tuple[int, int]:
        item_type = self.read_value_type()
        count = self.read_count(item_size=_MIN_ITEM_SIZE[item_type], what="array count")
        return item_type, count

    def _skip_strings(self, count: int) -> None:
        buf, size, unpack = self.buf, self.size, self.u64.unpack_from
        pos = self.pos
        for _ in range(count):
            if pos + 8 > size:
                raise _Bad(f"truncated at byte {size} in a string array (string at byte {pos})")
            (length,) = unpack(buf, pos)
            pos += 8 + length
            if pos > size:
                raise _Bad(
                    f"string of length {length} at byte {pos - 8 - length} runs past"
                    f" the end of the file ({size} bytes)"
                )
        self.pos = pos


def _fail(path: Path, detail: str) -> GgufError:
    return GgufError(f"{path}: {detail}")


@contextmanager
def _mapped(path: Path) -> Iterator[mmap.mmap]:
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            if size == 0:
                raise _fail(path, "empty file, not a GGUF file")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                yield buf
    except OSError as e:
        raise _fail(path, f"cannot read file: {e.strerror or e}") from e


def read_gguf_facts(path: Path) -> GgufFacts:
    """Parse the header of the GGUF file at `path`; tensor data is never read.

    Raises `GgufError` (and nothing else) naming the file and the problem when the file is
    missing, unreadable, empty, not GGUF, an unsupported version, truncated or corrupt.
    """
    try:
        with _mapped(path) as buf:
            return _parse(path, buf)
    except GgufError:
        raise
    except _Bad as e:  # Every read is inside a handler that names its place; this is a backstop.
        raise _fail(path, e.detail) from None
    except (struct.error, UnicodeDecodeError, ValueError, OverflowError, MemoryError) as e:
        raise _fail(path, f"corrupt GGUF file ({type(e).__name__}: {clip(str(e))})") from e


def _parse(path: Path, buf: mmap.mmap) -> GgufFacts:
    size = len(buf)
    if size < 4 or buf[:4] != _MAGIC:
        # Never the bytes themselves: the file may be anything readable (/etc/shadow).
        raise _fail(path, "not a GGUF file (no GGUF magic)")
    if size < 8:
        raise _fail(path, f"truncated at byte {size} while reading the version")
    version = struct.unpack_from("<I", buf, 4)[0]
    big_endian = False
    if version not in (1, *_SUPPORTED_VERSIONS):
        swapped = struct.unpack_from(">I", buf, 4)[0]
        if swapped in _SUPPORTED_VERSIONS:
            version, big_endian = swapped, True
    if version == 1:
        raise _fail(path, "GGUF version 1 is not supported (only versions 2 and 3)")
    if version not in _SUPPORTED_VERSIONS:
        raise _fail(path, f"unsupported GGUF version {version} (only versions 2 and 3)")

    cur = _Cursor(buf, big_endian=big_endian)
    cur.pos = 8
    try:
        tensor_count = cur.read_count(item_size=_MIN_TENSOR_INFO_SIZE, what="tensor count")
        kv_count = cur.read_count(item_size=_MIN_KV_SIZE, what="key/value count")
    except _Bad as e:
        raise _fail(path, f"{e.detail} while reading the header counts") from None

    strings: dict[str, str] = {}
    integers: dict[str, int] = {}
    for index in range(kv_count):
        key = None
        try:
            key = cur.read_bytes(what="key").decode("utf-8")
            value_type = cur.read_value_type()
            if value_type == _T_ARRAY:
                if key.endswith(_PER_LAYER_KEYS):
                    largest = cur.read_int_array_max()
                    if largest is not None:
                        integers[key] = largest
                else:
                    cur.skip_array()
            elif value_type == _T_STRING:
                if key in ("general.architecture", "general.name"):
                    strings[key] = cur.read_bytes(what="string").decode("utf-8")
                else:
                    cur.skip_string()
            elif value_type in _INTEGER_TYPES and _wanted_integer(key):
                integers[key] = int(cur.read_scalar(value_type))
            else:
                cur.pos += _FIXED[value_type][1]
                if cur.pos > size:
                    raise _Bad(f"truncated at byte {size}")
        except _Bad as e:
            where = f"key {index + 1} of {kv_count}" + (f" ({show(key)})" if key else "")
            raise _fail(path, f"{e.detail} while reading {where}") from None
        except UnicodeDecodeError:
            what = f"value of key {show(key)}" if key else "key name"
            raise _fail(
                path, f"{what} is not valid UTF-8 (key {index + 1} of {kv_count})"
            ) from None

    alignment = integers.get("general.alignment", _DEFAULT_ALIGNMENT)
    if alignment <= 0 or alignment & (alignment - 1):
        raise _fail(path, f"general.alignment {alignment} is not a power of two")

    tensors: list[tuple[int, int, int]] = []  # (ggml type, element count, data offset)
    for index in range(tensor_count):
        try:
            cur.read_bytes(what="tensor name")
            start = cur.pos
            n_dims = cur.read_u32()
            if n_dims > _MAX_DIMS:
                raise _Bad(f"{n_dims} dimensions at byte {start} (at most {_MAX_DIMS})")
            elements = 1
            for _ in range(n_dims):
                dim = cur.read_u64()
                if dim >= 2**63:
                    raise _Bad(f"dimension {dim} at byte {cur.pos - 8} is out of range")
                elements *= dim
            ggml_type = cur.read_u32()
            offset = cur.read_u64()
        except _Bad as e:
            raise _fail(
                path, f"{e.detail} while reading tensor info {index + 1} of {tensor_count}"
            ) from None
        tensors.append((ggml_type, elements, offset))

    data_start = -(-cur.pos // alignment) * alignment
    bytes_by_type: dict[int, int] = {}
    for index, (ggml_type, elements, offset) in enumerate(tensors):
        if ggml_type not in _GGML_TYPES:
            continue  # A type newer than this table: counted, but its size is unknown.
        _, block, type_size = _GGML_TYPES[ggml_type]
        nbytes = -(-elements // block) * type_size
        end = data_start + offset + nbytes
        if end > size:
            raise _fail(
                path,
                f"truncated: data of tensor {index + 1} of {tensor_count} ends at byte {end}"
                f" but the file has {size} bytes",
            )
        bytes_by_type[ggml_type] = bytes_by_type.get(ggml_type, 0) + nbytes

    architecture = strings.get("general.architecture")
    file_type = integers.get("general.file_type")
    dominant_type: str | None = None
    if bytes_by_type:
        dominant = max(bytes_by_type, key=lambda t: (bytes_by_type[t], -t))
        dominant_type = _GGML_TYPES[dominant][0]
    quantization = _FILE_TYPES.get(file_type) if file_type is not None else None
    if quantization is None:
        quantization = dominant_type
    parameter_count = sum(elements for _, elements, _ in tensors) if tensors else None

    def arch_int(suffix: str) -> int | None:
        value = integers.get(f"{architecture}.{suffix}") if architecture else None
        return value if value is not None and value >= 0 else None

    try:
        return GgufFacts(
            gguf_version=version,
            tensor_count=tensor_count,
            kv_count=kv_count,
            architecture=architecture,
            name=strings.get("general.name"),
            file_type=file_type,
            quantization=quantization,
            dominant_type=dominant_type,
            parameter_count=parameter_count,
            parameter_count_label=(
                parameter_count_label(parameter_count) if parameter_count is not None else None
            ),
            context_length=arch_int("context_length"),
            embedding_length=arch_int("embedding_length"),
            block_count=arch_int("block_count"),
            head_count=arch_int("attention.head_count"),
            head_count_kv=arch_int("attention.head_count_kv"),
        )
    except ValidationError as e:
        raise _fail(path, f"implausible header values: {e}") from None


def _wanted_integer(key: str) -> bool:
    return key in ("general.file_type", "general.alignment") or key.endswith(_ARCH_KEYS)
