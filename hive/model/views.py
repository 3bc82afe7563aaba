"""What hive's API answers, typed: the views of `/v1/status`, `/v1/models`, `/v1/workers`,
`/v1/runtimes` and of a deletion or a restart, as `hive.client` returns them (the server
builds the same shapes in hive/api/views.py; specs/openapi.yaml describes them).

The parts that are hive's own types elsewhere are those types: a status is an
`ObjectStatus`, a model's metadata a `ModelMetadata`, a partial download a
`PartialDownload`, an exit an `ExitInfo`, a worker's scraped metrics `WorkerMetrics`. A
field a newer hive adds is kept (`extra="allow"`), so a client reads a newer server.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from hive.model.machine import Device, QueenLinkView, SystemMetrics
from hive.model.observed import ModelMetadata, PartialDownload
from hive.model.status import ObjectStatus
from hive.model.workers import ExitInfo, WorkerMetrics


class View(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")


class SourceRef(View):
    """Where a record was declared."""

    name: str
    file: str | None = None
    line: int | None = None


class ModelFacts(View):
    """What the catalog shows of a model on disk."""

    directory: str
    file_size: int | None = None
    partial: bool = False
    download: PartialDownload | None = None
    metadata: ModelMetadata | None = None
    metadata_error: str | None = None


class WorkerHealth(View):
    healthy: bool
    last_check: datetime | None = None
    consecutive_failures: int = 0
    error: str | None = None


class WorkerFacts(View):
    """rbee's Worker fields, plus restarts, health and metrics; the process's fields are
    there only while a process runs."""

    status: str
    restarts: int = 0
    last_exit: ExitInfo | None = None
    last_exit_text: str | None = None
    next_restart_time: datetime | None = None
    restarted_at: datetime | None = None
    pid: int | None = None
    worker_id: str | None = None
    model: str | None = None
    worker_type: str | None = None
    device: str | None = None
    runtime: str | None = None
    port: int | None = None
    url: str | None = None
    started_at: datetime | None = None
    uptime_seconds: int | None = None
    cpu_percent: float | None = None
    memory_mb: float | None = None
    vram_mb: int | None = None
    adopted: bool = False
    health: WorkerHealth | None = None
    metrics: WorkerMetrics | None = None
    log_path: str | None = None
    log_tail: list[str] | None = None


class ObjectView(View):
    """A record and its status side by side (desired, observed, status)."""

    kind: str
    name: str
    managed: bool
    source: SourceRef | None = None
    generation: int | None = None
    labels: dict[str, str] = {}
    #: The record's spec as declared (a Model's source redacted).
    spec: dict[str, Any] | None = None
    status: ObjectStatus


class ModelInfo(ObjectView):
    observed: ModelFacts | None = None


class WorkerInfo(ObjectView):
    observed: WorkerFacts | None = None


class SourceView(View):
    name: str
    kind: str
    location: str
    synced: bool
    last_sync_time: datetime | None = None
    records: int = 0
    #: Records declared for other hives (spec.hiveSelector), and the first 100 keys.
    not_selected: int = 0
    not_selected_keys: list[str] = []
    #: Each problem (file, line, field, message) and its `text`, as `hive validate` says it.
    errors: list[dict[str, Any]] = []
    #: A git source's revisions and last syncs (`hive.model.gitsource.GitStatus`).
    git: dict[str, Any] | None = None
    #: Ready, Reconciling, Stalled (`hive.runtime.source_health.SourceCondition`).
    conditions: list[dict[str, Any]] = []

    def condition(self, kind: str) -> dict[str, Any] | None:
        return next((c for c in self.conditions if c.get("type") == kind), None)


class HiveStatus(View):
    """`GET /v1/status`."""

    hive_id: str
    #: This hive's labels (--label, HIVE_LABELS, hive.name, hive.hostname).
    labels: dict[str, str] = {}
    status: str
    started_at: datetime
    uptime_seconds: int
    home: str
    synced: bool
    sources: list[SourceView]
    #: Objects by kind, then by phase.
    objects: dict[str, dict[str, int]]
    queue: dict[str, int]
    workers: dict[str, int]
    last_event_id: int
    # rbee's HiveStatus (hive/api/machine.py; the seed's field names), the machine's
    # metrics and the Queen link.
    hostname: str = ""
    ip_address: str = ""
    port: int = 0
    cpu_cores: int = 0
    memory_total_mb: int = 0
    memory_available_mb: int = 0
    disk_total_gb: int = 0
    disk_available_gb: int = 0
    devices: list[Device] = []
    workers_running: int = 0
    workers_starting: int = 0
    workers_stopping: int = 0
    workers_total: int = 0
    models_available: int = 0
    models_downloading: int = 0
    models_total_gb: float = 0.0
    system: SystemMetrics | None = None
    queen: QueenLinkView | None = None


class SkippedEntry(View):
    path: str
    message: str


class Runtimes(View):
    """`GET /v1/runtimes`: the worker catalog's entries (as `RuntimeEntry` dumps them) and
    the entries it skipped."""

    items: list[dict[str, Any]]
    errors: list[SkippedEntry] = []


class Deleted(View):
    """`DELETE /v1/models/{name}`."""

    deleted: str
    partial_bytes_removed: int = 0
    #: The workers it stopped.
    workers: list[str] = []


class Restarting(View):
    """`POST /v1/workers/{name}/restart`."""

    restarting: str
    pid: int
    events: str


class DesiredSource(View):
    """One entry of `GET /v1/desired`."""

    name: str
    records: int
    builtin: bool = False
    path: str
    errors: list[str] = []


class DesiredSet(View):
    """`GET /v1/desired/{source}`: the records as sent (a Model's source redacted)."""

    source: str
    items: list[dict[str, Any]]


class Applied(View):
    """What `PATCH /v1/desired/{source}` did with one record."""

    key: str
    #: created, configured or unchanged.
    result: str


class DesiredConflict(View):
    key: str
    owner: str
    other: str
    message: str


class DesiredApplied(View):
    """The answer of PUT, PATCH and a record's DELETE under `/v1/desired/{source}`."""

    source: str
    records: int
    applied: list[Applied] = []
    deleted: str | None = None
    changed: list[str] = []
    conflicts: list[DesiredConflict] = []


class DesiredDeleted(View):
    """`DELETE /v1/desired/{source}`."""

    source: str
    deleted: bool
    removed: list[str] = []
    changed: list[str] = []


class JobCreated(View):
    """`POST /v1/jobs`."""

    job_id: str
    sse_url: str


class JobCancelled(View):
    """`DELETE /v1/jobs/{id}`."""

    job_id: str
    status: str


class JobLine(View):
    """One `data:` line of a job's stream: rbee's narration fields, hive's `message`,
    `level`, `object` and structured `data`."""

    action: str
    message: str
    actor: str | None = None
    target: str | None = None
    human: str | None = None
    formatted: str | None = None
    job_id: str | None = None
    emitted_at_ms: int | None = None
    correlation_id: str | None = None
    level: str = "info"
    object: str | None = None
    data: dict[str, Any] = {}


class JobEnd(View):
    """A job stream's last line: `[DONE]`, `[ERROR] <reason>` or `[CANCELLED]`."""

    outcome: str
    reason: str = ""

    @classmethod
    def parse(cls, data: str) -> JobEnd | None:
        """The end marker in `data`, or None when it is not one."""
        for marker, outcome in (("[DONE]", "done"), ("[CANCELLED]", "cancelled")):
            if data == marker:
                return cls(outcome=outcome)
        if data.startswith("[ERROR]"):
            return cls(outcome="error", reason=data.removeprefix("[ERROR]").strip())
        return None
