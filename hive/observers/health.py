"""Worker health and performance over HTTP: `/health` with a timeout, and the worker's
Prometheus text (llama.cpp's `/metrics`) read into `WorkerMetrics`."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
from datetime import datetime
from typing import Any

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


#: A health answer is read to its end (the worker closes after it) up to this size.
_MAX_ANSWER = 1 << 20
_READ = 64 * 1024


class HealthProbe:
    """`GET path` on one worker, over a connection of its own that the worker closes after
    the answer (`Connection: close`), as kubelet probes.

    Not kept alive: llama.cpp's server closes a connection idle for 5 s, the probe
    interval, so it would seldom be reused; while open it holds one of the server's HTTP
    threads; and a thread-per-connection server (the scripted test worker) has to tear it
    down inside its shutdown (100 of them took 15 % longer to exit in a scratch script).

    Plain non-blocking socket calls on the event loop, no streams and no HTTP library:
    hive sends 20 of these a second with 100 workers and needs only the status code.
    """

    def __init__(self, *, host: str, port: int, path: str) -> None:
        self.host, self.port = host, port
        self.url = f"http://{host}:{port}{path}"
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: hive-health\r\n"
            "Accept: */*\r\nConnection: close\r\n\r\n"
        ).encode()
        #: The address family of an IP literal (the usual case), None for a host name.
        self._family = _family(host)

    async def check(self, *, limit: float) -> str | None:
        """None when the worker answers 2xx within `limit` seconds; else what went wrong."""
        try:
            async with asyncio.timeout(limit):
                answer = await self._exchange()
        except TimeoutError:
            return f"{self.url} did not answer within {limit:g}s"
        except OSError as exc:
            text = f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc)
            return f"{self.url}: {text}"
        except ValueError as exc:
            return f"{self.url}: {exc}"
        status = answer.partition(b"\r\n")[0].split(None, 2)
        if b"\r\n\r\n" not in answer or len(status) < 2 or not status[1].isdigit():
            what = "no answer" if not answer else f"not an HTTP answer: {answer[:40]!r}"
            return f"{self.url}: connection closed with {what}"
        code = int(status[1])
        return None if 200 <= code < 300 else f"{self.url} answered {code}"

    async def _exchange(self) -> bytes:
        loop = asyncio.get_running_loop()
        sock = await self._connect(loop)
        try:
            await loop.sock_sendall(sock, self._request)
            chunks: list[bytes] = []
            size = 0
            while chunk := await loop.sock_recv(sock, _READ):
                chunks.append(chunk)
                size += len(chunk)
                if size > _MAX_ANSWER:
                    raise ValueError(f"answer larger than {_MAX_ANSWER} bytes")
            return b"".join(chunks)
        finally:
            sock.close()

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> socket.socket:
        """A non-blocking connect. To an IP literal (the usual case), a refusal is known
        within the call on loopback: a worker that is not listening yet, probed 4 times a
        second while it starts, costs no turn of the event loop (B5). A host name is
        resolved and its addresses tried in order."""
        if self._family is not None:
            return await _connect_to(loop, self._family, (self.host, self.port))
        infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        error: OSError = OSError(f"cannot resolve {self.host}")
        for family, _, _, _, address in infos:
            try:
                return await _connect_to(loop, family, address)
            except OSError as exc:
                error = exc
        raise error


async def _connect_to(
    loop: asyncio.AbstractEventLoop, family: int, address: tuple[Any, ...]
) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        err = sock.connect_ex(address)
        if err == errno.EINPROGRESS:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err == 0 and not _connected(sock):
                await loop.sock_connect(sock, address)
        if err:
            raise OSError(err, os.strerror(err))
    except BaseException:
        sock.close()
        raise
    return sock


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
