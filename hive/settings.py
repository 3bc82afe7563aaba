"""One Settings object for the daemon: defaults, then HIVE_* environment, then flags."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hive.model.gitsource import GitSpec
from hive.model.labels import hive_labels, parse_labels, split_labels
from hive.model.manifests import parse_rate
from hive.model.queen import normal_queen_url, queen_url_problem
from hive.model.text import show
from hive.settings_file import read_settings_file

DEFAULT_PORT = 7835
DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"


def default_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hive"


#: The shortest token hive takes (a bearer token anyone could guess protects nothing).
TOKEN_MIN_LENGTH = 16
_TOKEN = re.compile(rf"[!-~]{{{TOKEN_MIN_LENGTH},}}")
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-]+(:\d{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:\d{1,5})?")


class Settings(BaseModel):
    # hide_input_in_errors: a refused value (the token) is never printed back.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    home: Path = Field(default_factory=default_home)
    desired: tuple[Path, ...] = ()
    #: Let a watched directory that held records go to none (otherwise refused, unless the
    #: directory holds a `.hive-allow-empty` file): an empty directory is more often a
    #: failed mount than a wish to stop everything.
    allow_empty: bool = False
    #: Git repositories of manifests (--git URL ...; docs/operations.md, "Git sources").
    git: tuple[GitSpec, ...] = ()
    #: Seconds any one git command (a fetch) may take before it is stopped.
    git_timeout: float = Field(default=120.0, gt=0)
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    hive_id: str = Field(default_factory=socket.gethostname)
    #: This hive's labels, which records' spec.hiveSelector select on (--label key=value;
    #: HIVE_LABELS=k=v,k2=v2); hive adds hive.name and hive.hostname (`hive_labels`).
    labels: dict[str, str] = Field(default_factory=dict)
    #: Seconds between full re-observations of everything (drift repair).
    resync_interval: float = Field(default=30.0, gt=0)
    #: Actions (copies, deletions) carried out at the same time, over all objects.
    max_concurrent_actions: int = Field(default=4, ge=1)
    #: No single action may take longer than this.
    action_timeout: float = Field(default=3600.0, gt=0)
    backoff_base: float = Field(default=1.0, gt=0)
    backoff_cap: float = Field(default=300.0, gt=0)
    event_buffer: int = Field(default=10_000, ge=1)
    #: Events a slow SSE client may lag behind before it skips ahead with a gap marker;
    #: None: only what left the event buffer is skipped (a client that keeps up loses
    #: nothing the buffer holds).
    sse_max_lag: int | None = Field(default=None, ge=1)
    #: Seconds an SSE stream in a burst (100 events within 0.1 s) waits, once caught up,
    #: before its next write: the burst goes out in a few large writes per stream. Outside
    #: a burst every event goes out at once.
    sse_flush_interval: float = Field(default=0.05, ge=0)
    sse_keepalive: float = Field(default=15.0, gt=0)
    #: Bearer token required on every request but `GET /health` (reads too: logs and
    #: events can hold prompts); required to bind beyond loopback.
    token: str | None = Field(default=None, repr=False)
    #: Browser origins (`scheme://host[:port]`) whose pages may call the API (CORS); none:
    #: no CORS header at all. HIVE_CORS_ORIGINS: separated by commas or spaces.
    cors_origins: tuple[str, ...] = ()
    #: Print one line per event on stderr.
    console: bool = True
    #: Network downloads at the same time; the others wait as Pending.
    max_downloads: int = Field(default=2, ge=1)
    #: Bandwidth cap for all downloads together, e.g. "20MB/s"; None: no cap.
    download_rate_limit: str | None = None
    #: Seconds a partial download of a model no record wants is kept (for a resume).
    partial_ttl: float = Field(default=24 * 3600.0, ge=0)
    #: Directories `file:` sources must resolve into (symbolic links followed); empty:
    #: anywhere hive can read.
    file_roots: tuple[Path, ...] = ()

    # -- jobs (POST /v1/jobs) --------------------------------------------------------------
    #: Seconds a finished job stays readable (its stream replays it, DELETE answers it).
    job_retention: float = Field(default=3600.0, ge=0)
    #: The most finished jobs kept (the oldest go first).
    jobs_kept: int = Field(default=1000, ge=1)
    #: The most jobs running at once; one more is refused with 429.
    jobs_running_max: int = Field(default=100, ge=1)
    #: The most lines one job keeps (the oldest go first; a stream says how many it missed).
    job_events_max: int = Field(default=1000, ge=10)

    # -- workers ------------------------------------------------------------------------
    #: Address workers bind to (0.0.0.0 to serve other machines; the Queen talks to them).
    worker_host: str = "127.0.0.1"
    #: Ports handed to workers without a spec.port: "first-last".
    worker_ports: str = Field(default="9000-9999", pattern=r"^\d{1,5}-\d{1,5}$")
    #: The Queen, passed to workers as HIVE_QUEEN_URL (and {queen_url} where asked for).
    queen_url: str | None = None
    #: Worker processes being spawned at the same time (each `fork`/`exec` waits, on a busy
    #: machine, for the child to be scheduled); a spawn holds no reconcile worker meanwhile.
    max_concurrent_spawns: int = Field(default=8, ge=1)
    #: Stop every worker when hive exits (default: leave them running, as kubelet does).
    stop_workers_on_exit: bool = False
    #: Seconds a worker may take to answer its health check; None: its runtime's (120 s).
    worker_start_timeout: float | None = Field(default=None, gt=0)
    health_start_interval: float = Field(default=0.25, gt=0)
    health_interval: float = Field(default=5.0, gt=0)
    health_timeout: float = Field(default=2.0, gt=0)
    health_failure_threshold: int = Field(default=3, ge=1)
    metrics_interval: float = Field(default=15.0, gt=0)
    #: CrashLoopBackOff: first delay, cap, and healthy running time that resets it.
    crashloop_base: float = Field(default=10.0, gt=0)
    crashloop_cap: float = Field(default=300.0, gt=0)
    crashloop_reset: float = Field(default=600.0, gt=0)
    #: Seconds before a worker that cannot be placed (no port, no room) is tried again.
    placement_retry: float = Field(default=15.0, gt=0)
    worker_log_max_bytes: int = Field(default=10 * 1024 * 1024, ge=4096)
    worker_log_backups: int = Field(default=3, ge=1, le=100)
    #: GPU discovery: auto (NVML), none, or fake:/path/gpus.json (tests, demos).
    gpu_probe: str = "auto"
    #: The portable way for what Linux answers best (`hive/platform.py`): watchfiles for
    #: directories instead of inotify read on the event loop, psutil instead of pidfds and
    #: /proc. What hive does off Linux; on Linux, to try that (HIVE_PORTABLE=1).
    portable: bool = False

    # -- the Queen (docs/queen.md) and the system sampler -------------------------------
    #: Seconds between samples of CPU, memory, disk, GPUs and the workers' processes.
    system_sample_interval: float = Field(default=2.0, gt=0)
    #: The seed's push: seconds between `POST {queen}/v1/hive-heartbeat`.
    queen_heartbeat_interval: float = Field(default=30.0, gt=0)
    #: A failing push backs off from the interval, doubling, up to this (or the interval).
    queen_backoff_cap: float = Field(default=120.0, gt=0)
    #: rbee's ready callback: seconds before each attempt, comma-separated.
    queen_ready_delays: str = Field(default="0,2,4,8,16", pattern=r"^\d+(\.\d+)?(,\d+(\.\d+)?)*$")
    #: rbee's telemetry stream: seconds between `event: heartbeat` frames.
    queen_telemetry_interval: float = Field(default=1.0, gt=0)
    #: Seconds each request to the Queen may take.
    queen_timeout: float = Field(default=10.0, gt=0)

    @field_validator("home")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        """Absolute: workers get paths under it (their model file, their log) and may not
        share hive's working directory."""
        return value.absolute()

    @field_validator("git")
    @classmethod
    def _git_names(cls, value: tuple[GitSpec, ...]) -> tuple[GitSpec, ...]:
        names = [g.source_name for g in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(
                f"two --git sources are called {', '.join(twice)}; give each its own --git-name"
            )
        return value

    @field_validator("file_roots")
    @classmethod
    def _absolute_roots(cls, value: tuple[Path, ...]) -> tuple[Path, ...]:
        return tuple(p.absolute() for p in value)

    @field_validator("token")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        """At least TOKEN_MIN_LENGTH visible ASCII characters (it travels in a header), no
        whitespace; the message says what is wrong without repeating the token."""
        if value is None or _TOKEN.fullmatch(value):
            return value
        if any(c.isspace() for c in value):
            what = "contains whitespace"
        elif len(value) < TOKEN_MIN_LENGTH:
            what = f"is {len(value)} characters long"
        else:
            what = "contains a character that is not visible ASCII"
        raise ValueError(
            f"the token (--token or HIVE_TOKEN) {what}; it must be at least "
            f"{TOKEN_MIN_LENGTH} visible ASCII characters with no whitespace: "
            "generate one with `openssl rand -hex 32`"
        )

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, value: Any) -> Any:
        """`k=v,k2=v2` (HIVE_LABELS) or a list of `k=v` (--label), each checked as the
        manifests' labels are; hive's own keys (hive.*) are refused."""
        if isinstance(value, str):
            value = split_labels(value)
        if isinstance(value, list | tuple):
            return parse_labels(value)
        if isinstance(value, dict):
            return parse_labels(f"{k}={v}" for k, v in value.items())
        return value

    @property
    def hive_labels(self) -> dict[str, str]:
        """The labels selectors see: `labels`, hive.name (the hive id), hive.hostname."""
        return hive_labels(self.labels, hive_id=self.hive_id, hostname=socket.gethostname())

    @field_validator("queen_url")
    @classmethod
    def _queen_url(cls, value: str | None) -> str | None:
        """An http(s) URL with a host (empty: none); the message never repeats it."""
        if not value:
            return None
        problem = queen_url_problem(value)
        if problem:
            raise ValueError(f"the Queen's URL (--queen-url or HIVE_QUEEN_URL) {problem}")
        return normal_queen_url(value)

    @property
    def ready_delays(self) -> tuple[float, ...]:
        return tuple(float(d) for d in self.queen_ready_delays.split(","))

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """Each an origin as a browser sends it: `http(s)://host[:port]`, no path."""
        out = []
        for origin in value:
            origin = origin.rstrip("/")
            if not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"{show(origin)} is not an origin: give scheme, host and port only, as "
                    "a browser sends them (e.g. https://dashboard.example:8443)"
                )
            out.append(origin.lower())
        return tuple(out)

    @field_validator("worker_ports")
    @classmethod
    def _ports(cls, value: str) -> str:
        first, last = (int(p) for p in value.split("-"))
        if not 1024 <= first <= last <= 65535:
            raise ValueError(f"{value!r}: use first-last with 1024 <= first <= last <= 65535")
        return value

    @property
    def worker_port_range(self) -> range:
        first, last = (int(p) for p in self.worker_ports.split("-"))
        return range(first, last + 1)

    @field_validator("download_rate_limit")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rate(value)
        return value

    @property
    def download_rate(self) -> int | None:
        return parse_rate(self.download_rate_limit) if self.download_rate_limit else None

    @classmethod
    def from_env(cls, *, config: Path | None = None, **overrides: Any) -> Settings:
        """Defaults, overridden by the settings file (`config`, else HIVE_CONFIG; see
        hive/settings_file.py), overridden by HIVE_<FIELD> variables, overridden by
        `overrides`; git sources add up and labels merge key by key."""
        if config is None and os.environ.get("HIVE_CONFIG"):
            config = Path(os.environ["HIVE_CONFIG"])
        filed: dict[str, Any] = {}
        if config is not None:
            filed = read_settings_file(config, fields=cls.model_fields, validate=cls.model_validate)
        values: dict[str, Any] = dict(filed)
        for name, field in cls.model_fields.items():
            raw = os.environ.get(f"HIVE_{name.upper()}")
            if raw is None or name == "git":  # git sources: flags only
                continue
            if name in ("desired", "file_roots"):
                values[name] = tuple(Path(p) for p in raw.split(os.pathsep) if p)
            elif name == "cors_origins":
                values[name] = tuple(o for o in re.split(r"[,\s]+", raw) if o)
            elif field.annotation is bool:
                values[name] = raw.lower() in {"1", "true", "yes", "on"}
            else:
                values[name] = raw
        given = {k: v for k, v in overrides.items() if v is not None}
        if "git" in given and "git" in filed:
            given["git"] = (*filed["git"], *given["git"])
        layers = [filed.get("labels"), os.environ.get("HIVE_LABELS"), given.get("labels")]
        present = [layer for layer in layers if layer is not None]
        if len(present) > 1:  # each layer checked on its own, then merged key by key
            given["labels"] = {
                key: value
                for layer in present
                for key, value in cls.model_validate({"labels": layer}).labels.items()
            }
        values.update(given)
        return cls.model_validate(values)
