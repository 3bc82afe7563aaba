"""The reconcile loop in-process, on real files: timeouts, back-off, the concurrency
bound, cancellation, and a loop that survives failing actuators."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from hive.errors import Conflict, TransientError
from hive.model.events import Event
from hive.model.ids import Kind, ObjectKey
from hive.model.status import ObjectStatus
from hive.observers.catalog import boot_id
from hive.runtime.manager import Manager
from hive.settings import Settings
from tests.conftest import apoll, model_yaml, write_atomic

GB = 1024**3


def sparse(path: Path, size: int) -> Path:
    """A large file that costs no disk: hashing it still reads every byte."""
    with path.open("wb") as fh:
        fh.truncate(size)
    return path


async def until(fn: Callable[[], object], what: str, limit: float = 15.0) -> None:
    await apoll(fn, within=limit, what=what)


class Loop:
    def __init__(self, manager: Manager, desired: Path) -> None:
        self.manager = manager
        self.desired = desired
        self.events: list[Event] = []
        manager.bus.add_listener(self.events.append)

    def status(self, name: str) -> ObjectStatus | None:
        return self.manager.statuses.get(ObjectKey.of(Kind.MODEL, name))

    def phase(self, name: str) -> str | None:
        s = self.status(name)
        return s.phase if s else None

    def actions(self, name: str) -> list[str]:
        return [e.action for e in self.events if e.object == f"Model/{name}"]


MakeLoop = Callable[..., AbstractAsyncContextManager[Loop]]


@pytest.fixture
def make_loop(tmp_path: Path) -> MakeLoop:
    @asynccontextmanager
    async def make(**settings: Any) -> AsyncIterator[Loop]:
        desired = tmp_path / "desired"
        desired.mkdir(exist_ok=True)
        manager = Manager(
            Settings(home=tmp_path / "home", desired=(desired,), console=False, **settings)
        )
        await manager.start()
        try:
            yield Loop(manager, desired)
        finally:
            await manager.stop()

    return make


async def test_an_action_past_its_timeout_fails_and_leaves_no_partial(
    make_loop: MakeLoop, tmp_path: Path
) -> None:
    big = sparse(tmp_path / "big.gguf", 2 * GB)
    async with make_loop(action_timeout=0.05, backoff_base=30) as loop:
        write_atomic(loop.desired / "m.yaml", model_yaml("big", f"file:{big}"))
        await until(lambda: loop.phase("big") == "Failed", "the timeout")
        status = loop.status("big")
        assert status is not None
        degraded = next(c for c in status.conditions if c.type == "Degraded")
        assert degraded.reason == "Timeout"
        assert status.nextRetryTime is not None
        directory = loop.manager.catalog.directory("big")
        assert not (directory / "model.gguf").exists()
        assert not list(directory.glob("*.partial"))


async def test_failures_back_off_and_a_fix_converges(
    make_loop: MakeLoop, tmp_path: Path, tiny_model: Path
) -> None:
    later = tmp_path / "later.gguf"
    async with make_loop(backoff_base=0.05, backoff_cap=0.4) as loop:
        write_atomic(loop.desired / "m.yaml", model_yaml("later", f"file:{later}"))
        await until(
            lambda: (s := loop.status("later")) is not None and s.failures >= 4,
            "four failures in a row",
        )
        failed = [e for e in loop.events if e.action == "model_download_failed"]
        delays = [e.data["retry_in_seconds"] for e in failed[:4]]
        assert delays == [0.05, 0.1, 0.2, 0.4]
        shutil.copyfile(tiny_model, later)
        await until(lambda: loop.phase("later") == "Available", "convergence after the fix")
        status = loop.status("later")
        assert status is not None
        assert status.failures == 0


async def test_concurrent_actions_are_bounded(make_loop: MakeLoop, tmp_path: Path) -> None:
    sources = [sparse(tmp_path / f"m{i}.gguf", GB // 2) for i in range(4)]
    async with make_loop(max_concurrent_actions=2, backoff_base=60) as loop:
        text = "---\n".join(model_yaml(f"m{i}", f"file:{p}") for i, p in enumerate(sources))
        write_atomic(loop.desired / "all.yaml", text)
        await until(
            lambda: all(loop.phase(f"m{i}") == "Failed" for i in range(4)),
            "every (zero-filled, not GGUF) model to fail",
        )
        # As the narration shows it: how many copies had started and not yet ended each
        # time one started.
        ends = {"model_download_failed", "model_download_complete", "model_download_cancelled"}
        running: set[str] = set()
        busy: list[int] = []
        for e in loop.events:
            if e.action == "model_download_start":
                running.add(str(e.object))
                busy.append(len(running))
            elif e.action in ends:
                running.discard(str(e.object))
        assert len(busy) == 4, busy
        assert max(busy) == 2, busy


async def test_removing_the_record_mid_copy_stops_the_copy(
    make_loop: MakeLoop, tmp_path: Path
) -> None:
    big = sparse(tmp_path / "big.gguf", 8 * GB)
    async with make_loop() as loop:
        manifest = loop.desired / "m.yaml"
        write_atomic(manifest, model_yaml("big", f"file:{big}"))
        await until(lambda: "model_download_progress" in loop.actions("big"), "the copy to run")
        (loop.desired / ".hive-allow-empty").touch()  # the last record may go
        manifest.unlink()
        await until(lambda: "model_download_cancelled" in loop.actions("big"), "cancellation")
        progress = [e for e in loop.events if e.action == "model_download_progress"]
        assert progress[-1].data["bytes_downloaded"] < progress[-1].data["total_bytes"]
        assert "model_download_complete" not in loop.actions("big")
        directory = loop.manager.catalog.directory("big")
        await until(lambda: not directory.exists(), "the leftovers to be cleaned up")


async def test_the_loop_survives_an_actuator_that_fails(
    make_loop: MakeLoop, tmp_path: Path, tiny_model: Path
) -> None:
    async with make_loop(backoff_base=0.05, backoff_cap=0.2) as loop:
        models = loop.manager.catalog.root
        models.mkdir(parents=True, exist_ok=True)
        (models / "blocked").write_text("a file where the model's directory should be")
        write_atomic(loop.desired / "a.yaml", model_yaml("blocked", f"file:{tiny_model}"))
        write_atomic(loop.desired / "b.yaml", model_yaml("fine", f"file:{tiny_model}"))
        await until(lambda: loop.phase("blocked") == "Failed", "the failure")
        await until(lambda: loop.phase("fine") == "Available", "the other model")
        (models / "blocked").unlink()
        await until(lambda: loop.phase("blocked") == "Available", "recovery")


async def test_a_permanent_failure_waits_for_the_record_to_change(
    make_loop: MakeLoop, tmp_path: Path, tiny_model: Path
) -> None:
    async with make_loop(backoff_base=0.01) as loop:
        write_atomic(
            loop.desired / "m.yaml", model_yaml("m", f"file:{tiny_model}", sha256="0" * 64)
        )
        await until(lambda: loop.phase("m") == "Failed", "the checksum failure")
        status = loop.status("m")
        assert status is not None
        assert "tries again when the record changes" in status.message
        assert status.nextRetryTime is None
        for _ in range(3):  # resyncs see the same record: no new attempt
            loop.manager.resync_now()
            await until(
                lambda: not len(loop.manager.queue) and not loop.manager.queue.processing,
                "the queue to drain",
            )
        assert loop.actions("m").count("model_download_start") == 1

        write_atomic(loop.desired / "m.yaml", model_yaml("m", f"file:{tiny_model}"))
        await until(lambda: loop.phase("m") == "Available", "a new generation to converge")


# -- published first, synced right after ---------------------------------------------------
def _metadata(loop: Loop, name: str) -> dict[str, Any]:
    home = loop.manager.settings.home
    return dict(json.loads((home / "models" / name / "metadata.json").read_text()))


async def _provisioned(make_loop: MakeLoop, tmp_path: Path, tiny_model: Path) -> Path:
    """`tiny` provisioned (hard-linked: synced at once) by one run of the loop; the
    source's path."""
    source = tmp_path / "src.gguf"
    shutil.copyfile(tiny_model, source)
    async with make_loop() as loop:
        write_atomic(loop.desired / "m.yaml", model_yaml("tiny", f"file:{source}"))
        await until(lambda: loop.phase("tiny") == "Available", "the model")
        assert _metadata(loop, "tiny")["synced"] is True
        assert "model_synced" not in loop.actions("tiny")  # no new bytes: nothing to sync
    return source


def _unsync(home: Path, name: str, *, boot: str) -> dict[str, Any]:
    """Rewrite a model's metadata.json as a crash of another boot would have left it."""
    path = home / "models" / name / "metadata.json"
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "synced": False, "boot_id": boot}))
    return dict(meta)


async def test_a_copied_model_is_available_once_verified_and_synced_right_after(
    make_loop: MakeLoop, tiny_model_elsewhere: Path
) -> None:
    async with make_loop() as loop:
        write_atomic(loop.desired / "m.yaml", model_yaml("tiny", f"file:{tiny_model_elsewhere}"))
        await until(lambda: "model_synced" in loop.actions("tiny"), "the sync")
        actions = loop.actions("tiny")
        assert actions.index("model_available") < actions.index("model_synced")
        assert loop.phase("tiny") == "Available"
        meta = _metadata(loop, "tiny")
        assert meta["synced"] is True
        assert meta["boot_id"] == boot_id()
        (synced,) = [e for e in loop.events if e.action == "model_synced"]
        assert synced.data["verified_again"] is False


async def test_an_unsynced_model_of_an_earlier_boot_is_hashed_again_and_kept(
    make_loop: MakeLoop, tmp_path: Path, tiny_model: Path
) -> None:
    await _provisioned(make_loop, tmp_path, tiny_model)
    before = _unsync(tmp_path / "home", "tiny", boot="an-earlier-boot")
    async with make_loop() as loop:
        await until(lambda: loop.phase("tiny") == "Available", "the model, checked")
        actions = loop.actions("tiny")
        assert actions[:2] == ["model_verify_start", "model_synced"], actions
        assert "model_download_start" not in actions
        (synced,) = [e for e in loop.events if e.action == "model_synced"]
        assert synced.data["verified_again"] is True
        meta = _metadata(loop, "tiny")
        assert meta["synced"] is True
        assert meta["sha256"] == before["sha256"]


async def test_an_unsynced_model_of_an_earlier_boot_with_lost_bytes_is_provisioned_again(
    make_loop: MakeLoop, tmp_path: Path, tiny_model: Path
) -> None:
    await _provisioned(make_loop, tmp_path, tiny_model)
    home = tmp_path / "home"
    before = _unsync(home, "tiny", boot="an-earlier-boot")
    model = home / "models" / "tiny" / "model.gguf"
    lost = tmp_path / "lost.gguf"
    lost.write_bytes(
        model.read_bytes()[: model.stat().st_size // 2].ljust(model.stat().st_size, b"\0")
    )
    lost.replace(model)  # the same size, zeros where the data never reached the disk
    async with make_loop() as loop:
        await until(
            lambda: (
                "model_download_complete" in loop.actions("tiny")
                and loop.phase("tiny") == "Available"
            ),
            "the model, provisioned again",
        )
        actions = loop.actions("tiny")
        assert actions.index("model_verify_failed") < actions.index("model_download_start")
        assert loop.phase("tiny") == "Available"
        meta = _metadata(loop, "tiny")
        assert meta["sha256"] == before["sha256"]
        assert meta["synced"] is True


async def test_an_api_deletion_is_carried_out_by_the_models_own_reconcile(
    make_loop: MakeLoop, tiny_model: Path
) -> None:
    """DELETE records the intent; the files go only when the Model's key is reconciled
    (never beside another action on the same key), and the request hears how it ended."""
    async with make_loop() as loop:
        manager = loop.manager
        model = manager.catalog.directory("loose")
        model.mkdir(parents=True)
        shutil.copy(tiny_model, model / "model.gguf")
        request = manager.model_reconciler.request_delete("loose", users=[])
        assert (model / "model.gguf").exists() and not request.done.done()
        manager.queue.add(ObjectKey.of(Kind.MODEL, "loose"))
        async with asyncio.timeout(10):
            await request.done
        assert not model.exists()
        told = loop.actions("loose")
        assert told.index("model_delete_start") < told.index("model_delete_complete")


async def test_an_api_deletion_of_a_model_declared_meanwhile_is_refused(
    make_loop: MakeLoop, tiny_model: Path
) -> None:
    async with make_loop() as loop:
        manager = loop.manager
        request = manager.model_reconciler.request_delete("tiny", users=[])
        write_atomic(loop.desired / "m.yaml", model_yaml("tiny", f"file://{tiny_model}"))
        with pytest.raises(Conflict, match="declared present"):
            async with asyncio.timeout(10):
                await request.done
        await until(lambda: loop.phase("tiny") == "Available", "the declared model")


async def test_an_api_deletion_still_waiting_when_hive_stops_is_answered(
    make_loop: MakeLoop,
) -> None:
    async with make_loop() as loop:
        request = loop.manager.model_reconciler.request_delete("loose", users=[])
    with pytest.raises(TransientError, match="hive stopped before the deletion ran"):
        await request.done
