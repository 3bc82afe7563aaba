"""Run the benchmarks and print one table (hive, its peer, and the ratio peer/hive); B5 also
measures B6 and B7. Benchmarks, not tests: timings never fail the run.

    python -m benchmarks [--quick] [--only B1|B2|B3|B4|B5|B8|B9|B10|B10-100|B11|B12 ...]
                         [--hive-tree DIR]
                         [--json PATH]
    python -m benchmarks compare --before DIR [--after DIR] [--quick] [--only ...] [--repeat K]

`--hive-tree DIR` measures the hive package of another checkout (a `git worktree`): every
hive process imports DIR's `hive/`. `compare` runs each benchmark for the tree before and
the tree after, one after the other (the order alternating), and prints each hive number
of both and the ratio after/before."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Protocol

from benchmarks import (
    HERE,
    Row,
    Tree,
    b1_reaction,
    b2_gguf_header,
    b3_download,
    b4_scale,
    b5_to_b7,
    b8_fanout,
    b9_jobs,
    b10_git,
    b11_dashboard,
    b12_first_token,
    log,
)


class Benchmark(Protocol):
    def __call__(self, *, quick: bool, tree: Tree) -> list[Row]: ...


#: Each benchmark's run, by the name `--only` takes (B5 measures B6 and B7 too).
BENCHMARKS: dict[str, Benchmark] = {
    "B1": b1_reaction.run,
    "B2": b2_gguf_header.run,
    "B3": b3_download.run,
    "B4": b4_scale.run,
    "B5": b5_to_b7.run,
    "B8": b8_fanout.run,
    "B9": b9_jobs.run,
    "B10": b10_git.run,
    "B10-100": b10_git.run_hundred,
    "B11": b11_dashboard.run,
    "B12": b12_first_token.run,
}

#: Run only when `--only` names them (B10-100: 100 hives, several minutes).
OPT_IN = {"B10-100"}


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


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="fewer trials, a shorter idle window")
    p.add_argument(
        "--only",
        choices=list(BENCHMARKS),
        action="append",
        help="run only these (B5: workers, with B6 and B7; B10-100, 100 hives, only when named)",
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the rows as JSON")


def _tree(path: Path | None, label: str) -> Tree:
    if path is None:
        return HERE
    tree = Tree(root=path.resolve(), label=label)
    tree.check()
    return tree


def _header(kind: str, quick: bool, elapsed: float) -> dict[str, str]:
    info = machine()
    log(f"done in {elapsed:.0f} s")
    print(
        f"hive benchmarks{kind} ({'quick' if quick else 'full'}), {info['date']}, "
        f"{info['cpus']} CPUs, Python {info['python']}, {info['platform']}"
    )
    return info


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["compare"]:
        return compare(argv[1:])
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(p)
    p.add_argument(
        "--hive-tree", type=Path, metavar="DIR", help="measure DIR's hive (default: this one)"
    )
    args = p.parse_args(argv)
    tree = _tree(args.hive_tree, f"hive of {args.hive_tree}")
    chosen = args.only or [b for b in BENCHMARKS if b not in OPT_IN]
    started = time.monotonic()
    rows: list[Row] = []
    for name in BENCHMARKS:
        if name in chosen:
            rows += BENCHMARKS[name](quick=args.quick, tree=tree)
    elapsed = time.monotonic() - started
    info = _header("" if tree is HERE else f" of {tree.root}", args.quick, elapsed)
    print(table(rows))
    print("peer/hive > 1 means hive is faster (or smaller) than the peer by that factor.")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "quick": args.quick,
                    "seconds": elapsed,
                    "tree": str(tree.root),
                    "rows": [r.as_dict() for r in rows],
                },
                indent=2,
            )
            + "\n"
        )
    return 0


def compare(argv: list[str]) -> int:
    """Both trees' runs of each benchmark, one after the other in this run; `--repeat`
    runs them again with the order swapped (before, after, after, before, ...)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks compare", description=compare.__doc__)
    _common(p)
    p.add_argument("--before", type=Path, required=True, metavar="DIR", help="the old tree")
    p.add_argument(
        "--after", type=Path, metavar="DIR", help="the new tree (default: this checkout)"
    )
    p.add_argument("--repeat", type=int, default=1, metavar="K", help="runs of each tree")
    args = p.parse_args(argv)
    before = _tree(args.before, f"before ({args.before})")
    after = _tree(args.after, f"after ({args.after or 'this tree'})")
    chosen = args.only or [b for b in BENCHMARKS if b not in OPT_IN]
    started = time.monotonic()
    runs: dict[str, dict[str, list[list[Row]]]] = {}
    for name in BENCHMARKS:
        if name not in chosen:
            continue
        got = runs.setdefault(name, {"before": [], "after": []})
        for k in range(args.repeat):
            pair = [("before", before), ("after", after)]
            for label, tree in pair if k % 2 == 0 else pair[::-1]:
                log(f"compare: {name}, {tree.label}, run {k + 1} of {args.repeat}")
                got[label].append(BENCHMARKS[name](quick=args.quick, tree=tree))
    elapsed = time.monotonic() - started
    info = _header(f": {after.root} against {before.root}", args.quick, elapsed)
    lines = compared(runs)
    print(compare_table(lines))
    print(
        "after/before < 1: the new tree's number is smaller (for a time: faster). "
        "peer/hive: as in a plain run, per tree (median over the runs)."
    )
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {"machine": info, "quick": args.quick, "seconds": elapsed, "rows": lines},
                indent=2,
            )
            + "\n"
        )
    return 0


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def compared(runs: dict[str, dict[str, list[list[Row]]]]) -> list[dict[str, object]]:
    """One line per row of the benchmarks: hive's number in each tree (the median over the
    runs), after/before, and the ratio to the peer in each tree. Rows are matched by
    benchmark, metric and peer; a row only one tree gave is listed with the other blank."""
    out: list[dict[str, object]] = []
    for got in runs.values():
        # (bench, metric, peer, which of the rows with these three), then by tree.
        keyed: dict[tuple[str, str, str, int], dict[str, list[Row]]] = {}
        for label in ("before", "after"):
            for rows in got[label]:
                seen: dict[tuple[str, str, str], int] = {}
                for row in rows:
                    key = (row.bench, row.metric, row.peer)
                    seen[key] = seen.get(key, 0) + 1
                    keyed.setdefault((*key, seen[key]), {}).setdefault(label, []).append(row)
        for (bench, metric, peer, _), by in keyed.items():
            line: dict[str, object] = {
                "bench": bench,
                "metric": metric,
                "peer": peer,
                "unit": next(iter(by.values()))[0].unit,
            }
            for label in ("before", "after"):
                rows = by.get(label, [])
                line[label] = _median([r.value for r in rows]) if rows else None
                ratios = [r.ratio for r in rows if r.ratio is not None]
                line[f"peer/hive {label}"] = _median(ratios) if ratios else None
            b, a = line["before"], line["after"]
            line["after/before"] = (
                a / b if isinstance(a, float) and isinstance(b, float) and b else None
            )
            out.append(line)
    return out


def compare_table(lines: list[dict[str, object]]) -> str:
    header = [
        "bench",
        "metric",
        "unit",
        "before",
        "after",
        "after/before",
        "peer",
        "peer/hive before",
        "peer/hive after",
    ]
    cells = [header]

    def num(line: dict[str, object], key: str) -> str:
        value = line[key]
        return _num(value) if isinstance(value, float | int) else "-"

    for line in lines:
        cells.append(
            [
                str(line["bench"]),
                str(line["metric"]),
                str(line["unit"]),
                num(line, "before"),
                num(line, "after"),
                f"{line['after/before']:.3f}" if isinstance(line["after/before"], float) else "-",
                str(line["peer"]) or "-",
                num(line, "peer/hive before"),
                num(line, "peer/hive after"),
            ]
        )
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    out = [" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    out.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in out)


if __name__ == "__main__":
    sys.exit(main())
