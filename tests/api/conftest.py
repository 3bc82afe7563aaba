"""What the API tests share: an in-process hive (a `Manager`) behind a real loopback
server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from hive.api.app import create_app
from hive.runtime.manager import Manager
from hive.settings import Settings

Serve = Callable[..., AbstractAsyncContextManager[tuple[Manager, str]]]


@pytest.fixture
def serve(tmp_path: Path) -> Serve:
    """`async with serve(**settings) as (manager, url)`: a hive on `tmp_path / "home"`
    whose desired directory is `tmp_path / "desired"` (made if missing), its API served on
    127.0.0.1 at `url` until the block ends."""

    @asynccontextmanager
    async def run(**settings: Any) -> AsyncIterator[tuple[Manager, str]]:
        desired = tmp_path / "desired"
        desired.mkdir(exist_ok=True)
        manager = Manager(
            Settings(home=tmp_path / "home", desired=(desired,), console=False, **settings)
        )
        server = TestServer(create_app(manager), host="127.0.0.1")
        await server.start_server()
        try:
            yield manager, str(server.make_url(""))
        finally:
            await server.close()

    return run
