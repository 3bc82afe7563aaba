"""Free space under the home, as a user reads it: sizes in the unit of every other message
and table (`hive.model.units`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hive.actuators.space import ensure_space
from hive.errors import InsufficientSpace


def test_a_refusal_says_its_sizes_as_the_tables_do(tmp_path: Path) -> None:
    needed = 4_370_000_000_000_000  # more than any disk of the machine running this
    with pytest.raises(InsufficientSpace) as refused:
        ensure_space(tmp_path, needed=needed, doing="still to download", kept="kept")
    message = refused.value.message
    assert "4,370,000,000 MB still to download" in message, message
    assert ".0 MB still" not in message
