"""The console view of narration: one readable line per event on stderr; and the format
of hive's log lines there, with every URL redacted (tracebacks included)."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from hive.model.events import Event
from hive.model.text import redact_text


class ConsolePrinter:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr

    def __call__(self, event: Event) -> None:
        when = event.time.astimezone().strftime("%H:%M:%S.%f")[:-3]
        obj = f" {event.object}" if event.object else ""
        line = f"{when} {event.level.value.upper():<7}{obj} [{event.action}] {event.message}\n"
        self._stream.write(line)
        self._stream.flush()


class RedactingFormatter(logging.Formatter):
    """A log line (and the traceback under it) with every URL in it redacted: an exception
    from an HTTP client may quote a source's URL, credentials and all."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))
