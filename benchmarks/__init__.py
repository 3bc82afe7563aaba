"""Benchmarks of hive (not tests): each measures hive and a named peer in the same run and
prints the ratio. `python -m benchmarks [--quick]`; results go to docs/benchmarks.md.

This module holds what the benchmarks share: result rows, percentiles, a tiny model,
manifests, the source tree whose hive is measured (`Tree`), and a `hive serve` subprocess
that is always stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


@dataclass(frozen=True)
class Tree:
    """The source tree whose hive a benchmark measures: its `hive/` package is what every
    hive process runs (`hive serve`, the workers it spawns, and the in-process parts, run
    in a child interpreter). The benchmark's own code, its peers and its client
    (`hive.client`) are always this checkout's. Default: this checkout."""

    root: Path = REPO
    label: str = "this tree"

    def env(self) -> dict[str, str]:
        """The environment a process needs to import this tree's `hive` first (also
        inherited by the workers hive spawns: the launcher is the tree's too)."""
        rest = os.environ.get("PYTHONPATH")
        path = str(self.root) if not rest else f"{self.root}{os.pathsep}{rest}"
        return {"PYTHONPATH": path}

    def check(self) -> None:
        """Fail early, and say why, when `root` holds no hive package or a child
        interpreter with `env()` would import another one."""
        if not (self.root / "hive" / "__init__.py").is_file():
            raise SystemExit(f"--hive-tree {self.root}: no hive/__init__.py there")
        found = subprocess.run(
            [PYTHON, "-c", "import hive; print(hive.__file__)"],
            capture_output=True,
            text=True,
            cwd=self.root,
            env={**os.environ, **self.env()},
            check=False,
        ).stdout.strip()
        if Path(found).resolve() != (self.root / "hive" / "__init__.py").resolve():
            raise SystemExit(f"--hive-tree {self.root}: a child imports hive from {found!r}")


HERE = Tree()


@dataclass(frozen=True)
class Row:
    """One measured quantity, next to its peer and the goal."""

    bench: str
    metric: str
    value: float
    unit: str
    peer: str = ""
    peer_value: float | None = None
    goal: str = ""
    #: "measured" or "computed" (an extrapolation, never a measurement).
    how: str = "measured"

    @property
    def ratio(self) -> float | None:
        if self.peer_value is None or self.peer_value == 0 or self.value == 0:
            return None
        return self.peer_value / self.value

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio_peer_over_hive": self.ratio}


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n*q/100), at least 1
    return ordered[int(rank) - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": float(len(values)),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values),
        "mean": sum(values) / len(values),
    }


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- inputs ------------------------------------------------------------------------------
def make_tiny_model(out: Path) -> Path:
    """A real ~0.5 MB GGUF, made once per run by the example generator."""
    subprocess.run(
        [PYTHON, str(REPO / "examples" / "make_tiny_model.py"), str(out)],
        check=True,
        stdout=subprocess.DEVNULL,
        cwd=REPO,
    )
    return out


def model_manifest(name: str, source: Path) -> str:
    return (
        "apiVersion: hive/v1\n"
        "kind: Model\n"
        "metadata:\n"
        f"  name: {name}\n"
        "spec:\n"
        f"  source: file:{source}\n"
    )


def write_atomic(path: Path, text: str) -> None:
    """As editors and config tools write: a hidden temp file in the same directory, renamed."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_plain(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


# -- hive serve as a subprocess ----------------------------------------------------------
def cpu_seconds(p: psutil.Process) -> float:
    """User + system CPU of a process, all its threads."""
    t = p.cpu_times()
    return t.user + t.system


def thread_cpu(p: psutil.Process, thread_id: int) -> float | None:
    """User + system CPU of one thread of a process (by its native id); None if it has
    no such thread."""
    for t in p.threads():
        if t.id == thread_id:
            return float(t.user_time + t.system_time)
    return None


def main_thread_cpu(p: psutil.Process) -> float:
    """User + system CPU of a process's main thread (for hive: its event loop)."""
    return thread_cpu(p, p.pid) or 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 10 s; never leaves a child behind."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextlib.contextmanager
def child(
    argv: list[str], *, log_file: Path, env: dict[str, str] | None = None, cwd: Path = REPO
) -> Iterator[subprocess.Popen[Any]]:
    """A subprocess with its output in `log_file`, stopped on exit and on any exception."""
    with open(log_file, "wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env={**os.environ, **(env or {})}
        )
        try:
            yield proc
        finally:
            stop_process(proc)


@contextlib.contextmanager
def hive_serve(
    *,
    desired: Path,
    home: Path,
    log_file: Path,
    resync_interval: float | None = None,
    ready_timeout: float = 60.0,
    env: dict[str, str] | None = None,
    args: Sequence[str] = (),
    tree: Tree,
) -> Iterator[tuple[subprocess.Popen[Any], str]]:
    """The real `hive serve` of `tree` on a free port; yields (process, base URL) once
    /health answers. `args`: more flags for `hive serve`."""
    port = free_port()
    argv = [PYTHON, "-m", "hive", "serve", "--desired", str(desired), "--home", str(home)]
    argv += ["--port", str(port)]
    if resync_interval is not None:
        argv += ["--resync-interval", str(resync_interval)]
    argv += args
    url = f"http://127.0.0.1:{port}"
    with child(argv, log_file=log_file, env={**(env or {}), **tree.env()}, cwd=tree.root) as proc:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"hive serve exited with {proc.returncode}: {log_file.read_text()[-2000:]}"
                )
            with contextlib.suppress(OSError):
                if get_json(f"{url}/health", timeout=1.0).get("status") == "ok":
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"hive serve not ready after {ready_timeout:.0f}s")
            time.sleep(0.05)
        yield proc, url


def run_in_tree(tree: Tree, args: Sequence[str], *, timeout: float) -> Any:
    """Run `python ARGS` (a script, or `-c CODE ...`, that imports only `hive`, the stdlib
    and third-party packages) in a child interpreter that imports `tree`'s hive; its last
    stdout line, as JSON. Raises with its stderr's end when it fails."""
    proc = subprocess.run(
        [PYTHON, *args],
        capture_output=True,
        cwd=tree.root,
        env={**os.environ, **tree.env()},
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} exited with {proc.returncode}: {proc.stderr[-2000:]!r}")
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])
