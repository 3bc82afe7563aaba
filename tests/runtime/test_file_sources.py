"""`file:` sources through the reconcile loop: the `file_roots` setting refuses a source
outside its directories, and a file that is not GGUF is refused without its bytes."""

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
        status = manager.reconciler.statuses.get(key)
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
                (s := manager.reconciler.statuses.get(ObjectKey.of(Kind.MODEL, "ok")))
                and s.phase == "Available"
            ),
            what="the model under the root",
        )
    finally:
        await manager.stop()
    said = " ".join(e.message for e in events)
    assert "Hunter2" not in said and "root:$6" not in said
