"""A typed async client of a hive's HTTP API, on aiohttp, and the one reader of its
Server-Sent Events (`/v1/events`, `/v1/workers/{name}/logs?follow=1`).

The CLI's client commands, the tests and the benchmarks talk to a hive through it. Errors
are mapped here once, to `hive.errors`: an error answer is an `ApiError` (the HTTP status,
hive's `error` object and its message), no answer at all is `HiveUnreachable`. Events come
back as `hive.model.events.Event`, the views (`/v1/models`, `/v1/workers`, `/v1/status`,
`/v1/runtimes`, a deletion, a restart) as the types of `hive.model.views`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from yarl import URL

from hive.errors import ApiError, HiveUnreachable
from hive.model.events import Event, EventsDropped
from hive.model.gitsource import SuspendAnswer, SyncAnswer
from hive.model.machine import Capabilities, Device, DeviceList
from hive.model.views import (
    Deleted,
    DesiredApplied,
    DesiredDeleted,
    DesiredSet,
    DesiredSource,
    HiveStatus,
    JobCancelled,
    JobCreated,
    JobEnd,
    JobLine,
    ModelInfo,
    Restarting,
    Runtimes,
    WorkerInfo,
)

#: Seconds a request (or opening a stream) may take.
REQUEST_TIMEOUT = 30.0
#: The largest answer read (a hive's largest is a few MiB: /v1/models of thousands).
MAX_ANSWER = 64 * 1024 * 1024


async def _read_bounded(response: aiohttp.ClientResponse, where: str) -> bytes:
    """The body of `response`, at most `MAX_ANSWER` bytes (ApiError past that: not a hive,
    or not one to trust)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > MAX_ANSWER:
            raise ApiError(
                f"{where}: the answer is larger than {MAX_ANSWER // (1024 * 1024)} MiB (is "
                "this a hive's --url?)",
                status=response.status,
                error={},
            )
        chunks.append(chunk)
    return b"".join(chunks)


#: Seconds before a dropped event stream is opened again (`events(reconnect=True)`).
RECONNECT_DELAY = 1.0


# -- Server-Sent Events -------------------------------------------------------------------
@dataclass(frozen=True)
class SseMessage:
    """One dispatched SSE message: its data lines joined by `\\n`, and its `id` field (None
    when it carried none: hive's events-dropped frame, a log line)."""

    data: str
    id: str | None = None


@dataclass
class SseDecoder:
    """The SSE line grammar (WHATWG HTML, 9.2.6), fed one line at a time without its end:
    `data:` lines accumulate, `id:` sets the message's id (unless it holds NUL), a blank
    line dispatches, `:` comments (hive's keep-alives) and other fields are skipped."""

    _data: list[str] = field(default_factory=list)
    _id: str | None = None

    def feed(self, line: str) -> SseMessage | None:
        if not line:
            message = SseMessage("\n".join(self._data), self._id) if self._data else None
            self._data, self._id = [], None
            return message
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        return None


def parse_sse(lines: Iterable[str]) -> list[SseMessage]:
    """The messages in `lines` (without their line ends); an unfinished last one is not
    dispatched, as the grammar says."""
    decoder = SseDecoder()
    return [m for m in map(decoder.feed, lines) if m is not None]


def _line(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").removesuffix("\n").removesuffix("\r")


async def _messages(response: aiohttp.ClientResponse) -> AsyncIterator[SseMessage]:
    decoder = SseDecoder()
    async for raw in response.content:
        message = decoder.feed(_line(raw))
        if message is not None:
            yield message


def event_of(message: SseMessage) -> Event | EventsDropped | None:
    """A `/v1/events` message as its type: an `Event` (it has an id), the events-dropped
    notice (it has none), or None for anything else."""
    if message.id is not None:
        return Event.model_validate_json(message.data)
    data = json.loads(message.data)
    if not isinstance(data, dict) or data.get("action") != "events_dropped":
        return None
    gap = data.get("data") or {}
    return EventsDropped(
        missed=gap.get("missed", 0), after_id=gap.get("after_id", 0), message=data["message"]
    )


# -- errors -------------------------------------------------------------------------------
def connection_cause(exc: BaseException) -> str:
    """One line on why no answer came, as urllib said it (`[Errno 111] Connection refused`,
    `timed out`), not aiohttp's longer wording."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        exc = exc.os_error
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno is not None:
        text = os.strerror(exc.errno) if exc.errno > 0 else exc.strerror
        return f"[Errno {exc.errno}] {text}"
    return str(exc) or type(exc).__name__


# -- the client ---------------------------------------------------------------------------
class HiveClient:
    """A hive at `url` (as the user gave it: errors quote it), with the bearer `token` for
    mutating requests, each request allowed `timeout` seconds (a stream: to open). Use it as
    `async with HiveClient(url) as hive:`, or call `close()`."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = REQUEST_TIMEOUT,
        reconnect_delay: float = RECONNECT_DELAY,
    ) -> None:
        self.url = url
        self._base = url.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._reconnect_delay = reconnect_delay
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HiveClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @contextlib.asynccontextmanager
    async def _response(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        stream: bool = False,
        body: bytes | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The answer to `method path`, or the error it maps to; with `stream`, no total
        time limit (only to connect and for the headers)."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        timeout = (
            aiohttp.ClientTimeout(total=None, connect=self._timeout)
            if stream
            else aiohttp.ClientTimeout(total=self._timeout)
        )
        sent = dict(headers or {})
        if self._token:
            sent["Authorization"] = f"Bearer {self._token}"
        try:
            async with self._session.request(
                method,
                URL(self._base + path, encoded=True),
                headers=sent,
                timeout=timeout,
                data=body,
            ) as response:
                if response.status >= 400:
                    raise await self._api_error(response, path)
                yield response
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as exc:
            raise HiveUnreachable(url=self.url, cause=connection_cause(exc)) from None

    async def _api_error(self, response: aiohttp.ClientResponse, path: str) -> ApiError:
        body = await response.read()
        try:
            error = json.loads(body)["error"]
            message = error["message"]
        except (ValueError, KeyError, TypeError):
            error, message = {}, response.reason
        return ApiError(
            f"{self.url}{path}: {response.status} {message}", status=response.status, error=error
        )

    async def _json(self, method: str, path: str, *, body: Any = None) -> Any:
        """The JSON answer to `method path`; `body`, when given, is sent as JSON."""
        headers, data = {}, None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body, ensure_ascii=False).encode()
        async with self._response(method, path, headers=headers, body=data) as response:
            raw = await _read_bounded(response, f"{self.url}{path}")
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            raise ApiError(
                f"{self.url}{path}: the answer is not JSON (is {self.url} a hive's --url?)",
                status=response.status,
                error={},
            ) from None

    # -- reads: the views, typed (hive/model/views.py) --------------------------------------
    async def health(self) -> dict[str, Any]:
        """`{"status": "ok", "version": ...}`."""
        result: dict[str, Any] = await self._json("GET", "/health")
        return result

    async def status(self) -> HiveStatus:
        """`GET /v1/status`: hive's id, uptime, sources, object counts."""
        return HiveStatus.model_validate(await self._json("GET", "/v1/status"))

    async def models(self) -> list[ModelInfo]:
        """`GET /v1/models`: every model declared or on disk."""
        data = await self._json("GET", "/v1/models")
        return [ModelInfo.model_validate(item) for item in data["items"]]

    async def model(self, name: str) -> ModelInfo:
        """`GET /v1/models/{name}`; `ApiError` 404 when unknown."""
        return ModelInfo.model_validate(await self._json("GET", f"/v1/models/{_seg(name)}"))

    async def workers(self) -> list[WorkerInfo]:
        """`GET /v1/workers`: every worker declared or running."""
        data = await self._json("GET", "/v1/workers")
        return [WorkerInfo.model_validate(item) for item in data["items"]]

    async def worker(self, name: str) -> WorkerInfo:
        """`GET /v1/workers/{name}`, with its log's last lines; `ApiError` 404 when unknown."""
        return WorkerInfo.model_validate(await self._json("GET", f"/v1/workers/{_seg(name)}"))

    async def runtimes(self) -> Runtimes:
        """`GET /v1/runtimes`: the worker catalog, and the entries it skipped."""
        return Runtimes.model_validate(await self._json("GET", "/v1/runtimes"))

    async def devices(self) -> DeviceList:
        """`GET /v1/devices`: CPU-0 and each GPU, with the workers placed there."""
        return DeviceList.model_validate(await self._json("GET", "/v1/devices"))

    async def device(self, device_id: str) -> Device:
        """`GET /v1/devices/{id}`; `ApiError` 404 naming the devices there are."""
        return Device.model_validate(await self._json("GET", f"/v1/devices/{_seg(device_id)}"))

    async def capabilities(self) -> Capabilities:
        """`GET /v1/capabilities` (rbee's shape), without discovering a Queen."""
        return Capabilities.model_validate(await self._json("GET", "/v1/capabilities"))

    def logs_path(self, name: str, *, tail: int) -> str:
        return f"/v1/workers/{_seg(name)}/logs?tail={tail}"

    async def logs(self, name: str, *, tail: int = 100) -> str:
        """The last `tail` lines of the worker's log, as text."""
        async with self._response("GET", self.logs_path(name, tail=tail)) as response:
            return (await response.read()).decode("utf-8", "replace")

    async def follow_logs(self, name: str, *, tail: int = 100) -> AsyncGenerator[str, None]:
        """The last `tail` lines of the worker's log, then every new one as it is written,
        until hive ends the stream."""
        path = self.logs_path(name, tail=tail) + "&follow=1"
        async with self._response("GET", path, stream=True) as response:
            async for message in _messages(response):
                yield json.loads(message.data)["line"]

    # -- changes (the token is sent when given) -------------------------------------------
    async def delete_model(self, name: str, *, force: bool = False) -> Deleted:
        """`DELETE /v1/models/{name}`; `ApiError` with reason `ModelInUse` and
        `error["workers"]` when workers use it and not `force`."""
        path = f"/v1/models/{_seg(name)}" + ("?force=true" if force else "")
        return Deleted.model_validate(await self._json("DELETE", path))

    async def restart_worker(self, name: str) -> Restarting:
        """`POST /v1/workers/{name}/restart`."""
        return Restarting.model_validate(
            await self._json("POST", f"/v1/workers/{_seg(name)}/restart")
        )

    # -- git sources (`/v1/sources/{name}/...`) --------------------------------------------
    async def suspend_source(self, name: str) -> SuspendAnswer:
        """`POST /v1/sources/{name}/suspend` (`name` as the store has it: `git:fleet`)."""
        return SuspendAnswer.model_validate(
            await self._json("POST", f"/v1/sources/{_seg(name)}/suspend")
        )

    async def resume_source(self, name: str) -> SuspendAnswer:
        """`POST /v1/sources/{name}/resume`: it fetches at once."""
        return SuspendAnswer.model_validate(
            await self._json("POST", f"/v1/sources/{_seg(name)}/resume")
        )

    async def sync_source(self, name: str) -> SyncAnswer:
        """`POST /v1/sources/{name}/sync`: fetched and applied now; what it came to."""
        return SyncAnswer.model_validate(await self._json("POST", f"/v1/sources/{_seg(name)}/sync"))

    # -- desired state over HTTP (`/v1/desired`) -------------------------------------------
    async def desired_sources(self) -> list[DesiredSource]:
        """`GET /v1/desired`: the HTTP sources (`api`, `queen`, a client's own)."""
        data = await self._json("GET", "/v1/desired")
        return [DesiredSource.model_validate(item) for item in data["items"]]

    async def desired(self, source: str) -> DesiredSet:
        """`GET /v1/desired/{source}`; `ApiError` 404 when there is no such source."""
        return DesiredSet.model_validate(await self._json("GET", f"/v1/desired/{_seg(source)}"))

    async def put_desired(
        self, source: str, manifests: list[dict[str, Any]], *, allow_empty: bool = False
    ) -> DesiredApplied:
        """`PUT /v1/desired/{source}`: `manifests` become the source's whole set."""
        path = f"/v1/desired/{_seg(source)}" + ("?allowEmpty=true" if allow_empty else "")
        return DesiredApplied.model_validate(await self._json("PUT", path, body=manifests))

    async def apply(self, source: str, manifests: list[dict[str, Any]]) -> DesiredApplied:
        """`PATCH /v1/desired/{source}`: each manifest added or replaced by `Kind/name`
        (`applied` says created, configured or unchanged); `ApiError` 422 with every
        problem when one is invalid (nothing applied)."""
        path = f"/v1/desired/{_seg(source)}"
        return DesiredApplied.model_validate(await self._json("PATCH", path, body=manifests))

    async def delete_desired(self, source: str) -> DesiredDeleted:
        """`DELETE /v1/desired/{source}`: the set and its file go."""
        path = f"/v1/desired/{_seg(source)}"
        return DesiredDeleted.model_validate(await self._json("DELETE", path))

    async def delete_record(self, source: str, kind: str, name: str) -> DesiredApplied:
        """`DELETE /v1/desired/{source}/{kind}/{name}`: one record of the source goes;
        `ApiError` 404 when the source does not hold it (the message names who does)."""
        path = f"/v1/desired/{_seg(source)}/{_seg(kind)}/{_seg(name)}"
        return DesiredApplied.model_validate(await self._json("DELETE", path))

    # -- jobs (rbee's job API) ------------------------------------------------------------
    async def submit_job(self, operation: dict[str, Any] | bytes) -> JobCreated:
        """`POST /v1/jobs` with rbee's operation JSON (a dict, or the body's bytes as sent)."""
        body = operation if isinstance(operation, bytes) else json.dumps(operation).encode()
        headers = {"Content-Type": "application/json"}
        async with self._response("POST", "/v1/jobs", headers=headers, body=body) as response:
            return JobCreated.model_validate(json.loads(await response.read()))

    async def job_stream(self, job_id: str) -> AsyncGenerator[JobLine | JobEnd, None]:
        """The job's lines from its first, then its end (`JobEnd`), after which it returns."""
        path = f"/v1/jobs/{_seg(job_id)}/stream"
        async with self._response("GET", path, stream=True) as response:
            async for message in _messages(response):
                end = JobEnd.parse(message.data)
                if end is not None:
                    yield end
                    return
                yield JobLine.model_validate_json(message.data)

    async def cancel_job(self, job_id: str) -> JobCancelled:
        """`DELETE /v1/jobs/{id}`."""
        return JobCancelled.model_validate(await self._json("DELETE", f"/v1/jobs/{_seg(job_id)}"))

    # -- the event stream -----------------------------------------------------------------
    async def events(
        self,
        *,
        since: int | None = None,
        object: str | None = None,
        last_event_id: int | None = None,
        reconnect: bool = False,
        on_open: Callable[[], None] | None = None,
    ) -> AsyncGenerator[Event | EventsDropped, None]:
        """`/v1/events`: the events after `since` (or, sent as the `Last-Event-ID` header,
        after `last_event_id`), of one `object` (`Kind/name`) when given, as they come.
        With `reconnect`, a stream that ends or breaks is opened again after the last
        event received (`Last-Event-ID`), as an EventSource does; a hive that cannot be
        reached then raises `HiveUnreachable`.

        `on_open` is called each time hive has answered the request with its headers: hive
        subscribes the stream before it answers, so every event narrated after that call
        reaches this reader (a benchmark starts its clock there)."""
        query = {"since": since, "object": object}
        params = urlencode({k: v for k, v in query.items() if v is not None})
        path = "/v1/events" + (f"?{params}" if params else "")
        after = last_event_id
        while True:
            headers = {} if after is None else {"Last-Event-ID": str(after)}
            opened = False
            try:
                async with self._response("GET", path, headers=headers, stream=True) as response:
                    opened = True
                    if on_open is not None:
                        on_open()
                    async for message in _messages(response):
                        item = event_of(message)
                        if isinstance(item, Event):
                            after = item.id
                        if item is not None:
                            yield item
            except HiveUnreachable:
                if not (reconnect and opened):
                    raise
            if not reconnect:
                return
            await asyncio.sleep(self._reconnect_delay)


def _seg(name: str) -> str:
    """A name as one path segment (a `/` or `..` in it stays in it)."""
    return quote(name, safe="")
