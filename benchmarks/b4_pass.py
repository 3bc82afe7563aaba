"""B4 (a), run as a script in a child interpreter of the tree measured (`Tree`): converge
1,000 Models with an in-process `Manager`, then time one full observe + plan pass against
a naive one, interleaved; prints the timings as one JSON line. It imports only `hive` (the
tree's), the stdlib and third-party packages, never `benchmarks`.

`python benchmarks/b4_pass.py HOME DESIRED REPS MODELS`
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hive.api.views import status_view
from hive.core.plan import plan
from hive.model.observed import ModelMetadata, ObservedModel
from hive.model.status import ModelPhase
from hive.observers.catalog import ModelCatalog
from hive.runtime.manager import Manager
from hive.settings import Settings

try:  # the catalog's file names: hive/model/provisioning.py since issue 14
    from hive.model.provisioning import METADATA, MODEL_FILE, PARTIAL_SUFFIX
except ImportError:  # an older tree
    from hive.observers.catalog import (  # type: ignore[attr-defined]
        METADATA,
        MODEL_FILE,
        PARTIAL_SUFFIX,
    )

NOW = datetime.now(UTC)
CONVERGE_TIMEOUT = 300.0


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def status_of(manager: Manager) -> Any:
    """`GET /v1/status`'s view: since issue 14 the caller reads the catalog first (in a
    thread, in the API); here both are timed together, as the old view read it itself."""
    try:
        return status_view(manager, manager.catalog.observe_all())
    except TypeError:  # an older tree: status_view(manager)
        return status_view(manager)  # type: ignore[call-arg]


def statuses(manager: Manager) -> dict[Any, Any]:
    """The models' statuses, by key: the one line here that knows where the manager keeps
    them (adapt it, and keep the old tree's way beside it, when that moves)."""
    if hasattr(manager, "statuses"):  # the StatusStore, since issue 14
        return dict(manager.statuses.items())
    return dict(manager.reconciler.statuses)  # type: ignore[attr-defined]


def converged(manager: Manager, models_wanted: int) -> bool:
    models = statuses(manager)
    return (
        len(models) == models_wanted
        and all(s.phase == ModelPhase.AVAILABLE for s in models.values())
        and len(manager.queue) == 0
        and not manager.queue.processing
    )


# -- the peer of (a): a pass with no stat cache ------------------------------------------
def naive_observe_all(root: Path) -> dict[str, ObservedModel]:
    """What a controller without a cache does: list, stat, read and parse every
    metadata.json and validate it, on every pass."""
    out: dict[str, ObservedModel] = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.is_dir(follow_symlinks=False):
            continue
        directory = Path(entry.path)
        names = os.listdir(directory)
        raw = json.loads((directory / METADATA).read_bytes())
        metadata = ModelMetadata.model_validate(raw)
        size = (directory / MODEL_FILE).stat().st_size if MODEL_FILE in names else None
        out[entry.name] = ObservedModel(
            name=entry.name,
            directory=directory,
            metadata=metadata,
            file_size=size,
            partial=any(n.endswith(PARTIAL_SUFFIX) for n in names),
        )
    return out


async def _interleaved(
    fns: dict[str, Callable[[], Any]], reps: int, *, manager: Manager
) -> dict[str, list[float]]:
    """Seconds per call of each function, and of the periodic pass the resync loop makes
    (every source's resync, then resync_now); one of each per round, so that the noise of
    a shared machine falls on hive and its peers alike."""
    out: dict[str, list[float]] = {name: [] for name in [*fns, "periodic"]}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for source in manager.sources:
            await source.resync()
        manager.resync_now()
        out["periodic"].append(time.perf_counter() - t0)
    return out


async def _pass_in_process(
    home: Path, desired: Path, *, reps: int, models_wanted: int
) -> dict[str, list[float]]:
    settings = Settings(home=home, desired=(desired,), console=False)
    manager = Manager(settings)
    t0 = time.perf_counter()
    await manager.start()
    try:
        deadline = time.monotonic() + CONVERGE_TIMEOUT
        while not converged(manager, models_wanted):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"B4: not converged after {CONVERGE_TIMEOUT:.0f}s: "
                    f"{len(statuses(manager))} statuses"
                )
            await asyncio.sleep(0.1)
        converge = time.perf_counter() - t0
        log(f"B4: {models_wanted} models converged in {converge:.1f} s; timing {reps} passes")
        records = manager.model_records()
        observed = manager.catalog.observe_all()
        if plan(records, observed, prune_allowed=True, now=NOW):
            raise RuntimeError("B4: converged, yet the plan is not empty")
        if len(naive_observe_all(manager.catalog.root)) != models_wanted:
            raise RuntimeError("B4: the naive observer does not see every model")
        root = manager.catalog.root
        timings = await _interleaved(
            {
                "resync_now": manager.resync_now,
                "observe_all": manager.catalog.observe_all,
                "plan": lambda: plan(records, observed, prune_allowed=True, now=NOW),
                "naive": lambda: plan(
                    records, naive_observe_all(root), prune_allowed=True, now=NOW
                ),
                "cold": lambda: plan(
                    records, ModelCatalog(home).observe_all(), prune_allowed=True, now=NOW
                ),
                "status_view": lambda: status_of(manager),
            },
            reps,
            manager=manager,
        )
        timings["converge"] = [converge]
        return timings
    finally:
        await manager.stop()


def main(argv: list[str]) -> int:
    home, desired, reps, models = Path(argv[0]), Path(argv[1]), int(argv[2]), int(argv[3])
    timings = asyncio.run(_pass_in_process(home, desired, reps=reps, models_wanted=models))
    print(json.dumps(timings))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
