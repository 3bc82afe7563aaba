"""B10's fleet: a bare repository the benchmark commits to, N `hive serve` processes with a
git source on it (started in batches, every one marked so that a sweep finds whatever
survives), signed push notifications, and when each hive converged on a revision, read
from the times hive itself stamps (the sync in the source's history, the Model's and the
Worker's Ready conditions).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from benchmarks import PYTHON, Tree, fleet, free_port, get_json, log

#: Every process of a run (each hive, the git commands and workers it starts) carries
#: MARK=<run token> in its environment: the sweep at the end kills whatever is left.
MARK = "HIVE_BENCH_B10_RUN"
SOURCE = "fleet"
SECRET = b"b10-benchmark-webhook-secret-0123456789"
#: Hives started at once; the next batch waits until these answer /health.
BATCH = 10


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


class Remote:
    """A bare repository (`file://`) and a clone the benchmark commits in and pushes from."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "fleet.git"
        self.work = root / "work"
        self.bare.mkdir(parents=True)
        git(self.bare, "init", "-q", "--bare", "-b", "main")
        self.work.mkdir()
        git(self.work, "init", "-q", "-b", "main")
        git(self.work, "remote", "add", "origin", str(self.bare))
        self.url = f"file://{self.bare}"

    def commit(self, files: dict[str, str], message: str) -> str:
        """Write `files` (replacing what was there), commit and push; the commit's SHA. When
        it returns, the commit is in the remote."""
        for path in self.work.glob("*.yaml"):
            path.unlink()
        for name, text in files.items():
            (self.work / name).write_text(text)
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "--allow-empty", "-m", message)
        git(self.work, "push", "-q", "origin", "HEAD:main")
        return git(self.work, "rev-parse", "HEAD")


def manifests(n: int, model: Path, *, worker: bool) -> dict[str, str]:
    """Commit `n`'s repository: Model `tiny-<n>` from `file:` and, with `worker`, Worker
    `chat` (llama-cpp) on it. Each commit names a new Model: every hive places it and
    moves its worker onto it (a restart), the previous Model leaves the desired state."""
    text = (
        "apiVersion: hive/v1\nkind: Model\n"
        f"metadata:\n  name: tiny-{n}\nspec:\n  source: file:{model}\n"
    )
    if worker:
        text += (
            "---\napiVersion: hive/v1\nkind: Worker\nmetadata:\n  name: chat\n"
            f"spec:\n  model: tiny-{n}\n  runtime: llama-cpp\n  device: CPU-0\n"
            "  args: {ctx_size: 256, threads: 1}\n"
        )
    return {"fleet.yaml": text}


@dataclass
class Hive:
    url: str
    home: Path
    proc: subprocess.Popen[bytes]


class Fleet:
    """N `hive serve` processes, each with the git source `fleet` on `remote`."""

    def __init__(self, root: Path, *, tree: Tree, token: str) -> None:
        self.root = root
        self.tree = tree
        self.token = token
        self.hives: list[Hive] = []
        root.mkdir(parents=True, exist_ok=True)
        self.secret_file = root / "hook.secret"
        self.secret_file.write_bytes(SECRET)

    def start(
        self,
        n: int,
        *,
        remote: Remote | None,
        interval: float = 60.0,
        first_worker_port: int | None = None,
        desired: Path | None = None,
    ) -> None:
        """Start `n` hives, `BATCH` at a time (each batch answers /health before the
        next starts): each with the git source on `remote` (none without), `desired` as a
        watched directory, and one worker port each from `first_worker_port` on."""
        first = len(self.hives)
        for b in range(first, first + n, BATCH):
            batch = [
                self._spawn(
                    i,
                    remote=remote,
                    interval=interval,
                    worker_port=None if first_worker_port is None else first_worker_port + i,
                    desired=desired,
                )
                for i in range(b, min(b + BATCH, first + n))
            ]
            self.hives += batch
            for hive in batch:
                wait_healthy(hive)
            log(f"B10: {len(self.hives)} hives answer /health")

    def _spawn(
        self,
        i: int,
        *,
        remote: Remote | None,
        interval: float,
        worker_port: int | None,
        desired: Path | None,
    ) -> Hive:
        home = self.root / f"hive-{i:03d}"
        home.mkdir(parents=True)
        port = free_port()
        argv = [PYTHON, "-m", "hive", "serve", "--home", str(home), "--port", str(port)]
        argv += ["--gpu-probe", "none", "--stop-workers-on-exit"]
        if worker_port is not None:
            argv += ["--worker-ports", f"{worker_port}-{worker_port}"]
        if desired is not None:
            argv += ["--desired", str(desired)]
        if remote is not None:
            argv += ["--git", remote.url, "--git-ref", "main", "--git-name", SOURCE]
            argv += ["--git-interval", f"{interval:g}"]
            argv += ["--git-webhook-secret-file", str(self.secret_file)]
        env = {**os.environ, **self.tree.env(), MARK: self.token}
        env.pop("HIVE_TOKEN", None)
        with open(home / "hive.log", "wb") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, cwd=self.tree.root, env=env
            )
        return Hive(url=f"http://127.0.0.1:{port}", home=home, proc=proc)

    def stop(self) -> None:
        """SIGTERM to every hive (each stops its workers), SIGKILL after 20 s, then the
        sweep."""
        for hive in self.hives:
            with contextlib.suppress(OSError):
                hive.proc.terminate()
        deadline = time.monotonic() + 20
        for hive in self.hives:
            try:
                hive.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                hive.proc.kill()
                hive.proc.wait()
        self.hives = []
        left = sweep(self.token)
        if left:
            log(f"B10: swept {len(left)} process(es) left behind: {left[:10]}")


def wait_healthy(hive: Hive, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if hive.proc.poll() is not None:
            tail = (hive.home / "hive.log").read_text()[-2000:]
            raise RuntimeError(f"B10: hive exited with {hive.proc.returncode}: {tail}")
        with contextlib.suppress(OSError):
            if get_json(f"{hive.url}/health", timeout=2.0).get("status") == "ok":
                return
        time.sleep(0.1)
    raise RuntimeError(f"B10: {hive.url} not healthy after {timeout:.0f} s")


def sweep(token: str) -> list[int]:
    """Kill every process of this run that is still there (`benchmarks.fleet.sweep`)."""
    return fleet.sweep(token, mark=MARK)


# -- push notifications ------------------------------------------------------------------
def push(hive: Hive, sha: str) -> int:
    """A push notification as a git host sends it (`X-Hub-Signature-256`); the status."""
    body = json.dumps({"ref": "refs/heads/main", "after": sha}).encode()
    signature = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        f"{hive.url}/v1/hooks/{SOURCE}",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return int(answer.status)


def on_all(hives: Sequence[Hive], fn: Callable[[Hive], Any], workers: int = 32) -> list[Any]:
    with ThreadPoolExecutor(min(workers, len(hives))) as pool:
        return list(pool.map(fn, hives))


# -- convergence, as hive stamps it --------------------------------------------------------
def stamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def ready_since(obj: dict[str, Any]) -> float | None:
    for c in obj["status"].get("conditions") or []:
        if c["type"] == "Ready" and c["status"] == "True":
            return stamp(c["lastTransitionTime"])
    return None


def _get(url: str) -> Any:
    try:
        return get_json(url, timeout=30)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


@dataclass(frozen=True)
class Converged:
    fetched: float  # hive's lastFetchTime (the first fetch that found the revision, or later)
    applied: float  # the revision's sync in the source's history
    converged: float  # the last of: applied, the Model Ready, the Worker Ready on it


def converged(hive: Hive, revision: str, model: str, worker: str | None) -> Converged | None:
    """When `hive` converged on `revision` (wall clock, hive's stamps), or None if not
    yet: the revision applied, Model `model` Available and, if given, Worker `worker`
    Running on it."""
    status = get_json(f"{hive.url}/v1/status", timeout=30)
    (source,) = [s for s in status["sources"] if s["name"] == f"git:{SOURCE}"]
    state = source["git"]
    if state["lastAppliedRevision"] != revision:
        return None
    syncs = [s for s in state["history"] if s["revision"] == revision and s["outcome"] == "applied"]
    if not syncs:
        return None
    applied = stamp(syncs[-1]["time"])
    m = _get(f"{hive.url}/v1/models/{model}")
    if m is None or m["status"]["phase"] != "Available" or (ready := ready_since(m)) is None:
        return None
    done = max(applied, ready)
    if worker is not None:
        w = _get(f"{hive.url}/v1/workers/{worker}")
        if w is None or w["status"]["phase"] != "Running":
            return None
        if (w.get("observed") or {}).get("model") != model or (up := ready_since(w)) is None:
            return None
        done = max(done, up)
    return Converged(fetched=stamp(state["lastFetchTime"]), applied=applied, converged=done)


def wait_converged(
    hives: Sequence[Hive],
    revision: str,
    model: str,
    worker: str | None,
    *,
    every: float,
    timeout: float,
) -> list[Converged]:
    """Poll every hive not yet converged, every `every` s, until all are; their stamps."""
    found: dict[int, Converged] = {}
    deadline = time.monotonic() + timeout
    with ThreadPoolExecutor(min(16, len(hives))) as pool:
        while len(found) < len(hives):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"B10: {len(hives) - len(found)} of {len(hives)} hives not converged on "
                    f"{revision} after {timeout:.0f} s"
                )
            waiting = [i for i in range(len(hives)) if i not in found]
            answers = pool.map(lambda i: converged(hives[i], revision, model, worker), waiting)
            for i, got in zip(waiting, answers, strict=True):
                if got is not None:
                    found[i] = got
            if len(found) < len(hives):
                time.sleep(every)
    return [found[i] for i in range(len(hives))]


# -- CPU ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cpu:
    own: float  # the hive processes' own CPU seconds
    children: float  # the CPU of their children that exited (the git commands)


def fleet_cpu(hives: Sequence[Hive]) -> Cpu:
    own = children = 0.0
    for hive in hives:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(hive.proc.pid).cpu_times()
            own += t.user + t.system
            children += t.children_user + t.children_system
    return Cpu(own=own, children=children)


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores."""
    t = psutil.cpu_times()
    total = sum(t)
    return total - t.idle - getattr(t, "iowait", 0.0), total


# -- the floor -----------------------------------------------------------------------------
class FetchFloor:
    """`n` bare repositories; `fetch()` runs `git fetch --depth 1` of the remote's main
    into all `n` at once (as `n` hives do on a hook), the wall time until the last ends."""

    def __init__(self, root: Path, n: int, url: str) -> None:
        self.url = url
        self.repos = [root / f"floor-{i:03d}" for i in range(n)]
        for repo in self.repos:
            repo.mkdir(parents=True)
            git(repo, "init", "-q", "--bare", ".")

    def fetch(self) -> float:
        argv = ["git", "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--depth", "1"]
        argv += ["--", self.url, "+main:refs/hive/fetched"]
        t0 = time.monotonic()
        procs = [subprocess.Popen(argv, cwd=repo) for repo in self.repos]
        for proc in procs:
            if proc.wait(timeout=300) != 0:
                raise RuntimeError(f"B10: floor fetch failed with {proc.returncode}")
        return time.monotonic() - t0
