"""Shared test helpers: the tiny example model, polling with a deadline, a real
`hive serve` subprocess with an SSE reader, the `hive` CLI, a hub on loopback, a watched
directory and a real small filesystem."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, overload

import psutil
import pytest

from hive.client import HiveClient
from hive.errors import HiveError
from hive.model.events import Event, EventsDropped
from testkit.hub import ThreadedHub, hf_env
from testkit.scripted_runtime import SCRIPTED_WORKER, install_scripted_runtime
from tests.disk import fill, grow, mount_tmpfs, padded, unmount

# re-exported for the tests
__all__ = ["SCRIPTED_WORKER", "fill", "grow", "install_scripted_runtime", "padded"]

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


#: Every process this test run starts inherits this marker, so the orphan check looks at
#: this run's processes only (never at another run's, or a `make run` on the same machine).
TEST_RUN = os.environ.setdefault("HIVE_TEST_RUN", f"{os.getpid()}-{time.time_ns()}")


def worker_processes(*, since: float = 0.0) -> list[psutil.Process]:
    """This run's processes carrying hive's worker marker (HIVE_WORKER_ID), started after
    `since`."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.create_time() < since or proc.status() == psutil.STATUS_ZOMBIE:
                continue  # a zombie has ended; its parent has just not reaped it yet
            env = proc.environ()
            if "HIVE_WORKER_ID" in env and env.get("HIVE_TEST_RUN") == TEST_RUN:
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.fixture(autouse=True)
def no_orphans() -> Iterator[None]:
    """Every test leaves no worker process behind: any found is killed and fails the test."""
    began = time.time() - 1.0
    yield
    left = worker_processes(since=began)
    for proc in left:
        with contextlib.suppress(psutil.Error, OSError):
            proc.kill()
    assert not left, f"worker processes left behind: {[p.pid for p in left]}"


def worker_yaml(
    name: str,
    model: str,
    *,
    runtime: str = "scripted",
    args: dict[str, Any] | None = None,
    device: str | None = None,
    port: int | None = None,
    restart_policy: str | None = None,
    state: str | None = None,
) -> str:
    lines = [
        "apiVersion: hive/v1",
        "kind: Worker",
        "metadata:",
        f"  name: {name}",
        "spec:",
        f"  model: {model}",
        f"  runtime: {runtime}",
    ]
    if device:
        lines.append(f"  device: {device}")
    if port:
        lines.append(f"  port: {port}")
    if restart_policy:
        lines.append(f"  restartPolicy: {restart_policy}")
    if state:
        lines.append(f"  state: {state}")
    if args:
        lines.append(f"  args: {json.dumps(args)}")
    return "\n".join(lines) + "\n"


def poll(
    fn: Callable[[], T | None],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    """Call `fn` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@overload
async def apoll(
    fn: Callable[[], Awaitable[T | None]],
    *,
    within: float = ...,
    interval: float = ...,
    what: str = ...,
) -> T: ...
@overload
async def apoll(
    fn: Callable[[], T | None], *, within: float = ..., interval: float = ..., what: str = ...
) -> T: ...
async def apoll(
    fn: Callable[[], Any],
    *,
    within: float = 10.0,
    interval: float = 0.01,
    what: str = "condition",
) -> Any:
    """`poll` for async tests: `fn` may be sync or async; the event loop keeps running."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        result = fn()
        last = await result if inspect.isawaitable(result) else result
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {within}s waiting for {what} (last: {last!r})")


def _load_example() -> Any:
    spec = importlib.util.spec_from_file_location(
        "make_tiny_model", ROOT / "examples" / "make_tiny_model.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_model_elsewhere(tmp_path: Path, tiny_model: Path) -> Iterator[Path]:
    """The tiny model on another filesystem than the test's home (a tmpfs), so that hive
    copies it instead of hard-linking it."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem (/dev/shm) to copy a model from")
    path = shm / f"hive-test-{os.getpid()}-{tmp_path.name}.gguf"
    shutil.copyfile(tiny_model, path)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real tiny llama GGUF, made by the example script the README uses."""
    path = tmp_path_factory.mktemp("model") / "tiny-llama.gguf"
    return Path(_load_example().make_tiny_model(path))


@pytest.fixture
def desired(tmp_path: Path) -> Path:
    """An empty watched directory for the test's hive."""
    d = tmp_path / "desired"
    d.mkdir()
    return d


@pytest.fixture
def hub() -> Iterator[ThreadedHub]:
    """A Hugging Face compatible hub (and CDN) on loopback, for sync tests and subprocesses."""
    with ThreadedHub() as h:
        yield h


@pytest.fixture
def small_disk_size() -> str:
    """The size of `small_disk` (mount's `size=`); a module overrides this fixture to change
    it."""
    return "20m"


@pytest.fixture
def small_disk(tmp_path: Path, small_disk_size: str) -> Iterator[Path]:
    """A real small filesystem (a tmpfs of `small_disk_size`); the test is skipped, saying
    why, where none can be mounted."""
    where = tmp_path / "small"
    mount_tmpfs(where, small_disk_size)
    try:
        yield where
    finally:
        unmount(where)


def run_hive(
    *args: str,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """The `hive` command line, as a user runs it: its exit code, stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "hive", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
        preexec_fn=preexec_fn,
    )


def hive_on_hub(
    hive_factory: Callable[..., Hive], hub: ThreadedHub, desired: Path, tmp_path: Path, **kw: Any
) -> Hive:
    """A `hive serve` watching `desired` that takes `hub` for huggingface.co (`kw` as
    `hive_factory`'s, with `env` added to the hub's)."""
    env = {**hf_env(hub, tmp_path / "hf"), **kw.pop("env", {})}
    return hive_factory(desired=[desired], env=env, **kw)


def degraded(model: dict[str, Any]) -> dict[str, Any]:
    """The Degraded condition of a record as the API shows it."""
    return next(c for c in model["status"]["conditions"] if c["type"] == "Degraded")


def model_yaml(name: str, source: str, *, sha256: str | None = None, state: str = "present") -> str:
    lines = [
        "apiVersion: hive/v1",
        "kind: Model",
        "metadata:",
        f"  name: {name}",
        "spec:",
        f"  source: {source}",
        f"  state: {state}",
    ]
    if sha256:
        lines.append(f'  sha256: "{sha256}"')
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Write as editors do: a temp file beside the target, then rename over it."""
    tmp = path.with_name(f".{path.name}.tmp~")
    tmp.write_text(text)
    os.replace(tmp, path)


def bindable(port: int) -> bool:
    """Bindable as a server binds (SO_REUSEADDR: a TIME_WAIT left by closed connections
    does not count as taken)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def worker_ports() -> range:
    """Ten free ports for a test's workers: below the ephemeral range (32768-), far from
    9000-9999 (`make run` uses those)."""
    for _ in range(50):
        first = random.randrange(20000, 32000, 10)
        if all(bindable(p) for p in range(first, first + 10)):
            return range(first, first + 10)
    raise AssertionError("no free port range")


def answers_health(proc: subprocess.Popen[bytes], url: str, *, log: Path, what: str) -> bool:
    """True once `url`/health answers 200; fails at once, with `log`, if `proc` exited."""
    if proc.poll() is not None:
        raise AssertionError(f"{what} exited with {proc.returncode}:\n{log.read_text()}")
    try:
        with urllib.request.urlopen(url + "/health", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def as_json(item: Event | EventsDropped) -> dict[str, Any]:
    """An event as `/v1/events` sends it: a dict per event, the gap marker's shape for
    `EventsDropped`."""
    if isinstance(item, Event):
        return item.model_dump(mode="json")
    return {
        "action": "events_dropped",
        "level": "warning",
        "message": item.message,
        "data": {"missed": item.missed, "after_id": item.after_id},
    }


class Hive:
    """A real `hive serve` subprocess on loopback, with every narrated event collected."""

    def __init__(
        self,
        *,
        home: Path,
        desired: list[Path],
        log: Path,
        resync: float = 30.0,
        env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
        stop_workers: bool = True,
    ) -> None:
        #: Pass --stop-workers-on-exit (so that a test's hive leaves no worker behind).
        self.stop_workers = stop_workers
        self.home = home
        self.env = env
        self.extra_args = extra_args or []
        self.preexec_fn = preexec_fn
        self.desired = desired
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.resync = resync
        self.events: list[dict[str, Any]] = []
        #: The token hive is given (HIVE_TOKEN in `env`): sent with every request.
        self.token = (env or {}).get("HIVE_TOKEN")
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> Hive:
        args = [
            sys.executable,
            "-m",
            "hive",
            "serve",
            "--home",
            str(self.home),
            "--port",
            str(self.port),
            "--resync-interval",
            str(self.resync),
        ]
        for d in self.desired:
            args += ["--desired", str(d)]
        args += self.extra_args
        if self.stop_workers:
            args.append("--stop-workers-on-exit")
        env = {**os.environ, **(self.env or {})}
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=env,
                preexec_fn=self.preexec_fn,
            )
        poll(self._healthy, timeout=20, what=f"hive on {self.url} (log: {self.log})")
        self.events = []
        self._reader = threading.Thread(target=self._read_events, daemon=True)
        self._reader.start()
        poll(
            lambda: any(e.get("action") == "hive_start" for e in self.events),
            timeout=10,
            what="the event stream",
        )
        return self

    def _healthy(self) -> bool:
        assert self._proc is not None
        return answers_health(self._proc, self.url, log=self.log, what="hive")

    def _read_events(self) -> None:
        with contextlib.suppress(HiveError):  # hive stopped, or was killed
            asyncio.run(self._follow_events())

    async def _follow_events(self) -> None:
        """Every event since hive started, through the client's one SSE reader, kept as the
        JSON hive sent (the gap marker too)."""
        async with HiveClient(self.url, token=self.token) as client:
            async for item in client.events(since=0):
                self.events.append(as_json(item))

    def request(self, path: str, *, method: str = "GET", data: bytes | None = None) -> Any:
        """A urllib request to `path`, with the token when hive has one."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return urllib.request.Request(self.url + path, method=method, data=data, headers=headers)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.request(path), timeout=10) as r:
            return json.load(r)

    def get_status(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.request(path), timeout=10) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    def model(self, name: str) -> dict[str, Any] | None:
        code, body = self.get_status(f"/v1/models/{name}")
        return body if code == 200 else None

    def phase(self, name: str) -> str | None:
        m = self.model(name)
        return m["status"]["phase"] if m else None

    def wait_phase(self, name: str, phase: str, timeout: float = 15) -> dict[str, Any]:
        poll(
            lambda: self.phase(name) == phase,
            timeout=timeout,
            what=f"Model/{name} to be {phase} (now {self.phase(name)})",
        )
        m = self.model(name)
        assert m is not None
        return m

    def worker(self, name: str) -> dict[str, Any] | None:
        code, body = self.get_status(f"/v1/workers/{name}")
        return body if code == 200 else None

    def worker_phase(self, name: str) -> str | None:
        w = self.worker(name)
        return w["status"]["phase"] if w else None

    def wait_worker(
        self,
        name: str,
        phase: str,
        timeout: float = 20,
        *,
        saying: str | None = None,
        **observed: Any,
    ) -> dict[str, Any]:
        """Wait until Worker/name is in `phase`, its status message holds `saying` (a worker
        is Pending for more than one reason in turn: the model not ready yet, then the one
        under test) and its observed facts match `observed`."""

        def check() -> dict[str, Any] | None:
            w = self.worker(name)
            if w is None or w["status"]["phase"] != phase:
                return None
            if saying is not None and saying not in (w["status"].get("message") or ""):
                return None
            facts = w.get("observed") or {}
            return w if all(facts.get(k) == v for k, v in observed.items()) else None

        return poll(
            check,
            timeout=timeout,
            what=f"Worker/{name} to be {phase} {saying or ''} {observed or ''} "
            f"(now {self.worker(name)})",
        )

    def post(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(
                self.request(path, method="POST", data=b""), timeout=10
            ) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    def actions(self, obj: str | None = None) -> list[str]:
        return [e["action"] for e in list(self.events) if obj is None or e.get("object") == obj]

    def wait_event(
        self, action: str, *, obj: str | None = None, timeout: float = 15
    ) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for e in list(self.events):
                if e["action"] == action and (obj is None or e.get("object") == obj):
                    return e
            return None

        return poll(find, timeout=timeout, what=f"event {action} for {obj}")

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def kill(self) -> None:
        """SIGKILL: hive gets no chance to clean up, as in a crash or a power cut."""
        assert self._proc is not None
        self._proc.kill()
        self._proc.wait()
        self._proc = None

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None


@pytest.fixture
def hive_factory(tmp_path: Path) -> Iterator[Callable[..., Hive]]:
    started: list[Hive] = []

    def make(
        *,
        desired: list[Path],
        home: Path | None = None,
        resync: float = 30.0,
        env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
        stop_workers: bool = True,
    ) -> Hive:
        h = Hive(
            stop_workers=stop_workers,
            home=home or tmp_path / "home",
            desired=desired,
            log=tmp_path / f"hive-{len(started)}.log",
            resync=resync,
            env=env,
            extra_args=extra_args,
            preexec_fn=preexec_fn,
        )
        started.append(h)
        return h.start()

    yield make
    for h in started:
        h.stop()
