"""The one exception tree of hive.

Every error hive raises on purpose is a `HiveError`; the API maps them to HTTP
answers and the reconciler maps them to conditions, each in one place.
"""

from __future__ import annotations

import errno


class HiveError(Exception):
    """Base of every error hive raises on purpose."""

    #: A short CamelCase reason, used as a condition reason and an API error code.
    reason: str = "Error"
    #: The HTTP status this error maps to when it reaches the API.
    http_status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationFailed(HiveError):
    """Input (a manifest, a request) is invalid; `problems` lists every finding."""

    reason = "Invalid"
    http_status = 422

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems if problems is not None else [message]


class BadRequest(ValidationFailed):
    """A request body that is not what the route takes (an unknown job operation, a field
    of the wrong type): 400, each problem naming its field path and what to send."""

    reason = "BadRequest"
    http_status = 400


class TooManyRequests(HiveError):
    """A bound on work in flight is reached (running jobs): try again once some end."""

    reason = "TooManyRequests"
    http_status = 429


class NotFound(HiveError):
    reason = "NotFound"
    http_status = 404


class Conflict(HiveError):
    reason = "Conflict"
    http_status = 409


class TransientError(HiveError):
    """Worth retrying with back-off: the world may change (disk freed, server back)."""

    reason = "Transient"
    http_status = 503


class PermanentError(HiveError):
    """Retrying will not help until the desired record changes."""

    reason = "Permanent"
    http_status = 500


class InsufficientSpace(TransientError):
    """The disk under hive's home is full (or a quota or file-size limit is reached):
    retried with back-off, and whatever was written so far is kept for then."""

    reason = "InsufficientSpace"


#: The errnos of a write that found no room: a full filesystem, a spent quota, a file past
#: its size limit (RLIMIT_FSIZE, or the filesystem's largest file).
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def is_no_space(exc: BaseException) -> bool:
    """Whether `exc` is a write that found no room (see NO_SPACE_ERRNOS)."""
    return isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS


class SourceNotFound(TransientError):
    """A `file:` source is missing: it may yet appear, so it is retried with back-off."""

    reason = "SourceNotFound"


class ChecksumMismatch(PermanentError):
    reason = "ChecksumMismatch"


class GgufError(PermanentError):
    """A file is not a readable GGUF file (truncated, corrupt, or another format)."""

    reason = "NotGguf"


class ActionTimeout(TransientError):
    reason = "Timeout"


class ObserveFailed(TransientError):
    """What a reconciler observes (a directory, a process) could not be read."""

    reason = "ObserveFailed"


class InternalError(TransientError):
    """An exception hive did not raise on purpose (a bug): reported with its type and
    retried with back-off, so that one bad key never stops the loop."""

    reason = "InternalError"

    @classmethod
    def of(cls, exc: BaseException, text: str) -> InternalError:
        """`text` is `str(exc)` made safe to echo (bounded, redacted) by the caller."""
        return cls(f"{type(exc).__name__}: {text}")


class ApiError(HiveError):
    """An error answer of a hive's HTTP API, as a client (the CLI) receives it: the HTTP
    status, and the `error` object of the body (`code`, `message`, and any extra field)."""

    def __init__(self, message: str, *, status: int, error: dict[str, object]) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.reason = str(error.get("code") or "Error")


class HiveUnreachable(HiveError):
    """A client found no hive at `url` (refused, timed out, name not resolved): `cause`
    is the one-line reason, as `[Errno 111] Connection refused` or `timed out`."""

    reason = "Unreachable"

    def __init__(self, *, url: str, cause: str) -> None:
        super().__init__(f"cannot reach hive at {url}: {cause} (is `hive serve` running?)")
        self.url = url
        self.cause = cause
