"""A download the reconciler cancels ends before the cancellation is reported: its thread
has let go of the server's connection, whatever the server was doing (issue 14, item 6)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from hive.model.events import Event
from hive.runtime.manager import Manager
from hive.settings import Settings
from testkit.silent_server import silent_server
from tests.conftest import apoll, model_yaml, write_atomic


def download_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("hive-download")]


async def test_removing_the_record_of_a_download_lets_go_of_its_connection_at_once(
    tmp_path: Path, tiny_model: Path
) -> None:
    """The server has not answered the GET yet: the record goes, the download is reported
    cancelled, and by then hive holds no connection to it (not after a 60 s read timeout)
    and no thread of the download is left."""
    body = await asyncio.to_thread(tiny_model.read_bytes)
    desired = tmp_path / "desired"
    desired.mkdir()
    manager = Manager(Settings(home=tmp_path / "home", desired=(desired,), console=False))
    events: list[Event] = []
    manager.bus.add_listener(events.append)
    async with silent_server(body, stage="headers") as silent:
        await manager.start()
        try:
            write_atomic(desired / "m.yaml", model_yaml("m", silent.url))
            await apoll(lambda: silent.holding, what="the server to hold the GET")
            (desired / ".hive-allow-empty").touch()  # the last record may go
            (desired / "m.yaml").unlink()
            await apoll(
                lambda: "model_download_cancelled" in [e.action for e in events],
                what="the download to be cancelled",
            )
            await apoll(lambda: silent.gone, within=5, what="hive to let go of the connection")
            await apoll(
                lambda: (
                    not [t for t in threading.enumerate() if t.name.startswith("hive-download")]
                ),
                within=5,
                what="the download's threads to end",
            )
        finally:
            await manager.stop()
