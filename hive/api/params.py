"""Query parameters and headers as the routes take them: integers from 0 to an int64's
largest, and booleans; anything else is a 422 naming the parameter and what it got."""

from __future__ import annotations

from hive.errors import ValidationFailed
from hive.model.text import show

#: The largest integer a query parameter or header takes (an int64, as the spec says).
MAX_INT = 2**63 - 1


def int_param(raw: str | None, what: str, *, kind: str = "an event id") -> int | None:
    """`raw` as an integer from 0 to MAX_INT; None when absent. Only ASCII digits: `int()`
    would also take `+1`, `1_0` and other scripts' digits. Empty is refused (the spec says
    integer; an EventSource sends no `Last-Event-ID` rather than an empty one)."""
    if raw is None:
        return None
    digits = raw.isascii() and raw.isdigit() and len(raw) <= len(str(MAX_INT))
    if not digits or int(raw) > MAX_INT:
        raise ValidationFailed(
            f"{what} must be {kind} (an integer from 0 to {MAX_INT}), got {show(raw)}"
        )
    return int(raw)


_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no", ""}


def bool_param(raw: str | None, what: str) -> bool:
    if raw is None or raw.lower() in _FALSE:
        return False
    if raw.lower() in _TRUE:
        return True
    raise ValidationFailed(f"{what} must be true or false, got {show(raw)}")
