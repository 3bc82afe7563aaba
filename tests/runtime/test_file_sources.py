"""`file:` sources through the reconcile loop: the `file_roots` setting refuses a source
outside its directories, a file that is not GGUF is refused without its bytes, and a
source of thousands of characters is quoted bounded."""

from __future__ import annotations

import shutil
from pathlib import Path

from hive.model.events import Event
from hive.model.ids import Kind, ObjectKey
from hive.model.status import ObjectStatus
from hive.runtime.manager import Manager
from hive.settings import Settings
from tests.conftest import apoll, model_yaml, write_atomic


async def failed(manager: Manager, name: str) -> ObjectStatus:
    key = ObjectKey.of(Kind.MODEL, name)

    def check() -> ObjectStatus | None:
        status = manager.statuses.get(key)
        return status if status is not None and status.phase == "Failed" else None

    return await apoll(check, within=15, what=f"Model/{name} to fail")


async def test_file_roots_and_foreign_bytes(tmp_path: Path, tiny_model: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    shutil.copyfile(tiny_model, allowed / "ok.gguf")
    secret = allowed / "shadow"
    secret.write_text("root:$6$Hunter2salt$hash:19000:0:99999:7:::\n")
    (allowed / "escape.gguf").symlink_to(tiny_model)  # tiny_model is outside `allowed`
    desired = tmp_path / "desired"
    desired.mkdir()
    manager = Manager(
        Settings(home=tmp_path / "home", desired=(desired,), console=False, file_roots=(allowed,))
    )
    events: list[Event] = []
    manager.bus.add_listener(events.append)
    await manager.start()
    try:
        write_atomic(desired / "ok.yaml", model_yaml("ok", f"file:{allowed / 'ok.gguf'}"))
        write_atomic(desired / "out.yaml", model_yaml("out", f"file:{allowed / 'escape.gguf'}"))
        write_atomic(desired / "shadow.yaml", model_yaml("shadow", f"file:{secret}"))
        out = await failed(manager, "out")
        assert f"file_roots: {allowed}" in out.message
        assert str(tiny_model) in out.message  # where the link really leads
        shadow = await failed(manager, "shadow")
        assert "not a GGUF file (no GGUF magic)" in shadow.message
        await apoll(
            lambda: (
                (s := manager.statuses.get(ObjectKey.of(Kind.MODEL, "ok")))
                and s.phase == "Available"
            ),
            what="the model under the root",
        )
    finally:
        await manager.stop()
    said = " ".join(e.message for e in events)
    assert "Hunter2" not in said and "root:$6" not in said


async def test_a_long_source_is_quoted_bounded_everywhere(tmp_path: Path) -> None:
    """A source of 4,000 characters (the most a manifest may hold is 4,096): every event
    and the status quote it clipped, never whole, and never more than once per field."""
    parts = (4000 - len(str(tmp_path))) // 201
    deep = tmp_path / "/".join(["d" * 200] * parts) / "model.gguf"  # does not exist
    source = f"file:{deep}"
    assert 3800 < len(source) <= 4096
    desired = tmp_path / "desired"
    desired.mkdir()
    manager = Manager(Settings(home=tmp_path / "home", desired=(desired,), console=False))
    events: list[Event] = []
    manager.bus.add_listener(events.append)
    await manager.start()
    try:
        write_atomic(desired / "long.yaml", model_yaml("long", source))
        status = await failed(manager, "long")
    finally:
        await manager.stop()
    assert "does not exist" in status.message
    assert len(status.message) < 1000, len(status.message)
    about = [e for e in events if e.object == "Model/long"]
    assert any(e.action == "model_download_start" for e in about)
    for event in about:
        assert len(event.message) < 1000, (event.action, len(event.message))
        for value in event.data.values():
            assert len(str(value)) < 1000, (event.action, len(str(value)))
