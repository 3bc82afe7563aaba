"""The test-only runtime entry for `testkit/scripted_worker.py`, written where hive reads
its worker catalog. Shared by the tests (through tests/conftest.py) and by the B5 to B7
benchmarks, so that both run the very same entry."""

from __future__ import annotations

import json
from pathlib import Path

SCRIPTED_WORKER = Path(__file__).resolve().parent / "scripted_worker.py"


def install_scripted_runtime(
    home: Path,
    *,
    grace: float = 2.0,
    start_timeout: float = 15.0,
    runtime_id: str = "scripted",
    metrics: bool = False,
) -> Path:
    """The test-only runtime entry in `<home>/workers/<id>/metadata.json` (the rbee layout);
    with `metrics`, hive scrapes the worker's `/metrics` (llama.cpp's names, fixed values)."""
    entry = home / "workers" / runtime_id
    entry.mkdir(parents=True, exist_ok=True)
    metadata = {
        "id": runtime_id,
        "name": "scripted test worker (no inference; tests only)",
        "worker_type": "cpu",
        "version": "0.0.0",
        "argv": [
            "{python}",
            str(SCRIPTED_WORKER),
            "--host",
            "{host}",
            "--port",
            "{port}",
            "--model",
            "{model}",
            "--mode",
            "{mode}",
            "--delay",
            "{delay}",
            "--child",
            "{child}",
        ],
        "args": {
            "mode": {"type": "str", "default": "serve"},
            "delay": {"type": "float", "default": 0.0, "min": 0},
            "child": {"type": "bool", "default": False},
        },
        "grace_seconds": grace,
        "start_timeout_seconds": start_timeout,
    }
    if metrics:
        metadata["metrics_path"] = "/metrics"
    path = entry / "metadata.json"
    path.write_text(json.dumps(metadata, indent=2))
    return path
