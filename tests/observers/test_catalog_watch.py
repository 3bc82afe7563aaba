"""The watch on `<home>/models`, both ways (real inotify on the event loop, and watchfiles,
the portable way): a model directory that comes, goes or is renamed is named at once; a
deletion's trash and the files inside a model are not; the models directory itself going
is said."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from hive.observers.catalog_watch import CatalogChanges, CatalogWatch
from hive.observers.portable_catalog_watch import PortableCatalogWatch

Watch = CatalogWatch | PortableCatalogWatch
Make = Callable[[Path], Watch]


@pytest.fixture(params=[CatalogWatch, PortableCatalogWatch], ids=["inotify", "watchfiles"])
def make(request: pytest.FixtureRequest) -> Make:
    made: Make = request.param
    return made


async def next_batch(watch: Watch) -> CatalogChanges:
    return await asyncio.wait_for(watch.changes(), 5)


async def next_directories(watch: Watch) -> frozenset[str]:
    """The next models named by their directory; a batch of files gone only is the first
    step of the same `rm -rf` (its files go before its directory)."""
    while True:
        batch = await next_batch(watch)
        if batch.names:
            return batch.names


async def test_model_directories_that_come_and_go_are_named(tmp_path: Path, make: Make) -> None:
    root = tmp_path / "models"
    with make(root) as watch:
        assert root.is_dir()  # made if missing
        (root / "tiny").mkdir()
        assert (await next_batch(watch)).names == {"tiny"}

        # Files inside a model's directory wake nothing (a download writes there).
        (root / "tiny" / "model.gguf").write_bytes(b"GGUF")
        (root / "other").mkdir()
        assert (await next_batch(watch)).names == {"other"}

        shutil.rmtree(root / "tiny")  # rm -rf, by hand
        assert await next_directories(watch) == {"tiny"}

        # hive's own deletion renames to a hidden trash name first: the model is named,
        # the trash is not.
        os.replace(root / "other", root / ".deleting-other-1234")
        assert (await next_batch(watch)).names == {"other"}
        shutil.rmtree(root / ".deleting-other-1234")
        (root / "Not_A_Name").mkdir()
        (root / "back").mkdir()
        assert (await next_batch(watch)).names == {"back"}


async def test_the_models_directory_itself_going_is_said(tmp_path: Path, make: Make) -> None:
    root = tmp_path / "models"
    watch = make(root)
    watch.arm()
    try:
        (root / "tiny").mkdir()
        await next_batch(watch)
        shutil.rmtree(root)
        batch = await next_batch(watch)
        assert batch.root_gone
        watch.arm()  # watched again (and made again)
        assert root.is_dir()
        (root / "again").mkdir()
        assert (await next_batch(watch)).names == {"again"}
    finally:
        watch.close()


async def test_a_model_file_removed_inside_its_directory_names_the_model(
    tmp_path: Path, make: Make
) -> None:
    """`rm …/model.gguf` (the directory stays) is a model gone too; a download's own steps
    (writing its `.partial`, publishing it by rename, removing a sidecar) wake nothing."""
    root = tmp_path / "models"
    (root / "old").mkdir(parents=True)  # there before the watch: watched from the start
    (root / "old" / "model.gguf").write_bytes(b"GGUF")
    with make(root) as watch:
        (root / "new").mkdir()
        assert (await next_batch(watch)).names == {"new"}
        partial = root / "new" / "model.gguf.partial"
        partial.write_bytes(b"GGUF")
        (root / "new" / "model.gguf.partial.json").write_text("{}")
        os.replace(partial, root / "new" / "model.gguf")  # publish
        (root / "new" / "model.gguf.partial.json").unlink()

        (root / "old" / "model.gguf").unlink()
        assert await next_batch(watch) == CatalogChanges(files_gone=frozenset({"old"}))
        os.replace(root / "new" / "model.gguf", tmp_path / "moved-away.gguf")
        assert await next_batch(watch) == CatalogChanges(files_gone=frozenset({"new"}))
