"""The seed heartbeat's capability changes: a table of inventories before and after."""

from __future__ import annotations

from typing import Any

import pytest

from hive.core.capability_changes import Inventory, capability_changes

GB = 1_000_000_000
TWO = Inventory(models={"a": 2 * GB, "b": GB // 2}, workers={"w1": "a"})


@pytest.mark.parametrize(
    ("before", "now", "expected"),
    [
        (None, Inventory(), None),  # a first beat with nothing to offer
        (TWO, TWO, None),
        (
            None,
            TWO,
            {
                "models": [
                    {"action": "added", "model_id": "a", "size_gb": 2.0},
                    {"action": "added", "model_id": "b", "size_gb": 0.5},
                ],
                "workers": [{"action": "added", "model_id": "a", "size_gb": 2.0}],
            },
        ),
        (
            TWO,
            Inventory(models={"a": 2 * GB}, workers={}),
            {
                "models": [{"action": "removed", "model_id": "b", "size_gb": 0.5}],
                "workers": [{"action": "removed", "model_id": "a", "size_gb": 2.0}],
            },
        ),
        (  # the model went with its worker: the worker's size is what the model had
            TWO,
            Inventory(models={"b": GB // 2}, workers={}),
            {
                "models": [{"action": "removed", "model_id": "a", "size_gb": 2.0}],
                "workers": [{"action": "removed", "model_id": "a", "size_gb": 2.0}],
            },
        ),
        (  # a worker that serves another model now: removed, then added
            TWO,
            Inventory(models=TWO.models, workers={"w1": "b"}),
            {
                "models": [],
                "workers": [
                    {"action": "added", "model_id": "b", "size_gb": 0.5},
                    {"action": "removed", "model_id": "a", "size_gb": 2.0},
                ],
            },
        ),
    ],
)
def test_capability_changes(
    before: Inventory | None, now: Inventory, expected: dict[str, Any] | None
) -> None:
    changes = capability_changes(before, now)
    assert (changes.model_dump(mode="json") if changes else None) == expected
