"""Malformed HTTP from a client (a NUL in a header) is one WARNING line on a real
`hive serve`'s stderr, without a traceback or the bytes sent, and hive keeps answering;
an error of hive's own keeps its traceback."""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

from hive.api.badhttp import BadHttpFilter, reason_of
from tests.conftest import Hive, poll


def send_raw(hive: Hive, request: bytes) -> bytes:
    """`request` as bytes on a fresh connection; the start of the answer."""
    with socket.create_connection(("127.0.0.1", hive.port), timeout=10) as conn:
        conn.sendall(request)
        return conn.recv(200)


def test_a_nul_in_a_header_is_one_warning_line(
    tmp_path: Path, hive_factory: Callable[..., Hive]
) -> None:
    desired = tmp_path / "desired"
    desired.mkdir()
    hive = hive_factory(desired=[desired])
    secret = b"Bearer s3cret-s3cret-s3cret"
    answer = send_raw(
        hive, b"GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: " + secret + b"\x00x\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.0 400 ")

    def warned() -> list[str]:
        lines = hive.log.read_text(errors="replace").splitlines()
        return [line for line in lines if "bad HTTP request" in line]

    (line,) = poll(warned, what="hive to log the bad request")
    assert hive.get("/health")["status"] == "ok"  # still answering
    assert " WARNING bad HTTP request from 127.0.0.1, answered 400: " in line
    assert "header" in line.partition("answered 400: ")[2].lower()  # what was wrong
    hive.stop()
    log = hive.log.read_text(errors="replace")
    assert "Traceback" not in log
    assert "Error handling request" not in log
    assert "s3cret" not in log  # aiohttp quotes the header's bytes; hive does not


def test_the_reason_keeps_the_words_and_drops_the_bytes_quoted() -> None:
    assert reason_of(BadHttpMessage("Invalid header value char:\n\n  b'X: a\\x00'\n  ^")) == (
        "Invalid header value char"
    )
    assert reason_of(LineTooLong(b"GET /aaaa", "8190")) == "Got more than 8190 bytes when reading"
    assert reason_of(BadHttpMessage("Duplicate Content-Length")) == "Duplicate Content-Length"
    assert reason_of(BadHttpMessage("")) == "BadHttpMessage"


def _record(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        exc_info = sys.exc_info()
    return logging.LogRecord(
        "aiohttp.server",
        logging.ERROR,
        __file__,
        1,
        "Error handling request from %s",
        ("127.0.0.1",),
        exc_info,
    )


def test_an_error_of_hives_own_keeps_its_traceback() -> None:
    record = _record(RuntimeError("a bug"))
    assert BadHttpFilter().filter(record)
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert record.getMessage() == "Error handling request from 127.0.0.1"

    bad = _record(BadHttpMessage("Invalid header value char:\n\n  b'X: a\\x00'"))
    assert BadHttpFilter().filter(bad)
    assert bad.levelno == logging.WARNING
    assert bad.exc_info is None
    assert bad.getMessage() == (
        "bad HTTP request from 127.0.0.1, answered 400: Invalid header value char"
    )
