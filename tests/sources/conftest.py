"""Fixtures of the git source's tests: a real bare repository (`repo`) and real
GitSources on it (`make`), stopped at the end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from hive.model.gitsource import GitSpec
from tests.sources.test_git import Harness, Repo


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path)


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def factory(url: str, **kw: Any) -> Harness:
        harness = Harness(tmp_path / "home", GitSpec(url=url, **kw))
        made.append(harness)
        return harness

    yield factory
    for harness in made:
        await harness.source.stop()
