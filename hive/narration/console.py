"""The console view of narration: one readable line per event on stderr."""

from __future__ import annotations

import sys
from typing import TextIO

from hive.model.events import Event


class ConsolePrinter:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr

    def __call__(self, event: Event) -> None:
        when = event.time.astimezone().strftime("%H:%M:%S.%f")[:-3]
        obj = f" {event.object}" if event.object else ""
        line = f"{when} {event.level.value.upper():<7}{obj} [{event.action}] {event.message}\n"
        self._stream.write(line)
        self._stream.flush()
