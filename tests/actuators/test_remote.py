"""Choosing files on the hub: quantization tags as llama.cpp's `-hf repo:quant` picks them,
and the parts of split models."""

from __future__ import annotations

import pytest

from hive.actuators.remote import AmbiguousSource, RemoteNotFound, pick_quant, split_parts
from hive.errors import PermanentError

FILES = [
    "README.md",
    "tiny.Q4_K_M.gguf",
    "tiny.Q8_0.gguf",
    "tiny.IQ4_XS.gguf",
    "big-Q5_K_M-00001-of-00002.gguf",
    "big-Q5_K_M-00002-of-00002.gguf",
]


@pytest.mark.parametrize(
    ("quant", "expected"),
    [
        ("Q4_K_M", "tiny.Q4_K_M.gguf"),
        ("q8_0", "tiny.Q8_0.gguf"),
        ("IQ4_XS", "tiny.IQ4_XS.gguf"),
        ("Q5_K_M", "big-Q5_K_M-00001-of-00002.gguf"),
    ],
)
def test_pick_quant(quant: str, expected: str) -> None:
    assert pick_quant(FILES, quant, repo="org/r") == expected


def test_a_missing_quant_lists_what_is_there() -> None:
    with pytest.raises(RemoteNotFound) as info:
        pick_quant(FILES, "Q2_K", repo="org/r")
    assert "IQ4_XS, Q4_K_M, Q5_K_M, Q8_0" in info.value.message


def test_an_ambiguous_quant_names_the_candidates() -> None:
    files = ["a.Q4_K_M.gguf", "b.Q4_K_M.gguf"]
    with pytest.raises(AmbiguousSource) as info:
        pick_quant(files, "Q4_K_M", repo="org/r")
    assert "a.Q4_K_M.gguf, b.Q4_K_M.gguf" in info.value.message


def test_split_parts_from_any_part() -> None:
    assert split_parts("d/m-00002-of-00003.gguf") == [
        "d/m-00001-of-00003.gguf",
        "d/m-00002-of-00003.gguf",
        "d/m-00003-of-00003.gguf",
    ]
    assert split_parts("m.gguf") == ["m.gguf"]
    with pytest.raises(PermanentError):
        split_parts("m-00001-of-00000.gguf")
