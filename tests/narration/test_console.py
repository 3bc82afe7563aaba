"""The console: log lines (and their tracebacks) carry no credentials."""

from __future__ import annotations

import io
import logging

from hive.narration.console import RedactingFormatter


def test_a_log_line_and_its_traceback_are_redacted() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(message)s"))
    log = logging.getLogger("hive.test.console")
    log.addHandler(handler)
    log.propagate = False
    try:
        try:
            raise OSError("cannot GET https://alice:S3CR3T@h.example/m.gguf?token=T0K")
        except OSError:
            log.exception("while fetching %s", "https://bob:PW@h.example/x?sig=S1G")
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert text.startswith("ERROR while fetching https://bob:***@h.example/x?sig=***\n")
    assert "OSError: cannot GET https://alice:***@h.example/m.gguf?token=***" in text
    for secret in ("S3CR3T", "T0K", "PW", "S1G"):
        assert secret not in text
