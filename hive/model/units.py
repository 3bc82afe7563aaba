"""Units hive shows sizes in: one formatter, used by the narration and by the CLI's tables,
so a model's size reads the same in the log and in `hive get models`."""

from __future__ import annotations

#: A decimal megabyte, as disks and download sizes are counted.
MB = 1_000_000


def megabytes(n: int) -> str:
    """Bytes as decimal megabytes: one decimal below 100 MB (`0.5 MB`), whole above
    (`4,370 MB`)."""
    if n < 100 * MB:
        return f"{n / MB:.1f} MB"
    return f"{n // MB:,} MB"
