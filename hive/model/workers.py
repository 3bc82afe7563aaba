"""What hive knows of a worker process: the state record it keeps on disk for adoption,
how the last run ended, and the performance it scraped from the worker."""

from __future__ import annotations

import signal
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict


class WorkerState(BaseModel):
    """`<home>/state/workers/<name>.json`: enough to find the process again after hive
    restarts (pid + start time + the HIVE_INSTANCE marker) and to tell whether it still
    runs what the record asks (`spec_hash`)."""

    model_config = ConfigDict(frozen=True)

    name: str
    worker_id: str
    instance: str
    pid: int
    #: psutil's create_time of the process: a reused pid has another one.
    create_time: float
    host: str
    port: int
    argv: tuple[str, ...]
    runtime: str
    worker_type: str
    model: str
    model_path: Path
    model_sha256: str | None
    device: str
    spec_hash: str
    started_at: datetime
    restarts: int = 0
    log_path: Path
    #: The `ArgsAdjusted` condition (reason, message) of this run; None: args as asked.
    args_adjusted: tuple[str, str] | None = None


class ExitInfo(BaseModel):
    """How a run ended: an exit code, a signal, or (for an adopted process, which is not
    hive's child) unknown."""

    model_config = ConfigDict(frozen=True)

    at: datetime
    code: int | None = None
    signal: int | None = None
    #: Why hive considers it ended: Exited, Unhealthy, StartTimeout, Stopped, Replaced, ...
    reason: str = "Exited"
    message: str = ""

    @property
    def failed(self) -> bool:
        """A failure for the restart policy: anything but a clean exit 0."""
        return not (self.code == 0 and self.reason == "Exited")

    def describe(self) -> str:
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            return f"killed by {name}"
        if self.code is not None:
            return f"exit code {self.code}"
        return "exit status unknown (adopted process, not hive's child)"


class WorkerMetrics(BaseModel):
    """Performance scraped from the worker's own Prometheus endpoint (llama.cpp's
    `/metrics`), with rbee's field names where rbee has one."""

    model_config = ConfigDict(frozen=True)

    scraped_at: datetime
    #: llama_decode() calls (llama.cpp counts no requests; rbee's requests_handled has no
    #: source there, so it is not reported rather than faked).
    decode_calls: float | None = None
    prompt_tokens: float | None = None
    tokens_generated: float | None = None
    avg_tokens_per_sec: float | None = None
    busy_slots: float | None = None
    deferred_requests: float | None = None
