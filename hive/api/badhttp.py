"""Bad HTTP from a client (a NUL in a header, a malformed request line) is logged as one
WARNING line naming the peer and the reason, where aiohttp logs an error with a traceback;
a traceback stays for everything else (a bug of hive's own)."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from hive.model.text import clip

#: The logger of aiohttp's request handler ("Error handling request from <peer>").
SERVER_LOGGER = "aiohttp.server"
#: Where aiohttp's reason starts quoting the client's bytes (a header, a request line).
_QUOTED = re.compile(r"""\s*:?\s*(b?['"]|\n).*""", re.DOTALL)


def reason_of(exc: HttpProcessingError) -> str:
    """What was wrong, in words: aiohttp's message without the bytes it quotes (they may hold
    a credential: an `Authorization` header with a NUL in it is quoted whole)."""
    words = _QUOTED.sub("", exc.message.strip()).strip() or type(exc).__name__
    return clip(" ".join(words.split()), 120)


class BadHttpFilter(logging.Filter):
    """Rewrites aiohttp's record of a client's malformed request (an HttpProcessingError
    with a 4xx status) into one WARNING line without a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError) or not 400 <= (exc.code or 0) < 500:
            return True
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        record.msg = "bad HTTP request from %s, answered %d: %s"
        record.args = (peer, exc.code, reason_of(exc))
        record.exc_info = None
        record.exc_text = None
        record.levelno = logging.WARNING
        record.levelname = logging.getLevelName(logging.WARNING)
        return True


async def one_line_bad_http(app: web.Application) -> AsyncIterator[None]:
    """A cleanup context: the filter is on aiohttp's server logger while the app runs."""
    logger = logging.getLogger(SERVER_LOGGER)
    bad_http = BadHttpFilter()
    logger.addFilter(bad_http)
    try:
        yield
    finally:
        logger.removeFilter(bad_http)
