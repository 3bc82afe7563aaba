"""One blocking HTTP request (http.client) whose body a thread reads straight into hive's
buffers: the downloader's GETs, and the HEAD that resolves an `http(s)://` source.

aiohttp hands a body over in the event loop, 256 KiB at a time, as new bytes objects; a
thread blocked in `readinto` fills a 4 MiB buffer with no copy and no turn of the loop,
and leaves the GIL to the thread that hashes. B3 measured it (docs/benchmarks.md): a GiB
in 1.5 s instead of 2.05 s, and 0.05 CPU-s of the event loop's time instead of 0.94.

It does what an aiohttp session did for these requests: redirects (at most 10; the
`Authorization` header is not sent to another origin), a URL's user info sent as
`Authorization: Basic` and never as part of a URL (`split_credentials`), proxies from the
environment (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`), TLS with the system's CAs, a connect
and a read timeout. No compression is asked for (`Accept-Encoding: identity`), so the
bytes read are the file's bytes.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.client
import socket
import ssl
import urllib.request
from email.message import Message
from typing import Literal
from urllib.parse import SplitResult, unquote, urljoin, urlsplit, urlunsplit

from hive import __version__

MAX_REDIRECTS = 10
USER_AGENT = f"hive/{__version__}"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class TooManyRedirects(http.client.HTTPException):
    pass


class BadUrl(ValueError):
    pass


@functools.cache
def _tls() -> ssl.SSLContext:
    return ssl.create_default_context()


def _origin(parts: SplitResult, url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL, the port defaulted by the scheme."""
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise BadUrl(f"{url} is not an http(s) URL")
    return scheme, parts.hostname, parts.port or (443 if scheme == "https" else 80)


def split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """`url` without its user info, and the `Authorization: Basic` header that carries the
    user info instead (empty when there is none), as curl and aiohttp send it. A URL with
    credentials is never sent as written: not to a proxy, not to a log."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url, {}
    if "@" not in parts.netloc:
        return url, {}
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    pair = f"{unquote(user)}:{unquote(password)}".encode()
    bare = urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
    return bare, {"Authorization": "Basic " + base64.b64encode(pair).decode()}


class HttpGet:
    """`open()` connects, sends the GET (or the HEAD, with `method="HEAD"`) and follows
    redirects; then `status`, `headers` and `url` say what answered, and `readinto` reads
    the body. Blocking calls, for a thread; `abort()` may be called from any thread to end
    a blocked read at once.

    User info in `url` becomes an `Authorization: Basic` header (unless `headers` has
    one already), sent like any other to the URL's origin only."""

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        *,
        method: Literal["GET", "HEAD"] = "GET",
        connect_timeout: float = 30.0,
        read_timeout: float = 60.0,
    ) -> None:
        self.url, auth = split_credentials(url)
        self._method = method
        self._headers = dict(headers)
        if not any(k.lower() == "authorization" for k in self._headers):
            self._headers.update(auth)
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._conn: http.client.HTTPConnection | None = None
        self._response: http.client.HTTPResponse | None = None
        self._aborted = False

    @property
    def status(self) -> int:
        assert self._response is not None
        return self._response.status

    @property
    def headers(self) -> Message:
        """Case-insensitive: `headers.get("etag")`."""
        assert self._response is not None
        return self._response.headers

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return int(value) if value is not None and value.isdigit() else None

    def open(self) -> None:
        headers = self._headers
        for _ in range(MAX_REDIRECTS + 1):
            response = self._send(self.url, headers)
            location = response.getheader("Location")
            if response.status not in _REDIRECTS or not location:
                return
            # Credentials a Location names are not used, nor sent on as part of a URL.
            target, _ = split_credentials(urljoin(self.url, location))
            parts = urlsplit(target)
            if parts.scheme.lower() not in ("http", "https"):
                raise BadUrl(f"{self.url} redirects to {target}, which is not http(s)")
            if _origin(parts, target) != _origin(urlsplit(self.url), self.url):
                # A token for the hub is not for its CDN (as aiohttp and requests do).
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            self.close()
            self.url = target
        raise TooManyRedirects(f"more than {MAX_REDIRECTS} redirects")

    def _send(self, url: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        parts = urlsplit(url)
        scheme, host, port = _origin(parts, url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        proxy = _proxy_for(scheme, host)
        conn: http.client.HTTPConnection
        if proxy is None:
            conn = self._connection(scheme, host, port)
        else:
            p_scheme, p_host, p_port, auth = proxy
            if scheme == "https":
                if p_scheme != "http":
                    raise BadUrl(f"the proxy for {url} must be an http:// URL (a CONNECT tunnel)")
                # TLS with the target, through a CONNECT tunnel the proxy opens.
                conn = self._connection("https", p_host, p_port)
                conn.set_tunnel(host, port, headers=auth)
            else:
                conn = self._connection(p_scheme, p_host, p_port)
                target = url  # a plain-HTTP request to a proxy names the absolute URL
                headers = {**headers, **auth}
        self._conn = conn
        conn.request(self._method, target, headers=headers)
        if self._aborted:  # while it connected, when `abort` had no socket to shut
            raise ConnectionAbortedError(f"{self._method} {url} was aborted")
        if conn.sock is not None:
            conn.sock.settimeout(self._read_timeout)
        self._response = conn.getresponse()
        return self._response

    def _connection(self, scheme: str, host: str, port: int) -> http.client.HTTPConnection:
        if scheme == "https":
            return http.client.HTTPSConnection(
                host, port, timeout=self._connect_timeout, context=_tls()
            )
        return http.client.HTTPConnection(host, port, timeout=self._connect_timeout)

    def readinto(self, view: memoryview) -> int:
        """Some bytes of the body into `view`; 0 at its end (or when the server closed the
        connection early: the caller compares what it got with the size it expects)."""
        assert self._response is not None
        if self._aborted:
            return 0
        return self._response.readinto(view)

    def abort(self) -> None:
        """End a read blocked in another thread (it returns 0 or raises OSError); `open`
        raises OSError once it is connected (connecting itself is not interrupted: it ends
        within the connect timeout)."""
        self._aborted = True
        conn = self._conn
        sock = conn.sock if conn is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = self._response = None


def _proxy_for(scheme: str, host: str) -> tuple[str, str, int, dict[str, str]] | None:
    """The proxy the environment names for this scheme and host (NO_PROXY honoured):
    (scheme, host, port, the Proxy-Authorization header if the URL carries credentials)."""
    url = urllib.request.getproxies().get(scheme)
    if not url or urllib.request.proxy_bypass(host):
        return None
    if "://" not in url:
        url = f"http://{url}"
    parts = urlsplit(url)
    p_scheme, p_host, p_port = _origin(parts, f"the {scheme} proxy {url}")
    auth: dict[str, str] = {}
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        auth["Proxy-Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    return p_scheme, p_host, p_port, auth
