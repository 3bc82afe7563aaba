"""`python -m benchmarks [--quick] [--only B1|B2|B3|B4|B5] [--json PATH]`: run the benchmarks
and print one table (hive, its peer, and the ratio peer/hive); B5 also measures B6 and B7.
Benchmarks, not tests: timings never fail the run."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

from benchmarks import Row, b1_reaction, b2_gguf_header, b3_download, b4_scale, b5_to_b7, log


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _ratio(row: Row) -> str:
    r = row.ratio
    if r is None:
        return "-"
    return f"{r:,.0f}x" if r >= 100 else f"{r:.2f}x"


def table(rows: list[Row]) -> str:
    header = ["bench", "metric", "hive", "unit", "peer", "peer value", "peer/hive", "goal"]
    lines = [header]
    for row in rows:
        lines.append(
            [
                row.bench,
                row.metric,
                _num(row.value),
                row.unit,
                row.peer or "-",
                _num(row.peer_value),
                _ratio(row),
                row.goal or "-",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    out.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in out)


def machine() -> dict[str, str]:
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "cpus": str(os.cpu_count()),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true", help="fewer trials, a shorter idle window")
    p.add_argument(
        "--only",
        choices=["B1", "B2", "B3", "B4", "B5"],
        action="append",
        help="run only these (B5: workers, with B6 and B7)",
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the rows as JSON")
    args = p.parse_args(argv)
    chosen = set(args.only or ["B1", "B2", "B3", "B4", "B5"])
    started = time.monotonic()
    rows: list[Row] = []
    if "B1" in chosen:
        rows += b1_reaction.run(quick=args.quick)
    if "B2" in chosen:
        rows += b2_gguf_header.run(quick=args.quick)
    if "B3" in chosen:
        rows += b3_download.run(quick=args.quick)
    if "B4" in chosen:
        rows += b4_scale.run(quick=args.quick)
    if "B5" in chosen:
        rows += b5_to_b7.run(quick=args.quick)
    elapsed = time.monotonic() - started
    info = machine()
    log(f"done in {elapsed:.0f} s")
    print(
        f"hive benchmarks ({'quick' if args.quick else 'full'}), {info['date']}, "
        f"{info['cpus']} CPUs, Python {info['python']}, {info['platform']}"
    )
    print(table(rows))
    print("peer/hive > 1 means hive is faster (or smaller) than the peer by that factor.")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "quick": args.quick,
                    "seconds": elapsed,
                    "rows": [r.as_dict() for r in rows],
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
