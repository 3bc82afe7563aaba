"""One formatter of sizes: the log, the messages and the tables say a size alike."""

from __future__ import annotations

import pytest

from hive.model.units import MIB, mebibytes, megabytes, megabytes_of


@pytest.mark.parametrize(
    ("n", "shown"),
    [
        (534_752, "0.5 MB"),
        (30_000_000, "30.0 MB"),
        (99_999_999, "100.0 MB"),
        (100_000_000, "100 MB"),
        (4_370_000_000, "4,370 MB"),
    ],
)
def test_megabytes(n: int, shown: str) -> None:
    assert megabytes(n) == shown


def test_a_part_reads_in_the_precision_of_its_whole() -> None:
    assert megabytes_of(19_000_000, 200_000_000) == "19 MB / 200 MB"
    assert megabytes_of(250_000, 534_752) == "0.2 MB / 0.5 MB"
    assert megabytes_of(4_000_000_000, 4_370_000_000) == "4,000 MB / 4,370 MB"
    assert megabytes_of(19_000_000, None) == "19.0 MB / ? MB"


def test_mebibytes_round_as_asked() -> None:
    n = 5 * MIB + 1
    assert mebibytes(n) == "5 MiB"
    assert mebibytes(n, rounding="up") == "6 MiB"
    assert mebibytes(6 * MIB - 1, rounding="down") == "5 MiB"
    assert mebibytes(5120 * MIB) == "5,120 MiB"
