"""The tables `hive get` prints, from the views hive's API returns (dicts: they have no
pydantic type yet)."""

from __future__ import annotations

from typing import Any

from hive.model.units import megabytes, megabytes_of


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def size(n: int | None) -> str:
    """In the narration's unit (`megabytes`): the table and the log agree."""
    return "-" if n is None else megabytes(n)


def progress(download: dict[str, Any] | None) -> str:
    """`45% 450 MB / 1,000 MB` for a partial download (as the log says it), `-` for none."""
    if not download:
        return "-"
    done, total = download["bytes_on_disk"], download.get("total_bytes")
    if not total:
        return size(done)
    return f"{100 * done // total}% {megabytes_of(done, total)}"


def models_table(items: list[dict[str, Any]]) -> str:
    rows = [["NAME", "PHASE", "SIZE", "PARTIAL", "ARCH", "QUANT", "SOURCE", "MESSAGE"]]
    for m in items:
        observed = m.get("observed") or {}
        meta = observed.get("metadata") or {}
        spec = m.get("spec") or {}
        status = m.get("status") or {}
        rows.append(
            [
                m["name"],
                status.get("phase", "-"),
                size(meta.get("size") if meta.get("status") == "Available" else None),
                progress(observed.get("download")),
                meta.get("architecture") or "-",
                meta.get("quantization") or "-",
                spec.get("source") or meta.get("source") or "-",  # redacted by hive
                status.get("message") or "",
            ]
        )
    return table(rows)


def status_table(data: dict[str, Any]) -> str:
    lines = [
        f"hive id {data['hive_id']} (HIVE_HIVE_ID, else the machine's hostname): "
        f"{data['status']}, up {data['uptime_seconds']}s, "
        f"home {data['home']}, synced: {'yes' if data['synced'] else 'no'}",
        "",
    ]
    rows = [["SOURCE", "SYNCED", "LAST SYNC", "RECORDS", "ERRORS"]]
    for s in data["sources"]:
        rows.append(
            [
                s["name"],
                "yes" if s["synced"] else "no",
                s["last_sync_time"] or "-",
                str(s["records"]),
                str(len(s["errors"])),
            ]
        )
    lines.append(table(rows))
    for s in data["sources"]:
        lines.extend(f"  error: {e['text']}" for e in s["errors"])
    lines.append("")
    for kind, counts in data["objects"].items():
        summary = ", ".join(f"{n} {phase}" for phase, n in sorted(counts.items())) or "none"
        lines.append(f"{kind}s: {summary}")
    return "\n".join(lines)


def worker_status(status: dict[str, Any]) -> str:
    """STATUS as kubectl shows a pod's: what is wrong when something is (the Degraded
    reason: CrashLoopBackOff, Unschedulable, …), else the phase."""
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Degraded" and condition.get("status") == "True":
            return str(condition.get("reason") or status.get("phase", "-"))
    return str(status.get("phase", "-"))


def workers_table(items: list[dict[str, Any]]) -> str:
    rows = [["NAME", "STATUS", "MODEL", "DEVICE", "PID", "PORT", "RESTARTS", "AGE", "MESSAGE"]]
    for w in items:
        observed = w.get("observed") or {}
        spec = w.get("spec") or {}
        status = w.get("status") or {}
        uptime = observed.get("uptime_seconds")
        rows.append(
            [
                w["name"],
                worker_status(status),
                observed.get("model") or spec.get("model") or "-",
                observed.get("device") or spec.get("device") or "-",
                str(observed.get("pid") or "-"),
                str(observed.get("port") or "-"),
                str(observed.get("restarts", 0)),
                f"{uptime}s" if uptime is not None else "-",
                status.get("message") or "",
            ]
        )
    return table(rows)


def runtimes_table(data: dict[str, Any]) -> str:
    rows = [["ID", "TYPE", "AVAILABLE", "ARGS", "ORIGIN"]]
    for r in data["items"]:
        rows.append(
            [
                r["id"],
                r["worker_type"],
                "yes" if r["available"] else f"no: {r['unavailable_reason']}",
                ",".join(sorted(r["args"])) or "-",
                r["origin"],
            ]
        )
    lines = [table(rows)]
    lines.extend(f"  error: {e['path']}: {e['message']}" for e in data["errors"])
    return "\n".join(lines)
