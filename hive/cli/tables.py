"""The tables `hive get` prints, from the views hive's API returns (`hive.model.views`)."""

from __future__ import annotations

from datetime import datetime

from hive.model.machine import DeviceList, SystemMetrics
from hive.model.observed import PartialDownload
from hive.model.status import ObjectStatus
from hive.model.units import megabytes, megabytes_of
from hive.model.views import HiveStatus, ModelInfo, ObjectView, Runtimes, SourceView, WorkerInfo


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def size(n: int | None) -> str:
    """In the narration's unit (`megabytes`): the table and the log agree."""
    return "-" if n is None else megabytes(n)


def progress(download: PartialDownload | None) -> str:
    """`45% 450 MB / 1,000 MB` for a partial download (as the log says it), `-` for none."""
    if download is None:
        return "-"
    done, total = download.bytes_on_disk, download.total_bytes
    if not total:
        return size(done)
    return f"{100 * done // total}% {megabytes_of(done, total)}"


def models_table(items: list[ModelInfo], *, wide: bool = False) -> str:
    """`wide` adds, as kubectl's does, what takes room: the generation, the declaring
    source (file:line), the labels and the SHA-256's first 12 digits."""
    head = ["NAME", "PHASE", "SIZE", "PARTIAL", "ARCH", "QUANT", "SOURCE", "MESSAGE"]
    rows = [head + (["GEN", "DECLARED BY", "LABELS", "SHA256"] if wide else [])]
    for m in items:
        meta = m.observed.metadata if m.observed else None
        available = meta is not None and meta.status == "Available"
        row = [
            m.name,
            m.status.phase,
            size(meta.size if meta is not None and available else None),
            progress(m.observed.download if m.observed else None),
            (meta.architecture if meta else None) or "-",
            (meta.quantization if meta else None) or "-",
            # redacted by hive
            str((m.spec or {}).get("source") or (meta.source if meta else None) or "-"),
            m.status.message,
        ]
        if wide:
            sha = (meta.sha256 if meta else None) or ""
            row += [str(m.generation or "-"), declared_by(m), labels(m.labels), sha[:12] or "-"]
        rows.append(row)
    return table(rows)


def declared_by(item: ObjectView) -> str:
    """`file:line` of the record in force, the source's name for an HTTP one, `-` for none."""
    origin = item.source
    if origin is None:
        return "-"
    if origin.file:
        return f"{origin.file}:{origin.line}" if origin.line else origin.file
    return origin.name


def labels(values: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(values.items())) or "-"


def status_table(data: HiveStatus) -> str:
    lines = [
        f"hive id {data.hive_id} (HIVE_HIVE_ID, else the machine's hostname): "
        f"{data.status}, up {data.uptime_seconds}s, "
        f"home {data.home}, synced: {'yes' if data.synced else 'no'}",
        f"labels: {labels(data.labels)}",
        "",
    ]
    rows = [["SOURCE", "READY", "SYNCED", "LAST SYNC", "RECORDS", "NOT SELECTED", "ERRORS"]]
    for s in data.sources:
        rows.append(
            [
                s.name,
                _ready(s),
                "yes" if s.synced else "no",
                _iso(s.last_sync_time),
                str(s.records),
                str(s.not_selected),
                str(len(s.errors)),
            ]
        )
    lines.append(table(rows))
    for s in data.sources:
        lines.extend(git_lines(s))
        ready = s.condition("Ready")
        if ready is not None and ready.get("status") != "True" and not s.errors:
            lines.append(f"  {s.name}: {ready.get('message')}")
        lines.extend(f"  error: {e['text']}" for e in s.errors)
    lines.append("")
    for kind, counts in data.objects.items():
        summary = ", ".join(f"{n} {phase}" for phase, n in sorted(counts.items())) or "none"
        lines.append(f"{kind}s: {summary}")
    if data.system is not None:
        lines.append(system_line(data.system))
    if data.queen is not None:
        lines.extend(queen_lines(data))
    return "\n".join(lines)


def _ready(source: SourceView) -> str:
    """`yes`, or `no (Reason)`, from the source's Ready condition (`-`: an older hive)."""
    ready = source.condition("Ready")
    if ready is None:
        return "-"
    if ready.get("status") == "True":
        return "yes"
    return f"{'no' if ready.get('status') == 'False' else 'unknown'} ({ready.get('reason')})"


def git_lines(source: SourceView) -> list[str]:
    """A git source's revisions, as Flux shows them: applied, and attempted when another."""
    git = source.git or {}
    applied, attempted = git.get("lastAppliedRevision"), git.get("lastAttemptedRevision")
    if not git:
        return []
    out = [f"  {source.name}: applied {applied or 'none yet'}"]
    if attempted and attempted != applied:
        out[0] += f", last attempted {attempted}"
    if git.get("suspended"):
        out[0] += f"; suspended (`hive source resume {source.name}` fetches again)"
    return out


def system_line(system: SystemMetrics) -> str:
    load = " ".join(f"{x:g}" for x in system.load_average)
    return (
        f"machine: CPU {system.cpu_percent:g}% of {system.cpu_cores} cores, load {load}, "
        f"RAM {system.memory_used_mb:,} / {system.memory_total_mb:,} MiB, "
        f"home disk {size(system.disk_free_bytes)} free, up {system.uptime_seconds}s"
    )


def queen_lines(data: HiveStatus) -> list[str]:
    """The Queen link: where, and each protocol's state and last failure."""
    queen = data.queen
    if queen is None or queen.url is None:
        return ["queen: none discovered (GET /v1/capabilities?queen_url= or --queen-url)"]
    lines = [f"queen: {queen.url} ({queen.discovered_via})"]
    for name, link in (("push", queen.push), ("ready", queen.ready)):
        line = f"  {name}: {link.state}, {link.successes} ok, {link.failures} failed"
        if link.last_failure_reason and link.state != "ok":
            line += f" (last: {link.last_failure_reason})"
        lines.append(line)
    lines.append(f"  telemetry: {queen.telemetry.subscribers} subscriber(s)")
    return lines


def devices_table(data: DeviceList) -> str:
    rows = [["ID", "TYPE", "NAME", "MEMORY", "FREE", "UTIL", "TEMP", "WORKERS"]]
    for d in data.items:
        rows.append(
            [
                d.id,
                d.device_type,
                d.name,
                f"{d.vram_total_mb:,} MiB" if d.vram_total_mb is not None else "-",
                f"{d.vram_available_mb:,} MiB" if d.vram_available_mb is not None else "-",
                f"{d.utilization_percent:g}%" if d.utilization_percent is not None else "-",
                f"{d.temperature_celsius:g}°C" if d.temperature_celsius is not None else "-",
                ",".join(d.workers) or "-",
            ]
        )
    lines = [table(rows)]
    if data.gpu_error:
        lines.append(f"  no GPU: {data.gpu_error}")
    return "\n".join(lines)


def _iso(at: datetime | None) -> str:
    """As hive sent it (`2026-12-06T10:48:04.003Z`), or `-`."""
    return at.isoformat().replace("+00:00", "Z") if at is not None else "-"


def worker_status(status: ObjectStatus) -> str:
    """STATUS as kubectl shows a pod's: what is wrong when something is (the Degraded
    reason: CrashLoopBackOff, Unschedulable, …), else the phase."""
    for condition in status.conditions:
        if condition.type == "Degraded" and condition.status == "True":
            return condition.reason or status.phase
    return status.phase


def workers_table(items: list[WorkerInfo], *, wide: bool = False) -> str:
    """`wide` adds the runtime, the URL, CPU and memory, and the declaring source."""
    head = ["NAME", "STATUS", "MODEL", "DEVICE", "PID", "PORT", "RESTARTS", "AGE", "MESSAGE"]
    rows = [head + (["RUNTIME", "URL", "CPU%", "MEM", "DECLARED BY"] if wide else [])]
    for w in items:
        facts = w.observed
        spec = w.spec or {}
        uptime = facts.uptime_seconds if facts else None
        row = [
            w.name,
            worker_status(w.status),
            (facts.model if facts else None) or str(spec.get("model") or "-"),
            (facts.device if facts else None) or str(spec.get("device") or "-"),
            str((facts.pid if facts else None) or "-"),
            str((facts.port if facts else None) or "-"),
            str(facts.restarts if facts else 0),
            f"{uptime}s" if uptime is not None else "-",
            w.status.message,
        ]
        if wide:
            cpu = facts.cpu_percent if facts else None
            memory = facts.memory_mb if facts else None
            row += [
                (facts.runtime if facts else None) or str(spec.get("runtime") or "-"),
                (facts.url if facts else None) or "-",
                "-" if cpu is None else f"{cpu:.1f}",
                "-" if memory is None else f"{memory:.0f} MB",
                declared_by(w),
            ]
        rows.append(row)
    return table(rows)


def runtimes_table(data: Runtimes) -> str:
    rows = [["ID", "TYPE", "AVAILABLE", "ARGS", "ORIGIN"]]
    for r in data.items:
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
    lines.extend(f"  error: {e.path}: {e.message}" for e in data.errors)
    return "\n".join(lines)
