"""The manager's follow of `<home>/models`: its inotify watch is closed whenever the
manager stops, even when its task never ran a step."""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import threading
import warnings
from pathlib import Path

import pytest

from hive.model.observed import ObservedModel
from hive.observers.catalog import ModelCatalog
from hive.portable_watch import WATCHER_THREAD
from hive.runtime.manager import Manager
from hive.runtime.model_presence import ModelPresence
from hive.settings import Settings


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


async def test_a_manager_stopped_at_once_closes_its_catalog_watch(tmp_path: Path) -> None:
    """The watch was closed only by its task's `finally`: a task cancelled before its
    first step never ran it. The descriptor was closed later by the garbage collector
    ("unclosed file"), and the loop kept reading a descriptor number that the next file
    opened reuses: that file's reader was never called."""
    # No source: its stop would await, and let the watch's task take its first step.
    settings = Settings(home=tmp_path / "home", desired=(), console=False, gpu_probe="none")
    warm = Manager(settings)  # what a first start opens for good (imports, the loop's own)
    await warm.start()
    await warm.stop()
    before = open_fds()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(3):
            manager = Manager(settings)
            await manager.start()
            await manager.stop()  # at once: no task has run a step yet
        del manager
        gc.collect()

    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []
    assert open_fds() - before == set()
    read, write = os.pipe()  # the lowest free number: the one the watch had
    try:
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        loop.add_reader(read, readable.set)
        os.write(write, b"x")
        await asyncio.wait_for(readable.wait(), timeout=5)
        loop.remove_reader(read)
    finally:
        os.close(read)
        os.close(write)


def beside_a_manager(
    catalog: ModelCatalog, *, portable: bool = False
) -> tuple[Manager, ModelPresence]:
    """A manager (its queue, bus and workers; not started) and a presence over `catalog`
    whose model `m` is used by worker `w`."""
    settings = Settings(home=catalog.root.parent, desired=(), console=False, gpu_probe="none")
    manager = Manager(settings)
    presence = ModelPresence(
        catalog=catalog,
        departures=manager.departures,
        workers=manager.workers,
        users=lambda name: ["w"],
        queue=manager.queue,
        bus=manager.bus,
        resync_interval=settings.resync_interval,
        portable=portable,
    )
    return manager, presence


class UnreadableCatalog(ModelCatalog):
    """A catalog whose model directory cannot be read (EACCES, as a non-root hive meets)."""

    def observe(self, name: str) -> ObservedModel | None:
        raise PermissionError(13, "Permission denied", str(self.directory(name)))


async def test_a_model_that_cannot_be_read_is_still_looked_at(tmp_path: Path) -> None:
    """Its reconcile says what is wrong: a read that failed must not drop the keys (they
    waited for the resync)."""
    manager, presence = beside_a_manager(UnreadableCatalog(tmp_path / "home"))
    presence.changed(["m"])
    handed: set[str] = set()
    while len(manager.queue):  # what the queue hands its workers, through its own API
        key = await manager.queue.get()
        assert key is not None
        handed.add(key)
        manager.queue.done(key)
    assert {"Model/m", "Worker/w"} <= handed


async def test_a_model_whose_file_went_is_fetched_again_only_once_settled(
    tmp_path: Path,
) -> None:
    """Its workers are looked at (and stopped) at once; its own fetch waits a moment, so
    that an `rm -rf` still removing the directory is not raced by a fetch writing into it
    (the user's `rm` failed with "Directory not empty")."""
    manager, presence = beside_a_manager(ModelCatalog(tmp_path / "home"))
    presence.changed(["m"], settle=0.5)
    assert len(manager.queue) == 1  # the worker now, not the model
    first = await manager.queue.get()
    assert first == "Worker/w"
    manager.queue.done(first)
    later = await asyncio.wait_for(manager.queue.get(), timeout=5)
    assert later == "Model/m"
    manager.queue.done(later)


@pytest.mark.parametrize("portable", [False, True], ids=["inotify", "watchfiles"])
@pytest.mark.parametrize("removal", ["rm -rf", "rm model.gguf"])
async def test_a_model_removed_by_hand_is_looked_at_at_once(
    tmp_path: Path, portable: bool, removal: str
) -> None:
    """Through either watch: its workers at once (to be stopped), and the model itself at
    once when its directory went; the watch's thread, if it has one, ends with it."""
    catalog = ModelCatalog(tmp_path / "home")
    (catalog.root / "m").mkdir(parents=True)
    (catalog.root / "m" / "model.gguf").write_bytes(b"GGUF")
    manager, presence = beside_a_manager(catalog, portable=portable)
    presence.start()
    try:
        if removal == "rm -rf":
            shutil.rmtree(catalog.root / "m")
            wanted = {"Model/m", "Worker/w"}
        else:
            (catalog.root / "m" / "model.gguf").unlink()
            wanted = {"Worker/w"}  # the model's own fetch waits FILE_SETTLE
        handed: set[str] = set()
        while not wanted <= handed:
            key = await asyncio.wait_for(manager.queue.get(), timeout=10)
            assert key is not None
            handed.add(key)
            manager.queue.done(key)
    finally:
        await presence.stop()
    assert [t for t in threading.enumerate() if t.name == WATCHER_THREAD] == []
