"""What hive may echo back: values clipped to a bounded size, URLs with their secrets
redacted. Every error, event, status, log line and file that repeats user input goes
through here, so no echo can grow without bound (an alias bomb) or carry a credential."""

from __future__ import annotations

import re
from os import PathLike, fspath
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

#: The most characters of one echoed value (a name, a field's value, a URL).
ECHO_LIMIT = 200
#: What stands in for a secret.
REDACTED = "***"
_ELLIPSIS = "…"

#: Query parameter names whose values are secrets: the signed-URL schemes of S3
#: (`X-Amz-*`), GCS (`X-Goog-*`), Azure SAS (`sig`), CloudFront (`Signature`, `Policy`,
#: `Key-Pair-Id`), and any name that says token, key, secret, password or credential.
_SECRET_PARAM = re.compile(
    r"(token|sig|key|secret|passw|pwd|credential|auth|session|^x-amz-|^x-goog-|^policy$"
    r"|^code$|^hash$)",
    re.IGNORECASE,
)
#: A Hugging Face access token (`hf_` and 34 letters and digits; older ones `api_…`):
#: hidden wherever it stands, in a URL's path, fragment or query, or in free text.
_HF_TOKEN = re.compile(r"(?:hf|api(?:_org)?)_[A-Za-z0-9]{30,}")
#: A URL inside free text (an exception's message, a log line).
_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>`]+")
#: Characters that end a sentence or a bracket more often than they end a URL.
_TRAILING = ".,;:!?)]}"


def clip(text: str, limit: int = ECHO_LIMIT) -> str:
    """`text` cut to at most `limit` characters, with an ellipsis where it was cut."""
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)] + _ELLIPSIS


def show_url(url: str | PathLike[str], limit: int = ECHO_LIMIT) -> str:
    """A URL or a file path as a message names it: redacted (`redact_url`), then clipped;
    not quoted. Redacted first, so that a cut never leaves half a secret to read."""
    return clip(redact_url(fspath(url)), limit)


def show_text(text: str, limit: int = ECHO_LIMIT) -> str:
    """Free text from elsewhere (an exception's message, a server's header) as a message
    repeats it: every URL in it redacted, then clipped; not quoted."""
    return clip(redact_text(text), limit)


def redact_data(value: Any) -> Any:
    """Structured data (an event's, a job line's) with every URL in its strings redacted,
    in nested lists and dicts too (hive builds them, a few levels deep at most)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_data(v) for v in value]
    return value


def show(value: Any, limit: int = ECHO_LIMIT) -> str:
    """A value as an error message quotes it (its repr), bounded in size and redacted.

    Containers are rendered only as far as the limit needs, so a value built by an alias
    bomb (nested lists sharing one another, billions of items once expanded) costs as much
    as a short one."""
    return clip(redact_text(_bounded_repr(value, limit + 1)), limit)


def _bounded_repr(value: Any, budget: int) -> str:
    """repr(value), stopped once `budget` characters are written (iterative: no recursion)."""
    out: list[str] = []
    size = 0
    stack: list[Any] = [value]
    while stack and size < budget:
        item = stack.pop()
        if isinstance(item, _Literal):
            piece = item.text
        elif isinstance(item, list | tuple):
            close = "]" if isinstance(item, list) else ")"
            parts: list[Any] = [_Literal("[" if close == "]" else "(")]
            for i, child in enumerate(item):
                if i:
                    parts.append(_Literal(", "))
                parts.append(child)
                if i > budget:  # no more could be shown
                    break
            parts.append(_Literal(close))
            stack.extend(reversed(parts))
            continue
        elif isinstance(item, dict):
            parts = [_Literal("{")]
            for i, (k, v) in enumerate(item.items()):
                if i:
                    parts.append(_Literal(", "))
                parts.extend((k, _Literal(": "), v))
                if i > budget:
                    break
            parts.append(_Literal("}"))
            stack.extend(reversed(parts))
            continue
        elif isinstance(item, str):
            piece = repr(_redacted_head(item, _REDACT_WINDOW))[:budget]
        else:
            try:
                piece = repr(item)[:budget]
            except ValueError:  # an int past Python's digit limit
                piece = f"<{type(item).__name__}>"
        out.append(piece)
        size += len(piece)
    return "".join(out)


#: How much of one string `show` redacts before it quotes the start of it: more than any
#: value hive accepts holds (a source is at most 4096 characters).
_REDACT_WINDOW = 8192


def _redacted_head(text: str, window: int) -> str:
    """The first `window` characters of `text`, redacted. Redacted before it is cut short
    for display, so a cut never splits a URL's user info from the `@` that marks it; a URL
    the window itself cuts is hidden whole after its scheme."""
    if len(text) <= window:
        return redact_text(text)
    head = text[:window]
    cut = None
    for match in _URL_IN_TEXT.finditer(head):
        cut = match if match.end() == len(head) else None
    if cut is not None:
        scheme = cut.group(0).partition("://")[0]
        head = f"{head[: cut.start()]}{scheme}://{REDACTED}"
    return redact_text(head)


class _Literal:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def redact_url(url: str) -> str:
    """`url` with its password (or a user name that stands alone, as a token would) and the
    values of secret-looking query parameters replaced by `***`; other URLs unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _redact_opaque(url)
    if not parts.scheme or (not parts.netloc and not parts.query):
        return _HF_TOKEN.sub(REDACTED, url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}:{REDACTED}@{hostport}" if colon else f"{REDACTED}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAM.search(name) for name, _ in pairs):
            query = "&".join(
                f"{quote(name, safe='-_.~')}="
                + (REDACTED if _SECRET_PARAM.search(name) else quote(value, safe="-_.~/:"))
                for name, value in pairs
            )
    return _HF_TOKEN.sub(
        REDACTED, urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    )


def _redact_opaque(url: str) -> str:
    """A URL that urlsplit refused: keep the scheme, hide the rest."""
    scheme, sep, _ = url.partition("://")
    return f"{scheme}://{REDACTED}" if sep else REDACTED


def redact_text(text: str) -> str:
    """Every URL inside `text` redacted (an exception's message, a log line), and every
    Hugging Face token."""
    text = _HF_TOKEN.sub(REDACTED, text)
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(_redact_match, text)


def _redact_match(match: re.Match[str]) -> str:
    """A URL found in text, redacted; punctuation that ends the sentence around it (`url:
    reason`, `(url)`) is kept out of the URL, so a redacted value does not swallow it."""
    url = match.group(0)
    bare = url.rstrip(_TRAILING)
    return redact_url(bare) + url[len(bare) :]


def has_secret(url: str) -> bool:
    """Whether `redact_url` would hide something in `url`."""
    return redact_url(url) != url
