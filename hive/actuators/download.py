"""The downloader: a network source's bytes into `<home>/models/<name>/`, owned by hive
so that it survives anything.

Bytes stream into `model.gguf.partial`, described by a sidecar (`model.gguf.partial.json`,
mode 0600: URL redacted, ETag, size, commit). After any interruption the next attempt
continues with `Range` from the bytes on disk if the ETag still matches, else starts over
and says why; it resolves the source again from the record in memory, so no file holds a
source's credentials. SHA-256 is computed while streaming (a resumed download hashes its
prefix once). Free space is checked first, once per attempt for every part; a full disk
keeps the partial for later. Transient failures retry with exponential back-off and jitter
(tenacity); permanent ones stop with a clear reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import os
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from hive import __version__
from hive.actuators.files import (
    clear_partials,
    remove_stale_model_files,
    write_all,
    write_atomic,
)
from hive.actuators.http_get import BadUrl, HttpGet, split_credentials
from hive.actuators.provision import begin_metadata, finish_metadata, publish_metadata
from hive.actuators.remote import RemoteFile, RemoteNotFound, Unauthorized, resolve_remote
from hive.actuators.space import ensure_space
from hive.core.ratelimit import TokenBucket
from hive.errors import ChecksumMismatch, GgufError, PermanentError, TransientError
from hive.model.actions import ProvisionModel
from hive.model.gguf import GgufFacts, parameter_count_label
from hive.model.observed import ModelFile, PartialState
from hive.model.provisioning import (
    PARTIAL_SUFFIX,
    PRIVATE_FILE_MODE,
    SIDECAR_SUFFIX,
    Cancelled,
    Progress,
    ProvisionOutcome,
    part_names,
)
from hive.model.text import clip, redact_url, show, show_text, show_url
from hive.model.units import megabytes
from hive.observers.gguf import read_gguf_facts

CHUNK = 1024 * 1024
#: The receiver reads into buffers of this size, which the sink writes and hashes whole.
SINK_BUFFER = 4 * CHUNK
#: Buffers per download: at most this many wait for the sink before the receiver does.
SINK_BUFFERS = 8
#: How often the event loop looks at a download's cancel flag while its thread receives.
CANCEL_POLL = 0.1
#: How often, at most, the stream reports progress (the narration limits itself further).
PROGRESS_TICK = 0.05
USER_AGENT = f"hive/{__version__}"


class RetryableHttp(TransientError):
    """A transient transfer failure; `retry_after` is the server's own request, if any."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamChanged(TransientError):
    """The bytes on the server are not the ones we started with: resolve and start over."""

    reason = "UpstreamChanged"


class Throttle:
    """The hive-wide bandwidth limit and this download's own, both token buckets, used from
    the thread that receives. `set_rate` changes this download's limit while it runs."""

    #: One lock for every bucket: the hive-wide one is shared by concurrent downloads.
    _lock = threading.Lock()

    def __init__(self, *, shared: TokenBucket | None, rate: int | None) -> None:
        self._shared = shared
        self._own = TokenBucket(rate=rate, burst=max(64 * 1024, (rate or 0) // 4))

    def set_rate(self, rate: int | None) -> None:
        with self._lock:
            self._own.set_rate(rate, now=time.monotonic())
            self._own.burst = max(64 * 1024, (rate or 0) // 4)

    def piece(self, size: int) -> int:
        """How many bytes to read at a time: all of `size` unlimited, else about a tenth
        of a second's worth, so that the pace is even and a new rate applies soon."""
        with self._lock:
            rates = [b.rate for b in (self._own, self._shared) if b is not None and b.rate]
        if not rates:
            return size
        return max(16 * 1024, min(size, int(min(rates) / 10)))

    def wait(self, n: int, halt: threading.Event) -> None:
        """Spend n bytes' worth of tokens, waiting as long as the limits say (or until
        `halt` is set)."""
        now = time.monotonic()
        with self._lock:
            delay = self._own.take(n, now=now)
            if self._shared is not None:
                delay = max(delay, self._shared.take(n, now=now))
        if delay > 0:
            halt.wait(delay)


Narrate = Callable[..., None]


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After")
    try:
        return min(float(value), 300.0) if value is not None else None
    except ValueError:
        return None


class _Attempt:
    """One download of one file: the partial, its sidecar and the running hash."""

    def __init__(
        self,
        *,
        directory: Path,
        name: str,
        remote: RemoteFile,
        expected_sha: str | None,
    ) -> None:
        self.final = directory / name
        self.partial = directory / (name + PARTIAL_SUFFIX)
        self.sidecar = directory / (name + PARTIAL_SUFFIX + SIDECAR_SUFFIX)
        self.remote = remote
        self.expected_sha = expected_sha
        self.hasher = hashlib.sha256()
        self.offset = 0

    def load(self) -> tuple[PartialState | None, str | None]:
        """The sidecar if the bytes on disk can be resumed, else why not (and clear them)."""
        try:
            state = PartialState.model_validate_json(self.sidecar.read_bytes())
        except FileNotFoundError:
            state = None
        except (OSError, ValidationError, ValueError):
            state = None
        size = self.partial.stat().st_size if self.partial.exists() else 0
        why: str | None = None
        if state is not None and size:
            if not same_url(state.url, self.remote.url):
                why = f"the partial file came from {show_url(state.url)}; starting over"
            elif state.etag != self.remote.etag or state.size != self.remote.size:
                why = (
                    f"the file changed on the server (ETag {_etag(state.etag)} → "
                    f"{_etag(self.remote.etag)}); starting over"
                )
            elif self.remote.size is not None and size > self.remote.size:
                why = "the partial file is larger than the file; starting over"
        elif size:
            why = "no record of what the partial file holds; starting over"
        if why is not None:
            self.partial.unlink(missing_ok=True)
            state = None
        return state, why

    def save(self, state: PartialState) -> None:
        write_atomic(self.sidecar, state.model_dump_json().encode(), mode=PRIVATE_FILE_MODE)

    def hash_prefix(self, cancel: threading.Event) -> int:
        """Hash the bytes already on disk, once; returns their count."""
        self.hasher = hashlib.sha256()
        done = 0
        if self.partial.exists():
            with self.partial.open("rb") as fh:
                while chunk := fh.read(CHUNK):
                    if cancel.is_set():
                        raise Cancelled
                    self.hasher.update(chunk)
                    done += len(chunk)
        self.offset = done
        return done

    def restart(self) -> None:
        self.partial.unlink(missing_ok=True)
        self.hasher = hashlib.sha256()
        self.offset = 0


def same_url(stored: str, url: str) -> bool:
    """Whether a sidecar's URL names the bytes at `url`. Both are compared as a sidecar
    holds them, redacted, and without user info: that travels as a header (an older hive
    stored the URL as written, credentials and all; its partials still resume)."""

    def key(u: str) -> str:
        return redact_url(split_credentials(u)[0])

    return key(stored) == key(url)


def _etag(etag: str | None) -> str:
    """A server's ETag as a message quotes it: bounded."""
    return "none" if etag is None else clip(etag.removeprefix("W/").strip('"'), 80)


def still_needed(directory: Path, remotes: list[RemoteFile], names: list[str]) -> int:
    """Bytes still to download into `directory`: each file of known size, less its partial
    already there. A file of unknown size counts nothing (a write that finds the disk full
    is InsufficientSpace then, the partial kept)."""
    needed = 0
    for remote, name in zip(remotes, names, strict=True):
        if remote.size is None:
            continue
        try:
            on_disk = (directory / (name + PARTIAL_SUFFIX)).stat().st_size
        except OSError:
            on_disk = 0
        needed += max(remote.size - on_disk, 0)
    return needed


async def _stream(
    attempt: _Attempt,
    *,
    cancel: threading.Event,
    throttle: Throttle,
    progress: Callable[[Progress], None],
    narrate: Narrate,
) -> None:
    """GET the rest of the file into the partial; raises on any failure (partial kept)."""
    remote = attempt.remote
    shown = show_url(remote.url)
    headers = {"User-Agent": USER_AGENT, **remote.headers}
    if attempt.offset:
        headers["Range"] = f"bytes={attempt.offset}-"
        if remote.etag and remote.etag_checkable:
            headers["If-Range"] = f'"{remote.etag}"'
    request = HttpGet(remote.url, headers, connect_timeout=30, read_timeout=60)
    try:
        try:
            await asyncio.to_thread(request.open)
        except BadUrl as exc:
            raise PermanentError(f"{shown}: {show_text(str(exc))}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise RetryableHttp(f"{shown}: {_describe(exc)}") from exc
        status = request.status
        if status in (401, 403):
            raise Unauthorized(
                f"{shown}: access denied ({status}); for the hub, set "
                "HF_TOKEN to a token that can read this repository"
            )
        if status == 404:
            raise RemoteNotFound(f"{shown}: not found (404)")
        if status == 416 and _complete(attempt.offset, remote.size, request.headers):
            return  # everything is already on disk
        if status == 429 or status >= 500:
            raise RetryableHttp(
                f"{shown}: the server answered {status}",
                retry_after=_retry_after(request.headers),
            )
        if status >= 400:
            raise PermanentError(f"{shown}: the server answered {status}")
        etag = request.headers.get("ETag")
        if (
            remote.etag_checkable
            and etag is not None
            and remote.etag is not None
            and etag.removeprefix("W/").strip('"') != remote.etag
        ):
            raise UpstreamChanged(
                f"{shown}: the file changed on the server (ETag "
                f"{_etag(remote.etag)} → {_etag(etag)})"
            )
        if attempt.offset and status == 200:
            narrate(
                "model_download_restarted",
                "The server sent the whole file instead of the rest; starting over",
                from_byte=attempt.offset,
            )
            await asyncio.to_thread(attempt.restart)
        elif attempt.offset and status == 206:
            start = (request.headers.get("Content-Range") or "").removeprefix("bytes ")
            if not start.startswith(f"{attempt.offset}-"):
                raise RetryableHttp(
                    f"{shown}: asked for byte {attempt.offset}, got range {show(start, 80)}"
                )
        total = remote.size or (attempt.offset + (request.content_length or 0))
        await _receive(
            request, attempt, total=total, cancel=cancel, throttle=throttle, progress=progress
        )
    finally:
        # A full disk (ENOSPC, EDQUOT, EFBIG) goes on as an OSError, which the reconciler
        # maps to InsufficientSpace; the partial stays for the resume.
        request.close()
    if remote.size is not None and attempt.offset < remote.size:
        raise RetryableHttp(
            f"{shown}: the connection ended at byte {attempt.offset} of {remote.size}"
        )


def _describe(exc: BaseException) -> str:
    """An exception of the HTTP client as a message: its text may name a URL (redacted)."""
    text = show_text(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _receive(
    request: HttpGet,
    attempt: _Attempt,
    *,
    total: int,
    cancel: threading.Event,
    throttle: Throttle,
    progress: Callable[[Progress], None],
) -> None:
    """The body into the partial: a thread reads it into buffers that the sink's thread
    writes and hashes, so receiving and hashing run side by side, neither in the event
    loop. The loop waits, watching `cancel` (a blocked read is aborted at once) and
    reporting progress; it returns once every byte received is written and hashed."""
    loop = asyncio.get_running_loop()
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if attempt.offset else os.O_TRUNC)
    sink = _Sink(os.open(attempt.partial, flags, 0o644), attempt.hasher)
    halt = threading.Event()  # cancel seen, or this coroutine was cancelled
    finished: asyncio.Future[None] = loop.create_future()
    # Read even when this coroutine was cancelled before the thread settled it.
    finished.add_done_callback(lambda f: f.cancelled() or f.exception())

    def report(done: int) -> None:
        progress(Progress(done=done, total=total))

    def receive() -> None:
        next_progress = 0.0
        try:
            while not halt.is_set():
                buffer = sink.buffer()
                piece = throttle.piece(len(buffer))
                try:
                    got = _fill(request, memoryview(buffer)[:piece])
                except (OSError, http.client.HTTPException) as exc:
                    sink.give_back(buffer)
                    if halt.is_set():
                        break
                    raise RetryableHttp(
                        f"{show_url(attempt.remote.url)}: {_describe(exc)}"
                    ) from exc
                if got:
                    sink.submit(buffer, got)
                    attempt.offset += got
                    if (now := time.monotonic()) >= next_progress:
                        next_progress = now + PROGRESS_TICK
                        loop.call_soon_threadsafe(report, attempt.offset)
                    throttle.wait(got, halt)
                else:
                    sink.give_back(buffer)
                if got < piece:
                    break  # the body ended (or the server closed the connection early)
        finally:
            sink.close()  # every byte received is written and hashed, or the error stands
        if halt.is_set():
            raise Cancelled

    def run() -> None:
        try:
            receive()
        except BaseException as exc:
            loop.call_soon_threadsafe(_settle, finished, exc)
        else:
            loop.call_soon_threadsafe(_settle, finished, None)

    thread = threading.Thread(target=run, name="hive-download-receive", daemon=True)
    thread.start()
    try:
        while not finished.done():
            await asyncio.wait([finished], timeout=CANCEL_POLL)
            if cancel.is_set() and not halt.is_set():
                halt.set()
                request.abort()
    except asyncio.CancelledError:
        halt.set()
        request.abort()
        await asyncio.shield(asyncio.to_thread(thread.join))
        raise
    report(attempt.offset)
    finished.result()


def _settle(future: asyncio.Future[None], exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is None:
        future.set_result(None)
    else:
        future.set_exception(exc)


def _fill(request: HttpGet, view: memoryview) -> int:
    """Read until `view` is full or the body ends; the bytes read."""
    got = 0
    size = len(view)
    while got < size:
        n = request.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def _complete(offset: int, size: int | None, headers: Any) -> bool:
    """A 416 to `Range: bytes=offset-` means "nothing after that" when offset is the size
    (the server says the size as `Content-Range: bytes */N` when we do not know it)."""
    if size is None:
        total = (headers.get("Content-Range") or "").rpartition("/")[2]
        size = int(total) if total.isdigit() else None
    return size is not None and offset >= size > 0


class _Sink:
    """A thread that writes the buffers the receiver fills to the partial file and hashes
    them, in order, and hands each buffer back for the next read: SINK_BUFFERS buffers of
    SINK_BUFFER bytes at most in memory (the receiver waits when all are taken). The first
    write error (ENOSPC, mostly) is raised to the receiver; the rest is dropped."""

    def __init__(self, fd: int, hasher: Any) -> None:
        self._fd = fd
        self._hasher = hasher
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(SINK_BUFFERS):
            self._free.put(bytearray(SINK_BUFFER))
        self._full: queue.SimpleQueue[tuple[bytearray, int] | None] = queue.SimpleQueue()
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="hive-download-sink", daemon=True)
        self._thread.start()

    def buffer(self) -> bytearray:
        """A buffer to read into (waits while the sink has them all)."""
        buffer = self._free.get()
        if self._error is not None:
            self._free.put(buffer)
            raise self._error
        return buffer

    def submit(self, buffer: bytearray, size: int) -> None:
        self._full.put((buffer, size))

    def give_back(self, buffer: bytearray) -> None:
        self._free.put(buffer)

    def close(self) -> None:
        """Wait until every buffer submitted is written and hashed (the file is closed
        then); raises the write's error, if one failed."""
        self._full.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            while (item := self._full.get()) is not None:
                buffer, size = item
                if self._error is None:
                    try:
                        with memoryview(buffer) as view, view[:size] as data:
                            write_all(self._fd, data)
                            self._hasher.update(data)
                    except Exception as exc:
                        self._error = exc
                self._free.put(buffer)
        finally:
            os.close(self._fd)


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    backoff = wait_exponential_jitter(initial=1, max=30)(state)
    if isinstance(exc, RetryableHttp) and exc.retry_after is not None:
        return max(exc.retry_after, backoff)
    return backoff


async def _fetch(
    action: ProvisionModel,
    *,
    remote: RemoteFile,
    name: str,
    expected: str | None,
    directory: Path,
    now: datetime,
    cancel: threading.Event,
    throttle: Throttle,
    progress: Callable[[Progress], None],
    narrate: Narrate,
    attempts: int,
    sleep: Callable[[float], Awaitable[None]],
) -> tuple[_Attempt, str]:
    """Stream one resolved file into its partial until its bytes are whole and verified."""
    attempt = _Attempt(directory=directory, name=name, remote=remote, expected_sha=expected)
    state, why = await asyncio.to_thread(attempt.load)
    if why:
        narrate("model_download_restarted", why)
    state = state or PartialState(
        url=redact_url(remote.url),
        etag=remote.etag,
        size=remote.size,
        commit=remote.commit,
        sha256=expected,
        started_at=now,
    )
    mismatches = 0
    while True:
        done = await asyncio.to_thread(attempt.hash_prefix, cancel)
        if done:
            narrate(
                "model_download_resumed",
                f"Resuming from byte {done} ({megabytes(done)} already on disk)",
                from_byte=done,
            )
        retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts),
            wait=_wait,
            retry=retry_if_exception_type(RetryableHttp),
            sleep=sleep,
            reraise=True,
            before_sleep=lambda rs: narrate(
                "model_download_retry",
                f"{rs.outcome.exception() if rs.outcome else ''}; retrying "
                f"(attempt {rs.attempt_number + 1} of {attempts})",
                attempt=rs.attempt_number + 1,
            ),
        )
        async for try_ in retrying:
            with try_:
                state = state.model_copy(update={"attempts": state.attempts + 1})
                await asyncio.to_thread(attempt.save, state)
                try:
                    await _stream(
                        attempt,
                        cancel=cancel,
                        throttle=throttle,
                        progress=progress,
                        narrate=narrate,
                    )
                except TransientError as exc:
                    state = state.model_copy(update={"last_error": exc.message})
                    # Only a note for `hive get models`: a full disk refusing it must not
                    # hide the failure itself.
                    with contextlib.suppress(OSError):
                        await asyncio.to_thread(attempt.save, state)
                    raise
        sha = attempt.hasher.hexdigest()
        if expected is None or sha == expected:
            break
        mismatches += 1
        await asyncio.to_thread(attempt.restart)
        if mismatches >= 2:
            await asyncio.to_thread(attempt.sidecar.unlink, missing_ok=True)
            raise ChecksumMismatch(
                f"sha256 of the downloaded bytes is {sha}, but {expected} was expected "
                f"({'spec.sha256' if action.sha256 else 'the hub'}); the download was "
                "retried once and failed again"
            )
        narrate(
            "model_download_restarted",
            f"SHA-256 mismatch (got {sha}, want {expected}); downloading once more",
        )

    return attempt, sha


async def download_model(
    action: ProvisionModel,
    *,
    directory: Path,
    session: aiohttp.ClientSession,
    now: datetime,
    cancel: threading.Event,
    throttle: Throttle,
    progress: Callable[[Progress], None],
    narrate: Narrate,
    attempts: int = 5,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> ProvisionOutcome:
    """Fetch a network source into the catalog: resumable, verified, published atomically.
    A split model is fetched as one set and published only when every part is verified."""
    for resolution in range(3):
        remotes = await resolve_remote(action.source, session=session)
        if len(remotes) > 1 and action.sha256:
            raise PermanentError(
                f"{show_url(action.source)} is a split model of {len(remotes)} parts; "
                "spec.sha256 names "
                "one file: remove it (each part is verified against the hub's checksum)"
            )
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
        names = part_names(len(remotes))
        total = sum(r.size or 0 for r in remotes)
        # The one check of free space, before anything is written (a record included), for
        # every part at once: a split model that cannot fit fetches none of its parts. Each
        # attempt (each call) checks again, less what earlier attempts left on disk.
        # (Without a single size, nothing can be checked before the bytes come.)
        if any(r.size is not None for r in remotes):
            needed = await asyncio.to_thread(still_needed, directory, remotes, names)
            await asyncio.to_thread(
                ensure_space,
                directory,
                needed=needed,
                doing="still to download",
                kept="the partial download is kept and resumes when space is freed",
            )
        base = await asyncio.to_thread(
            begin_metadata,
            action,
            directory=directory,
            path=directory / names[0],
            size=total,
            now=now,
            url=redact_url(remotes[0].url),
            revision=remotes[0].commit,
        )
        fetched: list[tuple[_Attempt, str]] = []
        try:
            for remote, name in zip(remotes, names, strict=True):
                before = sum(a.offset for a, _ in fetched)

                def part_progress(p: Progress, before: int = before, total: int = total) -> None:
                    progress(Progress(done=before + p.done, total=total or p.total))

                fetched.append(
                    await _fetch(
                        action,
                        remote=remote,
                        name=name,
                        expected=action.sha256 or remote.sha256,
                        directory=directory,
                        now=now,
                        cancel=cancel,
                        throttle=throttle,
                        progress=part_progress,
                        narrate=narrate,
                        attempts=attempts,
                        sleep=sleep,
                    )
                )
            break
        except UpstreamChanged as exc:
            if resolution == 2:
                raise
            narrate("model_download_restarted", f"{exc.message}; starting over")
            await asyncio.to_thread(clear_partials, directory)

    facts: list[GgufFacts] = []
    for attempt, _ in fetched:
        try:
            facts.append(await asyncio.to_thread(read_gguf_facts, attempt.partial))
        except GgufError as exc:
            for bad, _ in fetched:
                await asyncio.to_thread(bad.restart)
                await asyncio.to_thread(bad.sidecar.unlink, missing_ok=True)
            raise GgufError(
                f"{show_url(action.source)} is not a usable GGUF file: {clip(exc.message)}"
            ) from None
    for attempt, _ in fetched:
        await asyncio.to_thread(os.replace, attempt.partial, attempt.final)
        await asyncio.to_thread(attempt.sidecar.unlink, missing_ok=True)
    files = [ModelFile(name=a.final.name, size=a.offset, sha256=sha) for a, sha in fetched]
    metadata = finish_metadata(
        base.model_copy(update={"size": sum(f.size for f in files), "files": files}),
        sha=fetched[0][1],
        verified=all(a.expected_sha is not None for a, _ in fetched),
        facts=merge_facts(facts),
    )
    await asyncio.to_thread(publish_metadata, directory, metadata)
    await asyncio.to_thread(
        remove_stale_model_files, directory, keep={a.final.name for a, _ in fetched}
    )
    return ProvisionOutcome(metadata=metadata, method="download")


def merge_facts(parts: list[GgufFacts]) -> GgufFacts:
    """The facts of a split model: the first part's, with tensors and parameters summed."""
    first = parts[0]
    if len(parts) == 1:
        return first
    params = sum(p.parameter_count or 0 for p in parts)
    return first.model_copy(
        update={
            "tensor_count": sum(p.tensor_count for p in parts),
            "parameter_count": params,
            "parameter_count_label": parameter_count_label(params),
        }
    )
