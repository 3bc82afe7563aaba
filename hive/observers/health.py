"""Worker health and performance over HTTP: `/health` with a timeout, and the worker's
Prometheus text (llama.cpp's `/metrics`) read into `WorkerMetrics`."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
from datetime import datetime

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from hive.model.workers import WorkerMetrics

#: llama.cpp's metric samples → WorkerMetrics fields.
_LLAMACPP = {
    "llamacpp:prompt_tokens_total": "prompt_tokens",
    "llamacpp:tokens_predicted_total": "tokens_generated",
    "llamacpp:predicted_tokens_seconds": "avg_tokens_per_sec",
    "llamacpp:requests_processing": "busy_slots",
    "llamacpp:requests_deferred": "deferred_requests",
    "llamacpp:n_decode_total": "decode_calls",
}


#: A health answer's body is read (so the worker's write completes) up to this size.
_MAX_BODY = 1 << 20


class HealthProbe:
    """`GET path` on one worker, over a connection of its own that is closed after the
    answer (`Connection: close`), as kubelet probes (asyncio streams, no HTTP library).

    Not kept alive, because an idle connection from hive would hold one of the worker's
    HTTP threads between probes (llama.cpp's server serves each connection from a small
    pool), and would be torn down inside the worker's shutdown when it stops: with 100
    stdlib workers that made the stop of all of them 15 % slower (B6, docs/benchmarks.md).
    hive sends 20 of these a second with 100 workers and needs only the status code:
    this costs a fraction of an aiohttp request's CPU (B7).
    """

    def __init__(self, *, host: str, port: int, path: str) -> None:
        self.host, self.port = host, port
        self.url = f"http://{host}:{port}{path}"
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: hive-health\r\n"
            "Accept: */*\r\nConnection: close\r\n\r\n"
        ).encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        #: The address family of an IP literal (the usual case), None for a host name.
        self._family = _family(host)

    async def check(self, *, limit: float) -> str | None:
        """None when the worker answers 2xx within `limit` seconds; else what went wrong."""
        try:
            async with asyncio.timeout(limit):
                return await self._exchange()
        except TimeoutError:
            return f"{self.url} did not answer within {limit:g}s"
        except (OSError, EOFError, ValueError, IndexError, asyncio.LimitOverrunError) as exc:
            text = f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc)
            return f"{self.url}: {text}"
        finally:
            self.close()

    async def _exchange(self) -> str | None:
        head = await self._send()
        if not head:
            raise ConnectionResetError("connection closed without an answer")
        status, *headers = head.split(b"\r\n")
        _, code_text, *_ = status.split(None, 2)
        code = int(code_text)
        length, chunked = 0, False
        assert self._reader is not None
        for line in headers:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = value == b"chunked"
        if chunked:
            await self._skip_chunks()
        elif 0 < length <= _MAX_BODY:
            await self._reader.readexactly(length)
        return None if 200 <= code < 300 else f"{self.url} answered {code}"

    async def _connect(self) -> None:
        """A plain non-blocking connect to an IP literal (the usual case): a worker that is
        not listening yet, probed 4 times a second while it starts, costs a third of
        what asyncio's create_connection spends on a refusal."""
        if self._family is None:  # a host name: let asyncio resolve it
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            return
        sock = socket.socket(self._family, socket.SOCK_STREAM)
        sock.setblocking(False)
        address = (self.host, self.port)
        try:
            err = sock.connect_ex(address)
            if err == errno.EINPROGRESS:
                # Loopback answers within the call: a refusal is already in SO_ERROR, so
                # a worker still loading costs no turn of the event loop (B5).
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err == 0 and not _connected(sock):
                    await asyncio.get_running_loop().sock_connect(sock, address)
            if err:
                raise OSError(err, os.strerror(err))
        except BaseException:
            sock.close()
            raise
        self._reader, self._writer = await asyncio.open_connection(sock=sock)

    async def _send(self) -> bytes:
        if self._writer is None:
            await self._connect()
        assert self._reader is not None and self._writer is not None
        self._writer.write(self._request)
        await self._writer.drain()
        try:
            # The status line and the headers, in one read (a 64 KiB head at most).
            return await self._reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            return b""

    async def _skip_chunks(self) -> None:
        assert self._reader is not None
        total = 0
        while True:
            size = int((await self._reader.readline()).split(b";")[0], 16)
            total += size
            if total > _MAX_BODY:
                raise ValueError("health answer too large")
            await self._reader.readexactly(size + 2)  # the chunk and its CRLF
            if size == 0:
                return

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


def _family(host: str) -> socket.AddressFamily | None:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return None


def _connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


def parse_metrics(text: str, *, now: datetime) -> WorkerMetrics:
    """The samples hive knows in a Prometheus text page; unknown ones are ignored, and a
    malformed page gives what was read before the bad line, never an exception."""
    values: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                field = _LLAMACPP.get(sample.name)
                if field is not None:
                    values[field] = float(sample.value)
    except ValueError:
        pass
    return WorkerMetrics(scraped_at=now, **values)


async def scrape(
    session: aiohttp.ClientSession, url: str, *, limit: float, now: datetime
) -> WorkerMetrics | None:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=limit)) as response:
            if response.status != 200:
                return None
            text = await response.text(errors="replace")
    except (TimeoutError, aiohttp.ClientError, OSError):
        return None
    return parse_metrics(text, now=now)
