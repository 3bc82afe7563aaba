"""The built-in `llama-cpp` runtime: a worker process that hive spawns, running llama.cpp's
own HTTP server in-process through xllamacpp (a real inference engine, not a stand-in),
with a heartbeat to the Queen when one is known.
"""

from __future__ import annotations

import argparse
import base64
import errno
import http.client
import json
import os
import signal
import socket
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import xllamacpp

from hive import __version__
from hive.model.text import show_text, show_url

PROG = "hive-llama-cpp"
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
# llama.cpp's log verbosity thresholds (common/log.h): 1 errors, 2 warnings, 3 info.
QUIET, VERBOSE = 1, 3
HEARTBEAT_TIMEOUT_S = 2.0
DEFAULT_HEARTBEAT_INTERVAL_S = 30.0


@dataclass(frozen=True)
class Options:
    """The command line, with the environment fallbacks applied."""

    model: Path
    host: str
    port: int
    alias: str
    ctx_size: int
    n_gpu_layers: int | None
    threads: int
    parallel: int | None
    queen_url: str | None
    worker_id: str
    device: str
    verbose: bool
    heartbeat_interval: float


def parse_options(argv: Sequence[str] | None, *, env: Mapping[str, str]) -> Options:
    """Parse the command line; HIVE_QUEEN_URL, HIVE_WORKER_ID and HIVE_HEARTBEAT_INTERVAL
    fill in for absent flags. An empty `--queen-url` means no Queen."""
    p = argparse.ArgumentParser(prog=PROG, description="Serve one GGUF model with llama.cpp.")
    p.add_argument("--model", type=Path, required=True, help="the GGUF file")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--alias", required=True, help="the model name clients ask for")
    p.add_argument("--ctx-size", type=int, default=0, help="0: the model's own")
    p.add_argument("--n-gpu-layers", type=int, default=None)
    p.add_argument("--threads", type=int, default=0, help="0: llama.cpp's default")
    p.add_argument("--parallel", type=int, default=None, help="slots decoded at once")
    p.add_argument("--queen-url", default=None, help="empty: no Queen")
    p.add_argument("--worker-id", default=None, help="default: the alias")
    p.add_argument("--device", default="CPU-0", help="reported in heartbeats only")
    p.add_argument("--verbose", action="store_true", help="llama.cpp's info logs too")
    args = p.parse_args(argv)
    queen_url = args.queen_url if args.queen_url is not None else env.get("HIVE_QUEEN_URL")
    try:
        interval = float(env.get("HIVE_HEARTBEAT_INTERVAL", DEFAULT_HEARTBEAT_INTERVAL_S))
    except ValueError:
        p.error("HIVE_HEARTBEAT_INTERVAL must be a number of seconds")
    if interval <= 0:
        p.error("HIVE_HEARTBEAT_INTERVAL must be above 0")
    return Options(
        model=args.model,
        host=args.host,
        port=args.port,
        alias=args.alias,
        ctx_size=args.ctx_size,
        n_gpu_layers=args.n_gpu_layers,
        threads=args.threads,
        parallel=args.parallel,
        queen_url=queen_url or None,
        worker_id=args.worker_id or env.get("HIVE_WORKER_ID") or args.alias,
        device=args.device,
        verbose=args.verbose,
        heartbeat_interval=interval,
    )


# -- pre-flight: llama.cpp only says "Failed to init server" ------------------------------
def model_problem(path: Path) -> str | None:
    """Why llama.cpp could not load `path` as a GGUF file, or None."""
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except FileNotFoundError:
        return f"model file {path} does not exist"
    except PermissionError:
        return f"model file {path} is not readable (permission denied)"
    except IsADirectoryError:
        return f"model path {path} is a directory, not a GGUF file"
    except OSError as exc:
        return f"model file {path} cannot be read: {exc.strerror}"
    if magic != b"GGUF":
        return f"model file {path} is not a GGUF file (no GGUF magic)"
    return None


def port_problem(*, host: str, port: int) -> str | None:
    """Why llama.cpp could not listen on host:port, or None (binds and closes at once)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        socket.create_server((host, port), family=family).close()
    except socket.gaierror as exc:
        return f"cannot resolve host {host!r}: {exc.strerror}"
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return f"port {port} on {host} is already in use"
        return f"cannot listen on {host}:{port}: {os.strerror(exc.errno or 0)}"
    return None


# -- llama.cpp ---------------------------------------------------------------------------
def llama_params(opts: Options) -> xllamacpp.CommonParams:
    """The llama-server settings for `opts` (unset ones keep llama.cpp's defaults)."""
    params = xllamacpp.CommonParams()
    params.model.path = str(opts.model)
    params.model_alias = {opts.alias}
    params.hostnames = [opts.host]
    params.port = opts.port
    params.n_ctx = opts.ctx_size
    params.endpoint_metrics = True
    params.verbosity = VERBOSE if opts.verbose else QUIET
    if opts.n_gpu_layers is not None:
        params.n_gpu_layers = opts.n_gpu_layers
    if opts.threads > 0:
        params.cpuparams.n_threads = opts.threads
        params.cpuparams_batch.n_threads = opts.threads
    if opts.parallel is not None:
        params.n_parallel = opts.parallel
    return params


def url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def served_ctx(base_url: str) -> int:
    """The context size llama.cpp settled on, from its /props (this also proves it answers)."""
    with urllib.request.urlopen(base_url + "/props", timeout=10) as r:
        return int(json.load(r)["default_generation_settings"]["n_ctx"])


# -- heartbeat ---------------------------------------------------------------------------
#: rbee's worker contract: what runs the model, and its version.
IMPLEMENTATION = "hive-llama-cpp"


@dataclass(frozen=True)
class WorkerCard:
    """What every heartbeat says about this worker: rbee's `WorkerInfo` without its status."""

    id: str
    model_id: str
    device: str
    port: int
    implementation: str = IMPLEMENTATION
    version: str = __version__


def split_userinfo(url: str) -> tuple[str, str | None]:
    """`http://user:pw@queen:7833` as the URL without its credentials and the
    `Authorization: Basic` value that carries them (urllib would take `user:pw@queen` for a
    host name); a URL without credentials as it is, and None."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.netloc.rpartition("@")[2]
    user = urllib.parse.unquote(parts.username or "")
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return urllib.parse.urlunsplit(parts._replace(netloc=host)), f"Basic {token}"


class Heartbeat:
    """POSTs rbee's worker heartbeat (`{"worker": {...}, "timestamp"}`) to the Queen, now
    and then every `interval` seconds from a daemon thread; a Queen that is down or
    failing never stops the worker."""

    def __init__(self, *, queen_url: str, card: WorkerCard, interval: float) -> None:
        base, self.authorization = split_userinfo(queen_url.rstrip("/"))
        self.endpoint = base + "/v1/worker-heartbeat"
        self.card = card
        self.interval = interval
        #: rbee's OperationalStatus: starting, then ready.
        self.status = "starting"
        self._failing = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def body(self) -> dict[str, object]:
        card = asdict(self.card)
        worker = {
            "id": card["id"],
            "model_id": card["model_id"],
            "device": card["device"],
            "port": card["port"],
            "status": self.status,
            "implementation": card["implementation"],
            "version": card["version"],
        }
        return {"worker": worker, "timestamp": _now()}

    def send(self) -> None:
        headers = {"Content-Type": "application/json"}
        if self.authorization is not None:
            headers["Authorization"] = self.authorization
        request = urllib.request.Request(
            self.endpoint, data=json.dumps(self.body()).encode(), headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=HEARTBEAT_TIMEOUT_S):
                pass
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if not self._failing:
                _say(
                    f"warning: heartbeat to {show_url(self.endpoint)} failed "
                    f"({show_text(str(exc))}); the worker goes on, retrying every "
                    f"{self.interval:g}s"
                )
            self._failing = True
            return
        if self._failing:
            _say(f"heartbeat to {show_url(self.endpoint)} works again")
        self._failing = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while True:
            self.send()
            if self._stop.wait(self.interval):
                return


def heartbeat_for(opts: Options) -> Heartbeat | None:
    """The heartbeat to the Queen, or None without one. The worker's id is its
    HIVE_WORKER_ID (or --worker-id), its model the alias clients ask for."""
    if not opts.queen_url:
        return None
    card = WorkerCard(id=opts.worker_id, model_id=opts.alias, device=opts.device, port=opts.port)
    return Heartbeat(queen_url=opts.queen_url, card=card, interval=opts.heartbeat_interval)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _say(line: str) -> None:
    print(f"{PROG}: {line}", file=sys.stderr, flush=True)


# -- main --------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    # Block the stop signals before any thread starts: every thread (llama.cpp's too)
    # inherits the mask, so only `sigwait` below takes them, and llama.cpp's own
    # SIGINT/SIGTERM handler never runs. A signal during the model load waits for it.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    opts = parse_options(argv, env=os.environ)
    problem = model_problem(opts.model) or port_problem(host=opts.host, port=opts.port)
    if problem:
        _say(f"error: {problem}")
        return 2

    heartbeat = heartbeat_for(opts)
    if heartbeat:
        heartbeat.send()  # `starting`, before the model loads

    try:
        server = xllamacpp.Server(llama_params(opts))
        local_host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(opts.host, opts.host)
        n_ctx = served_ctx(url(local_host, opts.port))
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        _say(f"error: llama.cpp did not start serving {opts.model}: {exc} (its log is above)")
        return 1
    threads = f"{opts.threads} threads" if opts.threads > 0 else "default threads"
    print(
        f"{PROG}: serving {opts.alias} on {url(opts.host, opts.port)} (ctx {n_ctx}, {threads})",
        flush=True,
    )
    if heartbeat:
        heartbeat.status = "ready"
        heartbeat.start()

    signal.sigwait(STOP_SIGNALS)
    if heartbeat:
        heartbeat.stop()
    del server  # stops llama.cpp's HTTP server and main loop, and joins their threads
    return 0


if __name__ == "__main__":
    sys.exit(main())
