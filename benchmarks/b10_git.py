"""B10 fleet convergence: commit to a git repository -> every hive of a fleet converged.

`run` (B10): 10 `hive serve` processes with a git source on one bare repository (`file://`),
each declaring a Model from `file:` (the tiny model) and a llama-cpp Worker on it; 5
commits, each naming a new Model and moving the Worker onto it; timed from the commit
being in the remote (the push returned) to all 10 converged: the revision applied, the
Model Available, the Worker Running on it. Once with `--git-interval 5` (polling), once
with the webhook (the benchmark POSTs a signed push to every hive's /v1/hooks/fleet at
once, right after the push; a fleet of its own, with an hour's interval). The floor: 10
concurrent `git fetch --depth 1` of the same commit into 10 bare repositories. Then hive's
CPU per idle git source per hour of polling (a hive with one source against one with
none, children's CPU counted).

`run_hundred` (B10-100, only when named): 100 hives, a Model only, the webhook, 5 commits;
what bounds it: the hives' own CPU, their git children's CPU and the machine's, against the
floor of 100 concurrent fetches.

Argo CD (polls every 120-180 s) and Flux (60 s) cannot run here (no Kubernetes): their
default intervals bound their wait from above; hive's polling at 5 s is measured instead.
"""

from __future__ import annotations

import contextlib
import functools
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from benchmarks import Row, Tree, log, make_tiny_model, model_manifest, percentile
from benchmarks.b10_fleet import (
    Converged,
    FetchFloor,
    Fleet,
    Remote,
    fleet_cpu,
    git,
    machine_busy,
    manifests,
    on_all,
    push,
    wait_converged,
)
from benchmarks.fleet import free_port_range

B = "B10"
COMMITS = 5
POLL_INTERVAL = 5.0
#: A fleet that is told by the webhook never polls meanwhile.
HOOK_ONLY_INTERVAL = 3600.0


@contextlib.contextmanager
def fleet(root: Path, tree: Tree) -> Iterator[Fleet]:
    f = Fleet(root, tree=tree, token=uuid.uuid4().hex)
    try:
        yield f
    finally:
        f.stop()


def _times(results: list[Converged], t0: float) -> dict[str, float]:
    return {
        "fetched": max(r.fetched for r in results) - t0,
        "applied": max(r.applied for r in results) - t0,
        "converged": max(r.converged for r in results) - t0,
        "first": min(r.converged for r in results) - t0,
    }


def commits(
    f: Fleet,
    remote: Remote,
    model: Path,
    *,
    worker: bool,
    hook: bool,
    first: int,
    every: float,
    floor: FetchFloor | None = None,
) -> list[dict[str, float]]:
    """`COMMITS` commits, one after the other (each once the last has converged, 1 s
    apart); per commit: seconds from the push to the fleet's last fetch, last apply and
    last convergence, hive's and the machine's CPU meanwhile, and the floor after it."""
    out = []
    for k in range(first, first + COMMITS):
        time.sleep(1.0)  # the last commit's exits and restarts settle
        if not hook:  # a commit lands anywhere in the hives' poll cycles, not in step
            time.sleep(random.uniform(0, POLL_INTERVAL))
        cpu0, busy0 = fleet_cpu(f.hives), machine_busy()
        sha = remote.commit(manifests(k, model, worker=worker), f"commit {k}")
        t0 = time.time()
        if hook:
            codes = on_all(f.hives, functools.partial(push, sha=sha))
            assert set(codes) == {202}, codes
        results = wait_converged(
            f.hives,
            f"main@sha1:{sha}",
            f"tiny-{k}",
            "chat" if worker else None,
            every=every,
            timeout=300,
        )
        cpu1, busy1 = fleet_cpu(f.hives), machine_busy()
        got = _times(results, t0)
        got["hive_cpu"] = cpu1.own - cpu0.own
        got["git_cpu"] = cpu1.children - cpu0.children
        got["machine_busy"] = (busy1[0] - busy0[0]) / max(1e-9, busy1[1] - busy0[1])
        if floor is not None:
            got["floor"] = floor.fetch()
        log(
            f"B10 {len(f.hives)} hives, {'hook' if hook else 'poll'}, commit {k}: converged "
            f"{got['converged']:.2f} s (applied {got['applied']:.2f}, fetched "
            f"{got['fetched']:.2f}); hive CPU {got['hive_cpu']:.2f} s, children (git) "
            f"{got['git_cpu']:.2f} s, machine busy {100 * got['machine_busy']:.0f} %"
            + (f"; floor {got['floor']:.3f} s" if floor is not None else "")
        )
        out.append(got)
    return out


def _ready(f: Fleet, model: str, worker: str | None, sha: str) -> None:
    wait_converged(f.hives, f"main@sha1:{sha}", model, worker, every=0.5, timeout=600)


def ten(root: Path, tree: Tree, model: Path) -> list[Row]:
    remote = Remote(root / "repo")
    sha = remote.commit(manifests(0, model, worker=True), "commit 0")
    ports = free_port_range(40)
    runs: dict[str, list[dict[str, float]]] = {}
    floor = FetchFloor(root / "floor", 10, remote.url)
    start = 0  # the Model the fleet starts on: commit 0's, then the last commit's
    for mode, interval, base in (("poll", POLL_INTERVAL, 0), ("hook", HOOK_ONLY_INTERVAL, 20)):
        with fleet(root / mode, tree) as f:
            log(f"B10: 10 hives, {mode}: starting")
            # Each hive fetches once as it starts, whatever its interval.
            f.start(10, remote=remote, interval=interval, first_worker_port=ports + base)
            _ready(f, f"tiny-{start}", "chat", sha)
            runs[mode] = commits(
                f,
                remote,
                model,
                worker=True,
                hook=mode == "hook",
                first=start + 1,
                every=0.1,
                floor=floor if mode == "hook" else None,
            )
        start += COMMITS
        sha = git(remote.work, "rev-parse", "HEAD")
    single = FetchFloor(root / "floor-1", 1, remote.url)
    one = statistics.median(single.fetch() for _ in range(5))
    return ten_rows(runs, one)


def ten_rows(runs: dict[str, list[dict[str, float]]], one_fetch: float) -> list[Row]:
    poll, hook = runs["poll"], runs["hook"]

    def p50(rs: list[dict[str, float]], key: str) -> float:
        return percentile([r[key] for r in rs], 50)

    def top(rs: list[dict[str, float]], key: str) -> float:
        return max(r[key] for r in rs)

    floor = statistics.median(r["floor"] for r in hook)
    what = "10 hives, Model + llama-cpp Worker: commit -> all converged"
    return [
        Row(B, f"{what}, webhook, p50", p50(hook, "converged"), "s", "hive polling at 5 s",
            p50(poll, "converged"), "< 2 s (webhook)"),
        Row(B, f"{what}, webhook, max", top(hook, "converged"), "s", "hive polling at 5 s",
            top(poll, "converged"), "< 2 s (webhook)"),
        Row(B, f"{what}, polling 5 s, p50", p50(poll, "converged"), "s"),
        Row(B, f"{what}, polling 5 s, max", top(poll, "converged"), "s"),
        Row(B, "10 hives, webhook: commit -> revision applied on all, p50", p50(hook, "applied"),
            "s", "floor: 10 concurrent git fetch --depth 1", floor),
        Row(B, "10 hives, webhook: commit -> all converged, p50", p50(hook, "converged"), "s",
            "floor: 10 concurrent git fetch --depth 1", floor),
        Row(B, "one git fetch --depth 1 of the repository (file://), median of 5",
            one_fetch, "s"),
        Row(B, "10 hives, webhook: hives' own CPU per commit (sum), p50", p50(hook, "hive_cpu"),
            "s"),
        Row(B, "10 hives, webhook: their children's CPU per commit (git, exited workers), p50",
            p50(hook, "git_cpu"), "s"),
    ]  # fmt: skip


def idle_cost(root: Path, tree: Tree, model: Path, *, window: float) -> list[Row]:
    """CPU per idle git source per hour of polling: a hive polling one source every
    `POLL_INTERVAL` s (its Model converged) against a hive with none (the same Model from
    a watched directory), over the same `window`; their children's CPU (git) counted."""
    remote = Remote(root / "repo")
    sha = remote.commit(manifests(0, model, worker=False), "idle")
    desired = root / "desired"
    desired.mkdir()
    (desired / "m.yaml").write_text(model_manifest("tiny-0", model))
    with fleet(root / "with", tree) as polling, fleet(root / "without", tree) as plain:
        polling.start(1, remote=remote, interval=POLL_INTERVAL)
        plain.start(1, remote=None, desired=desired)
        _ready(polling, "tiny-0", None, sha)
        time.sleep(2.0)  # both past their start
        a0, b0 = fleet_cpu(polling.hives), fleet_cpu(plain.hives)
        t0 = time.monotonic()
        time.sleep(window)
        a1, b1 = fleet_cpu(polling.hives), fleet_cpu(plain.hives)
        elapsed = time.monotonic() - t0
    with_source = (a1.own + a1.children) - (a0.own + a0.children)
    without = (b1.own + b1.children) - (b0.own + b0.children)
    git_part = a1.children - a0.children
    per_hour = (with_source - without) / elapsed * 3600
    per_fetch = (with_source - without) / (elapsed / POLL_INTERVAL)
    log(
        f"B10 idle over {elapsed:.0f} s: with a source {with_source:.3f} s CPU (git "
        f"{git_part:.3f} s), without {without:.3f} s; {per_fetch * 1000:.1f} ms per poll"
    )
    what = "idle hive, CPU per git source per hour of polling"
    return [
        Row(B, f"{what}, every 5 s (measured over {elapsed:.0f} s)", per_hour, "s/h"),
        Row(B, f"{what}, every 60 s (default; from the 5 s cost per poll)", per_fetch * 60,
            "s/h", how="computed"),
        Row(B, "idle hive: CPU per poll of an unchanged git source (hive + git)",
            per_fetch * 1000, "ms"),
        Row(B, "idle hive: of which its git commands", git_part / (elapsed / POLL_INTERVAL)
            * 1000, "ms"),
        Row(B, "idle hive without git sources: CPU per hour", without / elapsed * 3600, "s/h"),
    ]  # fmt: skip


def run(*, quick: bool, tree: Tree) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="hive-b10-") as tmp:
        root = Path(tmp)
        model = make_tiny_model(root / "tiny.gguf")
        rows = ten(root / "ten", tree, model)
        return rows + idle_cost(root / "idle", tree, model, window=20.0 if quick else 60.0)


def hundred_rows(results: list[dict[str, float]], n: int) -> list[Row]:
    def p50(key: str) -> float:
        return percentile([r[key] for r in results], 50)

    what = f"{n} hives, a Model, webhook"
    floor = statistics.median(r["floor"] for r in results)
    return [
        Row(B, f"{what}: commit -> all converged, p50", p50("converged"), "s",
            f"floor: {n} concurrent git fetch --depth 1", floor, "< 10 s"),
        Row(B, f"{what}: commit -> all converged, max", max(r["converged"] for r in results),
            "s", goal="< 10 s"),
        Row(B, f"{what}: commit -> last fetch done, p50", p50("fetched"), "s",
            f"floor: {n} concurrent git fetch --depth 1", floor),
        Row(B, f"{what}: commit -> first hive converged, p50", p50("first"), "s"),
        Row(B, f"{what}: hives' own CPU per commit (sum), p50", p50("hive_cpu"), "s"),
        Row(B, f"{what}: their git commands' CPU per commit (sum), p50", p50("git_cpu"), "s"),
        Row(B, f"{what}: machine busy while converging, p50", 100 * p50("machine_busy"), "%"),
    ]  # fmt: skip


def run_hundred(*, quick: bool, tree: Tree) -> list[Row]:
    n = 30 if quick else 100
    with tempfile.TemporaryDirectory(prefix="hive-b10-100-") as tmp:
        root = Path(tmp)
        model = make_tiny_model(root / "tiny.gguf")
        remote = Remote(root / "repo")
        sha = remote.commit(manifests(0, model, worker=False), "commit 0")
        floor = FetchFloor(root / "floor", n, remote.url)
        with fleet(root / "fleet", tree) as f:
            t = time.monotonic()
            f.start(n, remote=remote, interval=HOOK_ONLY_INTERVAL)
            log(f"B10: {n} hives started in {time.monotonic() - t:.0f} s")
            _ready(f, "tiny-0", None, sha)
            results = commits(
                f, remote, model, worker=False, hook=True, first=1, every=0.25, floor=floor
            )
        return hundred_rows(results, n)
