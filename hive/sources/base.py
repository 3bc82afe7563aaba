"""What every source of desired state shares: a name, a start, a resync, a stop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from hive.core.store import ReplaceResult
from hive.model.ids import SourceName

#: Called by a source after it replaced its record set in the store.
OnChange = Callable[[ReplaceResult], None]


class Source(Protocol):
    name: SourceName

    async def start(self) -> None:
        """First sync (errors are recorded, never raised), then follow changes."""

    async def resync(self) -> None:
        """Look at the whole source again, in case a change notification was missed."""

    async def stop(self) -> None: ...
