"""Units hive shows sizes in: the one formatter, used by the narration, the errors and the
CLI's tables, so a model's size reads the same in the log, in a message and in
`hive get models`."""

from __future__ import annotations

from typing import Literal

#: A decimal megabyte, as disks and download sizes are counted.
MB = 1_000_000
#: A mebibyte, as GPU memory is counted (nvidia-smi's unit), shown as `MiB`.
MIB = 1 << 20


def megabytes(n: int, *, scale: int | None = None) -> str:
    """Bytes as decimal megabytes: one decimal below 100 MB (`0.5 MB`), whole above
    (`4,370 MB`). `scale`: the precision chosen as for that many bytes, so that a part
    reads like its whole (`19 MB / 200 MB`, not `19.0 MB / 200 MB`)."""
    if (n if scale is None else scale) < 100 * MB:
        return f"{n / MB:.1f} MB"
    return f"{n // MB:,} MB"


def megabytes_of(done: int, total: int | None) -> str:
    """How far along: `19 MB / 200 MB` (the part in the precision of the whole), or
    `19.0 MB / ? MB` when the whole is unknown."""
    if not total:
        return f"{megabytes(done)} / ? MB"
    return f"{megabytes(done, scale=total)} / {megabytes(total)}"


def mebibytes(n: int, *, rounding: Literal["nearest", "up", "down"] = "nearest") -> str:
    """Memory (VRAM, RAM) in whole mebibytes with thousands separators (`5,120 MiB`); a
    file's size is `megabytes`. A comparison rounds what is needed `up` and what is free
    `down`, so that a misfit never reads `needs 5 MiB but 5 MiB free`."""
    if rounding == "up":
        whole = -(-n // MIB)
    elif rounding == "down":
        whole = n // MIB
    else:
        whole = round(n / MIB)
    return f"{whole:,} MiB"


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float:
    """Seconds from a number or a Go-style duration as Flux and Kubernetes write them:
    `60`, `60s`, `1.5m`, `1h30m`, `500ms`; ValueError with an example otherwise."""
    if isinstance(value, bool):
        raise ValueError("is a boolean; give seconds (60) or a duration (60s, 5m, 1h)")
    if isinstance(value, int | float):
        return _finite(float(value))
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return _finite(seconds)
    total, rest = 0.0, text
    while rest:
        number = len(rest) - len(rest.lstrip("0123456789."))
        unit = next((u for u in ("ms", "s", "m", "h") if rest[number:].startswith(u)), None)
        if number == 0 or unit is None or rest[:number].count(".") > 1:
            raise ValueError(
                f"{text[:40]!r} is not a duration: give seconds (60) or a number with a "
                "unit: 500ms, 60s, 5m, 1h, 1h30m"
            )
        total += float(rest[:number]) * _DURATION_UNITS[unit]
        rest = rest[number + len(unit) :]
    return total


def _finite(seconds: float) -> float:
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise ValueError("is not a finite number of seconds")
    return seconds
