"""The downloader: a network source's bytes into `<home>/models/<name>/`, owned by hive
so that it survives anything.

One download is one blocking call, `fetch_model`, made in a thread of the caller's: it
resolves the source, GETs each file (resumed, retried), verifies and publishes it. It
stops on one cancel event; it reports progress and narrates through the callbacks it is
given, called from its own thread. One helper thread, which it starts and joins, writes and
hashes the bytes while the next arrive and aborts a blocked request once the event is set
(`hive.actuators.transfer.Sink`).

Bytes stream into `model.gguf.partial`, described by a sidecar (`model.gguf.partial.json`,
mode 0600: URL redacted, ETag, size, commit). After any interruption the next attempt
continues with `Range` from the bytes on disk if the ETag still matches, else starts over
and says why; it resolves the source again from the record in memory, so no file holds a
source's credentials. SHA-256 is computed while streaming (a resumed download hashes its
prefix once). Free space is checked first, once per attempt for every part; a full disk
keeps the partial for later. Transient failures retry with exponential back-off and jitter
(tenacity, a server's Retry-After honoured); permanent ones stop with a clear reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from hive.actuators.files import (
    clear_partials,
    remove_stale_model_files,
    write_atomic,
)
from hive.actuators.http_get import USER_AGENT, BadUrl, HttpGet, split_credentials
from hive.actuators.provision import begin_metadata, finish_metadata, publish_metadata
from hive.actuators.remote import RemoteFile, RemoteNotFound, Unauthorized, resolve_remote
from hive.actuators.space import ensure_space
from hive.actuators.transfer import Sink, Throttle
from hive.errors import ChecksumMismatch, GgufError, PermanentError, TransientError
from hive.model.actions import ProvisionModel
from hive.model.gguf import GgufFacts, parameter_count_label
from hive.model.observed import ModelFile, PartialState
from hive.model.provisioning import (
    PRIVATE_FILE_MODE,
    Cancelled,
    Progress,
    ProgressFn,
    ProvisionOutcome,
    part_names,
    partial_name,
    sidecar_name,
)
from hive.model.text import clip, redact_url, show, show_text, show_url
from hive.model.units import megabytes
from hive.observers.gguf import read_gguf_facts

CHUNK = 1024 * 1024

#: `narrate(action, message, **data)`: a line for the model's event stream. Called from
#: the download's thread: the caller hands it over to its event loop.
Narrate = Callable[..., None]


class RetryableHttp(TransientError):
    """A transient transfer failure; `retry_after` is the server's own request, if any."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamChanged(TransientError):
    """The bytes on the server are not the ones we started with: resolve and start over."""

    reason = "UpstreamChanged"


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
        self.partial = directory / partial_name(name)
        self.sidecar = directory / sidecar_name(name)
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
            on_disk = (directory / partial_name(name)).stat().st_size
        except OSError:
            on_disk = 0
        needed += max(remote.size - on_disk, 0)
    return needed


def _stream(
    attempt: _Attempt,
    *,
    cancel: threading.Event,
    sink: Sink,
    throttle: Throttle,
    progress: ProgressFn,
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
    sink.watch(request)
    try:
        try:
            request.open()
        except BadUrl as exc:
            raise PermanentError(f"{shown}: {show_text(str(exc))}") from None
        except (OSError, http.client.HTTPException) as exc:
            if cancel.is_set():
                raise Cancelled from None
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
            attempt.restart()
        elif attempt.offset and status == 206:
            start = (request.headers.get("Content-Range") or "").removeprefix("bytes ")
            if not start.startswith(f"{attempt.offset}-"):
                raise RetryableHttp(
                    f"{shown}: asked for byte {attempt.offset}, got range {show(start, 80)}"
                )
        total = remote.size or (attempt.offset + (request.content_length or 0))
        _receive(
            request,
            attempt,
            total=total,
            cancel=cancel,
            sink=sink,
            throttle=throttle,
            progress=progress,
        )
    finally:
        # A full disk (ENOSPC, EDQUOT, EFBIG) goes on as an OSError, which the reconciler
        # maps to InsufficientSpace; the partial stays for the resume.
        sink.watch(None)
        request.close()
    if remote.size is not None and attempt.offset < remote.size:
        raise RetryableHttp(
            f"{shown}: the connection ended at byte {attempt.offset} of {remote.size}"
        )


def _describe(exc: BaseException) -> str:
    """An exception of the HTTP client as a message: its text may name a URL (redacted)."""
    text = show_text(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _receive(
    request: HttpGet,
    attempt: _Attempt,
    *,
    total: int,
    cancel: threading.Event,
    sink: Sink,
    throttle: Throttle,
    progress: ProgressFn,
) -> None:
    """The body into the partial: this thread reads it into buffers that the sink's thread
    writes and hashes, so receiving and hashing run side by side. Returns once every byte
    received is written and hashed; raises Cancelled once `cancel` is set (the sink aborts
    a read blocked meanwhile)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if attempt.offset else os.O_TRUNC)
    fd = os.open(attempt.partial, flags, 0o644)
    try:
        try:
            while not cancel.is_set():
                buffer = sink.buffer()
                piece = throttle.piece(len(buffer))
                try:
                    got = _fill(request, memoryview(buffer)[:piece])
                except (OSError, http.client.HTTPException) as exc:
                    sink.give_back(buffer)
                    if cancel.is_set():
                        break
                    raise RetryableHttp(
                        f"{show_url(attempt.remote.url)}: {_describe(exc)}"
                    ) from exc
                if got:
                    sink.submit(fd, attempt.hasher, buffer, got)
                    attempt.offset += got
                    progress(Progress(done=attempt.offset, total=total))
                    throttle.wait(got, cancel)
                else:
                    sink.give_back(buffer)
                if got < piece:
                    break  # the body ended (or the server closed the connection early)
        finally:
            sink.drain()  # every byte received is written and hashed, or the error stands
    finally:
        os.close(fd)
    if cancel.is_set():
        raise Cancelled
    progress(Progress(done=attempt.offset, total=total))


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


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    backoff = wait_exponential_jitter(initial=1, max=30)(state)
    if isinstance(exc, RetryableHttp) and exc.retry_after is not None:
        return max(exc.retry_after, backoff)
    return backoff


def _fetch(
    action: ProvisionModel,
    *,
    remote: RemoteFile,
    name: str,
    expected: str | None,
    directory: Path,
    now: datetime,
    cancel: threading.Event,
    sink: Sink,
    throttle: Throttle,
    progress: ProgressFn,
    narrate: Narrate,
    attempts: int,
) -> tuple[_Attempt, str]:
    """Stream one resolved file into its partial until its bytes are whole and verified."""
    attempt = _Attempt(directory=directory, name=name, remote=remote, expected_sha=expected)
    state, why = attempt.load()
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
        done = attempt.hash_prefix(cancel)
        if done:
            narrate(
                "model_download_resumed",
                f"Resuming from byte {done} ({megabytes(done)} already on disk)",
                from_byte=done,
            )
        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=_wait,
            retry=retry_if_exception_type(RetryableHttp),
            sleep=_sleep_until(cancel),
            reraise=True,
            before_sleep=lambda rs: narrate(
                "model_download_retry",
                f"{rs.outcome.exception() if rs.outcome else ''}; retrying "
                f"(attempt {rs.attempt_number + 1} of {attempts})",
                attempt=rs.attempt_number + 1,
            ),
        )
        for try_ in retrying:
            with try_:
                state = state.model_copy(update={"attempts": state.attempts + 1})
                attempt.save(state)
                try:
                    _stream(
                        attempt,
                        cancel=cancel,
                        sink=sink,
                        throttle=throttle,
                        progress=progress,
                        narrate=narrate,
                    )
                except TransientError as exc:
                    state = state.model_copy(update={"last_error": exc.message})
                    # Only a note for `hive get models`: a full disk refusing it must not
                    # hide the failure itself.
                    with contextlib.suppress(OSError):
                        attempt.save(state)
                    raise
        sha = attempt.hasher.hexdigest()
        if expected is None or sha == expected:
            break
        mismatches += 1
        attempt.restart()
        if mismatches >= 2:
            attempt.sidecar.unlink(missing_ok=True)
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


def _sleep_until(cancel: threading.Event) -> Callable[[float], None]:
    """Tenacity's sleep between attempts: cut short, as Cancelled, once `cancel` is set."""

    def sleep(seconds: float) -> None:
        if cancel.wait(seconds):
            raise Cancelled

    return sleep


def fetch_model(
    action: ProvisionModel,
    *,
    directory: Path,
    now: datetime,
    cancel: threading.Event,
    throttle: Throttle,
    progress: ProgressFn,
    narrate: Narrate,
    attempts: int = 5,
    written: Callable[[int], None] | None = None,
) -> ProvisionOutcome:
    """Fetch a network source into the catalog: resumable, verified, published atomically.
    A split model is fetched as one set and published only when every part is verified.

    Blocking, for a thread of the caller's; `progress` and `narrate` are called from that
    thread. Once `cancel` is set it raises Cancelled, the partial kept, within a tenth of
    a second (`transfer.CANCEL_POLL`) wherever it waits: a read, a retry's wait, a HEAD;
    except a request still connecting (it ends within its connect timeout) and the hub's
    API (within huggingface_hub's own timeout). Once every byte is verified it finishes
    publishing. Its helper thread is joined before it returns or raises. `written(n)` is
    told of every `n` bytes written to a partial file (from the helper thread)."""
    if cancel.is_set():
        raise Cancelled
    with Sink(cancel, written=written) as sink:
        return _fetch_all(
            action,
            directory=directory,
            now=now,
            cancel=cancel,
            sink=sink,
            throttle=throttle,
            progress=progress,
            narrate=narrate,
            attempts=attempts,
        )


def _fetch_all(
    action: ProvisionModel,
    *,
    directory: Path,
    now: datetime,
    cancel: threading.Event,
    sink: Sink,
    throttle: Throttle,
    progress: ProgressFn,
    narrate: Narrate,
    attempts: int,
) -> ProvisionOutcome:
    for resolution in range(3):
        try:
            remotes = resolve_remote(action.source, watch=sink.watch)
        except TransientError:
            if cancel.is_set():
                raise Cancelled from None
            raise
        if cancel.is_set():
            raise Cancelled
        if len(remotes) > 1 and action.sha256:
            raise PermanentError(
                f"{show_url(action.source)} is a split model of {len(remotes)} parts; "
                "spec.sha256 names "
                "one file: remove it (each part is verified against the hub's checksum)"
            )
        directory.mkdir(parents=True, exist_ok=True)
        names = part_names(len(remotes))
        total = sum(r.size or 0 for r in remotes)
        # The one check of free space, before anything is written (a record included), for
        # every part at once: a split model that cannot fit fetches none of its parts. Each
        # attempt (each call) checks again, less what earlier attempts left on disk.
        # (Without a single size, nothing can be checked before the bytes come.)
        if any(r.size is not None for r in remotes):
            ensure_space(
                directory,
                needed=still_needed(directory, remotes, names),
                doing="still to download",
                kept="the partial download is kept and resumes when space is freed",
            )
        base = begin_metadata(
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
                    _fetch(
                        action,
                        remote=remote,
                        name=name,
                        expected=action.sha256 or remote.sha256,
                        directory=directory,
                        now=now,
                        cancel=cancel,
                        sink=sink,
                        throttle=throttle,
                        progress=part_progress,
                        narrate=narrate,
                        attempts=attempts,
                    )
                )
            break
        except UpstreamChanged as exc:
            if resolution == 2:
                raise
            narrate("model_download_restarted", f"{exc.message}; starting over")
            clear_partials(directory)

    facts: list[GgufFacts] = []
    for attempt, _ in fetched:
        try:
            facts.append(read_gguf_facts(attempt.partial))
        except GgufError as exc:
            for bad, _ in fetched:
                bad.restart()
                bad.sidecar.unlink(missing_ok=True)
            raise GgufError(
                f"{show_url(action.source)} is not a usable GGUF file: {clip(exc.message)}"
            ) from None
    for attempt, _ in fetched:
        os.replace(attempt.partial, attempt.final)
        attempt.sidecar.unlink(missing_ok=True)
    files = [ModelFile(name=a.final.name, size=a.offset, sha256=sha) for a, sha in fetched]
    metadata = finish_metadata(
        base.model_copy(update={"size": sum(f.size for f in files), "files": files}),
        sha=fetched[0][1],
        verified=all(a.expected_sha is not None for a, _ in fetched),
        facts=merge_facts(facts),
    )
    publish_metadata(directory, metadata)
    remove_stale_model_files(directory, keep={a.final.name for a, _ in fetched})
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
