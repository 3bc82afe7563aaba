"""A Hugging Face hub look-alike on 127.0.0.1 for tests and benchmarks, with fault switches.

It answers what `huggingface_hub` (2.x, httpx2 based) and hive's downloader (http.client,
in a thread) ask of huggingface.co:

- ``HEAD|GET /{repo}/resolve/{revision}/{path}``: LFS files answer ``302`` to a signed,
  content-addressed CDN URL (``/cdn/{sha256}?...``) with ``X-Repo-Commit``,
  ``X-Linked-Etag: "<sha256>"``, ``X-Linked-Size`` and ``ETag``; plain (non-LFS) files answer
  ``200`` with a git-blob ``ETag`` and the bytes.
- ``HEAD|GET /cdn/{sha256}``: the bytes, ``ETag: "<sha256>"``, ``Accept-Ranges: bytes``,
  ``Range: bytes=N-`` / ``N-M`` / ``-S`` (206 + ``Content-Range``; 416 when unsatisfiable),
  ``If-Range``.
- ``GET /api/models/{repo}[/revision/{rev}]`` (model_info, ``siblings``, ``sha``) and
  ``GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=&cursor=`` (list_repo_tree and
  list_repo_files, paginated with a ``Link: <...>; rel="next"`` header like the hub).
- ``HEAD|GET /{path}`` of a file added with `add_plain_file`: a plain web server's answer
  (``ETag``, ranges), guarded by HTTP Basic credentials and a ``token=`` query value when
  asked to (401 / 403 otherwise), on HEAD and GET alike.
- 404s carry the hub's ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``,
  ``EntryNotFound``) and ``{"error": ...}`` so `huggingface_hub` raises its own exceptions.

By default the CDN lives on a second port, i.e. another *origin*, as cdn-lfs / cas-bridge do
for huggingface.co. That matters: `huggingface_hub` follows same-origin redirects on its
metadata HEAD and stops at cross-origin ones (reading the metadata off the 302), and both it
and aiohttp drop ``Authorization`` when a redirect leaves the origin. So CDN URLs are signed
(``sig=``); the CDN accepts a valid signature or the bearer token.

Use ``async with Hub() as hub:`` inside async tests (aiohttp clients on the same loop), and
``with ThreadedHub() as hub:`` from sync code (huggingface_hub, `hive serve` subprocesses):
it runs the server on its own event loop in a background thread. Every content and fault
method is plain sync and thread-safe, on both.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, unquote, urlencode

from aiohttp import web

CHUNK_SIZE = 256 * 1024
TREE_PAGE_SIZE = 1000
_LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_INVERT = bytes(255 - i for i in range(256))
_UNSATISFIABLE = (-1, -1)


# ─── content ────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class _Content:
    """Bytes of a file: in memory or a path on disk (never read whole), optionally passed
    through a byte-wise translation table (how `change_etag` makes new content of any size)."""

    source: bytes | Path
    size: int
    table: bytes | None = None

    def chunks(self, start: int, end: int, chunk_size: int) -> Iterator[bytes]:
        """The bytes [start, end), at most `chunk_size` at a time."""
        if isinstance(self.source, bytes):
            view = memoryview(self.source)
            for pos in range(start, end, chunk_size):
                yield self._apply(bytes(view[pos : min(end, pos + chunk_size)]))
            return
        with self.source.open("rb") as f:
            f.seek(start)
            pos = start
            while pos < end:
                data = f.read(min(chunk_size, end - pos))
                if not data:
                    raise OSError(f"{self.source} shrank below {self.size} bytes")
                pos += len(data)
                yield self._apply(data)

    def _apply(self, data: bytes) -> bytes:
        return data if self.table is None else data.translate(self.table)

    def digests(self, git: bool = True) -> tuple[str, str]:
        """(sha256, git blob sha1 or "" when not `git`) of the content."""
        sha256 = hashlib.sha256()
        sha1 = hashlib.sha1(f"blob {self.size}\0".encode())
        for chunk in self.chunks(0, self.size, 1 << 20):
            sha256.update(chunk)
            if git:
                sha1.update(chunk)
        return sha256.hexdigest(), sha1.hexdigest() if git else ""


@dataclass(frozen=True)
class HubFile:
    """One file of one repo revision, as the hub describes it."""

    path: str
    size: int
    sha256: str
    lfs: bool
    #: The git blob id: of the LFS pointer file for LFS files, of the bytes otherwise.
    oid: str
    content: _Content = field(repr=False)

    @property
    def etag(self) -> str:
        """What `huggingface_hub` records as the file's etag (blob name in its cache)."""
        return self.sha256 if self.lfs else self.oid

    @property
    def pointer_size(self) -> int:
        return len(_LFS_POINTER.format(sha256=self.sha256, size=self.size).encode())


def _make_file(path: str, content: _Content, lfs: bool) -> HubFile:
    sha256, blob_sha1 = content.digests(git=not lfs)
    if lfs:
        pointer = _LFS_POINTER.format(sha256=sha256, size=content.size).encode()
        oid = hashlib.sha1(b"blob %d\0" % len(pointer) + pointer).hexdigest()
    else:
        oid = blob_sha1
    return HubFile(path=path, size=content.size, sha256=sha256, lfs=lfs, oid=oid, content=content)


def _commit_id(files: Mapping[str, HubFile]) -> str:
    listing = "".join(f"{p}\0{f.oid}\0{int(f.lfs)}\n" for p, f in sorted(files.items()))
    return hashlib.sha1(listing.encode()).hexdigest()


# ─── requests log and faults ────────────────────────────────────────────────────────────


@dataclass
class RequestRecord:
    """One request the hub answered (or is still answering: `sent` grows while it streams)."""

    method: str
    #: The decoded path, without the query string.
    path: str
    query: str
    #: "resolve", "cdn", "api", "plain" or "other".
    route: str
    #: The raw ``Range`` header, or None.
    range: str | None
    headers: dict[str, str]
    status: int = 0
    #: Body bytes written to the socket for this response.
    sent: int = 0
    #: True when the response ended early: a dropped connection or a client that went away.
    aborted: bool = False
    #: The fault that shaped the response: "fail", "drop", "corrupt" or None.
    fault: str | None = None
    #: When the hub saw the request (`time.monotonic()`): gaps between requests are what a
    #: client's waits really were, whatever it narrates.
    arrived: float = field(default_factory=time.monotonic)

    @property
    def range_start(self) -> int | None:
        """N of ``Range: bytes=N-[M]``."""
        m = _RANGE_RE.match(self.range or "")
        return int(m.group(1)) if m and m.group(1) else None


@dataclass(frozen=True)
class _PlainFile:
    """A file `add_plain_file` serves, with what a request must carry to get it."""

    file: HubFile
    #: The ``Authorization`` header value required (``Basic ...``), or None.
    authorization: str | None
    token: str | None


@dataclass
class _Faults:
    drop_after: int | None = None
    drop_times: int = 0
    throttle: float | None = None
    fail_status: int = 0
    fail_times: int = 0
    fail_retry_after: float | None = None
    fail_routes: frozenset[str] = frozenset({"resolve", "cdn"})
    corrupt_times: int | None = 0  # None: every response until reset


# ─── the server ─────────────────────────────────────────────────────────────────────────


class _HubCore:
    """Content, faults and the aiohttp application; `Hub` and `ThreadedHub` run it."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        cdn_same_origin: bool = False,
        chunk_size: int = CHUNK_SIZE,
        tree_page_size: int = TREE_PAGE_SIZE,
    ) -> None:
        self.host = host
        #: Serve the CDN on the hub's own port. `huggingface_hub` then follows the 302 on its
        #: metadata HEAD, so CDN answers also carry X-Repo-Commit and X-Linked-* in this mode.
        self.cdn_same_origin = cdn_same_origin
        self.chunk_size = chunk_size
        self.tree_page_size = tree_page_size
        self.requests: list[RequestRecord] = []
        self._lock = threading.RLock()
        self._branches: dict[str, dict[str, dict[str, HubFile]]] = {}
        self._commits: dict[str, dict[str, HubFile]] = {}
        self._blobs: dict[str, HubFile] = {}
        self._plain: dict[str, _PlainFile] = {}
        self._token: str | None = None
        self._faults = _Faults()
        self._secret = secrets.token_bytes(16)
        self._runner: web.AppRunner | None = None
        self._stopping = False
        self.port = 0
        self.cdn_port = 0

    # ── addresses ──

    @property
    def url(self) -> str:
        """The endpoint base, for ``HF_ENDPOINT`` / ``endpoint=``."""
        if not self.port:
            raise RuntimeError("the hub is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def cdn_base(self) -> str:
        return self.url if self.cdn_same_origin else f"http://{self.host}:{self.cdn_port}"

    def resolve_url(self, repo: str, path: str, revision: str = "main") -> str:
        """What ``hf_hub_url(repo, path, revision=..., endpoint=hub.url)`` returns."""
        return f"{self.url}/{repo}/resolve/{quote(revision, safe='')}/{quote(path)}"

    def cdn_url(self, repo: str, path: str, revision: str = "main") -> str:
        """The signed CDN URL the resolve route redirects to for this LFS file."""
        commit, files = self._lookup(repo, revision)
        return self._cdn_url_for(files[path], commit)

    def _cdn_url_for(self, f: HubFile, commit: str) -> str:
        expires = int(time.time()) + 3600
        query = urlencode(
            {
                "filename": f.path.rsplit("/", 1)[-1],
                "commit": commit,
                "expires": expires,
                "sig": self._sign(f.sha256, expires),
            }
        )
        return f"{self.cdn_base}/cdn/{f.sha256}?{query}"

    def _sign(self, sha256: str, expires: int) -> str:
        return hmac.new(self._secret, f"{sha256}:{expires}".encode(), "sha256").hexdigest()[:32]

    # ── content ──

    def add_repo(self, repo: str, revision: str = "main") -> str:
        """Create an empty repo (or branch); returns its commit id."""
        with self._lock:
            files = self._branches.setdefault(repo, {}).setdefault(revision, {})
            return self._commit(repo, revision, files)

    def add_file(
        self,
        repo: str,
        path: str,
        data: bytes | str | Path,
        revision: str = "main",
        lfs: bool = True,
    ) -> HubFile:
        """Register a file (a Path is streamed from disk when served, never read whole)."""
        if isinstance(data, str):
            data = data.encode()
        if isinstance(data, Path):
            content = _Content(data, data.stat().st_size)
        else:
            content = _Content(bytes(data), len(data))
        f = _make_file(path.strip("/"), content, lfs)
        self._put(repo, revision, f)
        return f

    def replace_file(
        self,
        repo: str,
        path: str,
        data: bytes | str | Path,
        revision: str = "main",
        lfs: bool | None = None,
        keep_old_blob: bool = False,
    ) -> HubFile:
        """A new upload of an existing file: new bytes, new ETag, new commit. Unless
        `keep_old_blob`, the old content is gone from the CDN (its URLs answer 404)."""
        old = self._file(repo, revision, path)
        new = self.add_file(repo, path, data, revision, old.lfs if lfs is None else lfs)
        if not keep_old_blob:
            self._drop_blob(old.sha256)
        return new

    def change_etag(
        self, repo: str, path: str, revision: str = "main", keep_old_blob: bool = False
    ) -> HubFile:
        """Replace a file's content by different bytes of the same length (each byte + 1,
        also for files on disk), hence a new sha256/ETag and commit."""
        old = self._file(repo, revision, path)
        table = old.content.table or bytes(range(256))
        shifted = bytes(table[(i + 1) % 256] for i in range(256))
        new = _make_file(old.path, _Content(old.content.source, old.size, shifted), old.lfs)
        self._put(repo, revision, new)
        if not keep_old_blob:
            self._drop_blob(old.sha256)
        return new

    def add_plain_file(
        self,
        path: str,
        data: bytes | str | Path,
        *,
        basic: tuple[str, str] | None = None,
        token: str | None = None,
    ) -> HubFile:
        """Serve `data` at ``/{path}`` as a plain web server would (not a hub route: no
        redirect, no hub headers). With `basic` = (user, password), HEAD and GET answer 401
        unless ``Authorization: Basic`` carries exactly those; with `token`, 403 unless the
        query has ``token=<token>``. The hub's own `require_token` does not apply."""
        if isinstance(data, str):
            data = data.encode()
        content = (
            _Content(data, data.stat().st_size)
            if isinstance(data, Path)
            else _Content(bytes(data), len(data))
        )
        f = _make_file(path.strip("/"), content, lfs=True)
        authorization = None
        if basic is not None:
            pair = f"{basic[0]}:{basic[1]}".encode()
            authorization = "Basic " + base64.b64encode(pair).decode()
        with self._lock:
            self._plain[f.path] = _PlainFile(file=f, authorization=authorization, token=token)
        return f

    def remove_file(self, repo: str, path: str, revision: str = "main") -> None:
        with self._lock:
            files = dict(self._branches[repo][revision])
            del files[path]
            self._branches[repo][revision] = files
            self._commit(repo, revision, files)

    def file(self, repo: str, path: str, revision: str = "main") -> HubFile:
        return self._file(repo, revision, path)

    def commit(self, repo: str, revision: str = "main") -> str:
        """The 40-hex commit id `revision` resolves to."""
        return self._lookup(repo, revision)[0]

    def _file(self, repo: str, revision: str, path: str) -> HubFile:
        return self._lookup(repo, revision)[1][path]

    def _put(self, repo: str, revision: str, f: HubFile) -> None:
        with self._lock:
            files = dict(self._branches.setdefault(repo, {}).get(revision, {}))
            files[f.path] = f
            self._branches[repo][revision] = files
            self._blobs[f.sha256] = f
            self._commit(repo, revision, files)

    def _commit(self, repo: str, revision: str, files: dict[str, HubFile]) -> str:
        commit = _commit_id(files)
        self._commits[f"{repo}@{commit}"] = files
        return commit

    def _drop_blob(self, sha256: str) -> None:
        with self._lock:
            live = {
                f.sha256
                for revs in self._branches.values()
                for fs in revs.values()
                for f in fs.values()
            }
            if sha256 not in live:
                self._blobs.pop(sha256, None)

    def _lookup(self, repo: str, revision: str) -> tuple[str, dict[str, HubFile]]:
        """(commit, files) of a branch name or commit id; KeyError('repo'|'revision')."""
        with self._lock:
            revs = self._branches.get(repo)
            if revs is None:
                raise KeyError("repo")
            files = revs.get(revision)
            if files is not None:
                return _commit_id(files), files
            if _COMMIT_RE.match(revision) and (f"{repo}@{revision}") in self._commits:
                return revision, self._commits[f"{repo}@{revision}"]
            raise KeyError("revision")

    # ── auth and faults ──

    def require_token(self, token: str | None) -> None:
        """Every route answers 401 unless ``Authorization: Bearer <token>`` (None: open).
        CDN URLs also pass with their signature, as signed URLs on the real CDN do."""
        self._token = token

    def drop_after(self, n_bytes: int, times: int = 1) -> None:
        """The next `times` GETs of file bytes close the connection after `n_bytes` of body."""
        with self._lock:
            self._faults.drop_after, self._faults.drop_times = n_bytes, times

    def throttle(self, bytes_per_sec: float | None) -> None:
        """Pace file bodies at this rate (None: full speed); read per chunk, so it may
        change while a download runs."""
        self._faults.throttle = bytes_per_sec

    def fail_next(
        self,
        status: int,
        times: int = 1,
        retry_after: float | None = None,
        routes: Iterable[str] = ("resolve", "cdn"),
    ) -> None:
        """Answer the next `times` requests to `routes` ("resolve", "cdn", "api", "plain") with
        `status` (and ``Retry-After`` when given)."""
        with self._lock:
            self._faults.fail_status, self._faults.fail_times = status, times
            self._faults.fail_retry_after = retry_after
            self._faults.fail_routes = frozenset(routes)

    def corrupt(self, times: int | None = None) -> None:
        """Serve wrong bytes (every byte inverted, same length) while advertising the right
        sha256, for the next `times` file bodies (None: until `reset_faults`)."""
        with self._lock:
            self._faults.corrupt_times = times

    def reset_faults(self) -> None:
        with self._lock:
            self._faults = _Faults()

    def _take_fail(self, route: str) -> tuple[int, float | None] | None:
        with self._lock:
            f = self._faults
            if f.fail_times > 0 and route in f.fail_routes:
                f.fail_times -= 1
                return f.fail_status, f.fail_retry_after
            return None

    def _take_body_faults(self) -> tuple[int | None, bool]:
        """(drop after n bytes, corrupt) for one GET of file bytes."""
        with self._lock:
            f = self._faults
            drop = None
            if f.drop_after is not None and f.drop_times > 0:
                drop = f.drop_after
                f.drop_times -= 1
            corrupt = f.corrupt_times is None or f.corrupt_times > 0
            if f.corrupt_times:
                f.corrupt_times -= 1
            return drop, corrupt

    # ── observability ──

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def requests_to(
        self, route: str | None = None, method: str | None = None
    ) -> list[RequestRecord]:
        with self._lock:
            return [
                r
                for r in self.requests
                if (route is None or r.route == route) and (method is None or r.method == method)
            ]

    def body_bytes_sent(self, route: str | None = None) -> int:
        """Sum of body bytes sent (file bytes, for route "cdn")."""
        return sum(r.sent for r in self.requests_to(route))

    # ── the application ──

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _start_server(self) -> None:
        self._stopping = False
        runner = web.AppRunner(
            self._app(), access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, 0)
        await site.start()
        self.port = _bound_port(site)
        if not self.cdn_same_origin:
            cdn = web.TCPSite(runner, self.host, 0)
            await cdn.start()
            self.cdn_port = _bound_port(cdn)
        self._runner = runner

    async def _stop_server(self) -> None:
        self._stopping = True  # bodies still streaming end at their next chunk
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        segments = [unquote(s) for s in request.raw_path.split("?", 1)[0].split("/")[1:]]
        with self._lock:
            plain = "/".join(segments) in self._plain
        route = "plain" if plain else _route_of(segments)
        record = RequestRecord(
            method=request.method,
            path=request.path,
            query=request.query_string,
            route=route,
            range=request.headers.get("Range"),
            headers=dict(request.headers),
        )
        with self._lock:
            self.requests.append(record)
        try:
            response = await self._dispatch(request, record, segments)
        except web.HTTPException as exc:
            response = exc
        if record.status == 0:
            record.status = response.status
        return response

    async def _dispatch(
        self, request: web.Request, record: RequestRecord, segments: list[str]
    ) -> web.StreamResponse:
        route = record.route
        if request.method not in ("GET", "HEAD"):
            return _error(405, "Method not allowed")
        if route == "plain":
            denied = self._check_plain_auth(request, "/".join(segments))
        else:
            denied = self._check_auth(request, route, segments)
        if denied is not None:
            return denied
        failure = self._take_fail(route)
        if failure is not None:
            status, retry_after = failure
            record.fault = "fail"
            resp = _error(status, f"injected {status}")
            if retry_after is not None:
                resp.headers["Retry-After"] = f"{retry_after:g}"
            return resp
        if route == "plain":
            with self._lock:
                f = self._plain["/".join(segments)].file
            headers = {"ETag": f'"{f.sha256}"', "Accept-Ranges": "bytes"}
            return await self._serve_bytes(request, record, f, headers)
        if route == "cdn":
            return await self._cdn(request, record, segments[1] if len(segments) > 1 else "")
        if route == "resolve":
            return await self._resolve(request, record, segments)
        if route == "api":
            return self._api(request, segments)
        return _error(404, "Not found")

    def _check_auth(
        self, request: web.Request, route: str, segments: list[str]
    ) -> web.Response | None:
        token = self._token
        if token is None:
            return None
        given = request.headers.get("Authorization")
        if given is not None and hmac.compare_digest(given, f"Bearer {token}"):
            return None
        if route == "cdn" and len(segments) > 1:
            try:
                expires = int(request.query.get("expires", ""))
            except ValueError:
                expires = 0
            sig = request.query.get("sig", "")
            if expires >= time.time() and hmac.compare_digest(
                sig, self._sign(segments[1], expires)
            ):
                return None
        if given is None:
            # What huggingface.co answers anonymous requests for a private repo.
            return _error(401, "Invalid username or password.", code="RepoNotFound")
        return _error(401, "Invalid credentials in Authorization header")

    # ── /{path} of a plain file ──

    def _check_plain_auth(self, request: web.Request, path: str) -> web.Response | None:
        with self._lock:
            plain = self._plain[path]
        given = request.headers.get("Authorization", "")
        if plain.authorization is not None and not hmac.compare_digest(given, plain.authorization):
            resp = _error(401, "Basic credentials required")
            resp.headers["WWW-Authenticate"] = 'Basic realm="test"'
            return resp
        token = request.query.get("token", "")
        if plain.token is not None and not hmac.compare_digest(token, plain.token):
            return _error(403, "token missing or wrong")
        return None

    # ── /{repo}/resolve/{revision}/{path} ──

    async def _resolve(
        self, request: web.Request, record: RequestRecord, segments: list[str]
    ) -> web.StreamResponse:
        k = segments.index("resolve")
        repo, revision, path = "/".join(segments[:k]), segments[k + 1], "/".join(segments[k + 2 :])
        try:
            commit, files = self._lookup(repo, revision)
        except KeyError as exc:
            return _not_found(str(exc.args[0]), repo, revision)
        f = files.get(path)
        if f is None:
            return _error(404, "Entry not found", code="EntryNotFound", commit=commit)
        headers = {
            "X-Repo-Commit": commit,
            "ETag": f'"{f.oid}"',
            "Accept-Ranges": "bytes",
        }
        if f.lfs:
            location = self._cdn_url_for(f, commit)
            headers |= {
                "X-Linked-Etag": f'"{f.sha256}"',
                "X-Linked-Size": str(f.size),
                "Location": location,
            }
            return web.Response(
                status=302, headers=headers, text=f"Found. Redirecting to {location}"
            )
        return await self._serve_bytes(request, record, f, headers)

    # ── /cdn/{sha256} ──

    async def _cdn(
        self, request: web.Request, record: RequestRecord, sha256: str
    ) -> web.StreamResponse:
        with self._lock:
            f = self._blobs.get(sha256)
        if f is None:
            return _error(404, "Not found (no such blob)")
        name = request.query.get("filename") or f.path.rsplit("/", 1)[-1]
        headers = {
            "ETag": f'"{f.sha256}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": (
                f"inline; filename*=UTF-8''{quote(name)}; filename=\"{name}\";"
            ),
        }
        if self.cdn_same_origin:
            headers |= {"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(f.size)}
            if "commit" in request.query:
                headers["X-Repo-Commit"] = request.query["commit"]
        return await self._serve_bytes(request, record, f, headers)

    async def _serve_bytes(
        self,
        request: web.Request,
        record: RequestRecord,
        f: HubFile,
        headers: dict[str, str],
    ) -> web.StreamResponse:
        size = f.size
        start, end, status = 0, size, 200
        range_header = request.headers.get("Range")
        if_range = request.headers.get("If-Range")
        if range_header and (if_range is None or if_range == headers["ETag"]):
            parsed = _parse_range(range_header, size)
            if parsed == _UNSATISFIABLE:
                headers["Content-Range"] = f"bytes */{size}"
                return web.Response(status=416, headers=headers)
            if parsed is not None:
                start, end = parsed
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = end - start
        record.status = status
        if request.method == "HEAD":
            await resp.prepare(request)
            return resp
        drop, corrupt = self._take_body_faults()
        if corrupt:
            record.fault = "corrupt"
        if drop is not None:
            record.fault = "drop"
        await resp.prepare(request)
        t0 = time.monotonic()
        try:
            for chunk in self._body_chunks(f, start, end, drop):
                data = chunk.translate(_INVERT) if corrupt else chunk
                if self._stopping:
                    raise ConnectionAbortedError("the hub is stopping")
                await resp.write(data)
                record.sent += len(data)
                rate = self._faults.throttle
                if rate:
                    delay = t0 + record.sent / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
        except ConnectionError:
            # the client went away (say, a killed hive), or the hub stops
            record.aborted = True
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError from None  # end quietly, without an error log
        except asyncio.CancelledError:
            record.aborted = True
            raise
        if drop is not None:
            record.aborted = True
            transport = request.transport
            if transport is not None:
                transport.close()  # flushes what was written, then FIN: a short body
            raise asyncio.CancelledError
        await resp.write_eof()
        return resp

    def _body_chunks(self, f: HubFile, start: int, end: int, drop: int | None) -> Iterator[bytes]:
        if drop is not None:
            end = min(end, start + drop)
        step = self.chunk_size
        rate = self._faults.throttle
        if rate:
            step = max(1, min(step, int(rate / 50)))
        return f.content.chunks(start, end, step)

    # ── /api/models/... ──

    def _api(self, request: web.Request, segments: list[str]) -> web.Response:
        # segments: api, models, <repo 1-2 parts>, [revision|tree, rev, path...]
        rest = segments[2:]
        if len(rest) >= 3 and rest[2] in ("revision", "tree"):
            repo, rest = "/".join(rest[:2]), rest[2:]
        elif len(rest) >= 2 and rest[1] in ("revision", "tree"):
            repo, rest = rest[0], rest[1:]
        else:
            repo, rest = "/".join(rest), []
        if len(segments) < 3 or segments[1] != "models" or (rest and len(rest) < 2):
            return _error(404, "Not found")
        kind, revision = (rest[0], rest[1]) if rest else ("revision", "main")
        try:
            commit, files = self._lookup(repo, revision)
        except KeyError as exc:
            return _not_found(str(exc.args[0]), repo, revision)
        if kind == "revision":
            return self._model_info(request, repo, commit, files)
        return self._tree(request, repo, revision, commit, files, "/".join(rest[2:]))

    def _model_info(
        self, request: web.Request, repo: str, commit: str, files: dict[str, HubFile]
    ) -> web.Response:
        blobs = request.query.get("blobs", "").lower() in ("1", "true")
        siblings: list[dict[str, Any]] = []
        for p, f in sorted(files.items()):
            s: dict[str, Any] = {"rfilename": p}
            if blobs:
                s |= {"size": f.size, "blobId": f.oid}
                if f.lfs:
                    s["lfs"] = {"size": f.size, "sha256": f.sha256, "pointerSize": f.pointer_size}
            siblings.append(s)
        body = {
            "_id": hashlib.sha1(repo.encode()).hexdigest()[:24],
            "id": repo,
            "modelId": repo,
            "author": repo.split("/")[0] if "/" in repo else None,
            "sha": commit,
            "private": self._token is not None,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": ["gguf"] if any(p.endswith(".gguf") for p in files) else [],
            "library_name": None,
            "siblings": siblings,
            "lastModified": "2024-01-01T00:00:00.000Z",
            "createdAt": "2024-01-01T00:00:00.000Z",
        }
        return web.json_response(body, headers={"X-Repo-Commit": commit})

    def _tree(
        self,
        request: web.Request,
        repo: str,
        revision: str,
        commit: str,
        files: dict[str, HubFile],
        base: str,
    ) -> web.Response:
        recursive = request.query.get("recursive", "").lower() in ("1", "true")
        base = base.strip("/")
        prefix = f"{base}/" if base else ""
        dirs: set[str] = set()
        entries: dict[str, dict[str, Any]] = {}
        for p, f in files.items():
            if not p.startswith(prefix):
                continue
            parts = p[len(prefix) :].split("/")
            for i in range(1, len(parts)):
                d = prefix + "/".join(parts[:i])
                if recursive or i == 1:
                    dirs.add(d)
            if recursive or len(parts) == 1:
                entry: dict[str, Any] = {"type": "file", "oid": f.oid, "size": f.size, "path": p}
                if f.lfs:
                    entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
                entries[p] = entry
        if base and not entries and not dirs:
            return _error(404, f"Entry not found: {base}", code="EntryNotFound", commit=commit)
        for d in dirs:
            oid = hashlib.sha1(f"{commit}:{d}".encode()).hexdigest()
            entries[d] = {"type": "directory", "oid": oid, "size": 0, "path": d}
        listing = [entries[k] for k in sorted(entries)]
        try:
            cursor = int(request.query.get("cursor", "0"))
        except ValueError:
            return _error(400, "Invalid cursor")
        page = listing[cursor : cursor + self.tree_page_size]
        headers = {"X-Repo-Commit": commit}
        if cursor + self.tree_page_size < len(listing):
            query = {k: v for k, v in request.query.items() if k != "cursor"}
            query["cursor"] = str(cursor + self.tree_page_size)
            next_url = f"{request.scheme}://{request.host}{request.path}?{urlencode(query)}"
            headers["Link"] = f'<{next_url}>; rel="next"'
        return web.json_response(page, headers=headers)


def _bound_port(site: web.TCPSite) -> int:
    server = site._server
    assert isinstance(server, asyncio.base_events.Server)
    return int(server.sockets[0].getsockname()[1])


def _route_of(segments: list[str]) -> str:
    if segments and segments[0] == "cdn":
        return "cdn"
    if segments and segments[0] == "api":
        return "api"
    if "resolve" in segments[1:3] and len(segments) > segments.index("resolve") + 2:
        return "resolve"
    return "other"


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """[start, end) of a single ``bytes=`` range; `_UNSATISFIABLE`; None to ignore it."""
    m = _RANGE_RE.match(header.strip())
    if m is None:
        return None  # not a single byte range: serve the whole file, as servers may
    first, last = m.group(1), m.group(2)
    if not first:
        if not last:
            return None
        n = int(last)
        if n == 0 or size == 0:
            return _UNSATISFIABLE
        return max(0, size - n), size
    start = int(first)
    end = min(size, int(last) + 1) if last else size
    if last and int(last) < start:
        return None
    if start >= size:
        return _UNSATISFIABLE
    return start, end


def _error(
    status: int, message: str, *, code: str | None = None, commit: str | None = None
) -> web.Response:
    headers = {"X-Error-Message": message}
    if code is not None:
        headers["X-Error-Code"] = code
    if commit is not None:
        headers["X-Repo-Commit"] = commit
    return web.Response(
        status=status,
        headers=headers,
        text=json.dumps({"error": message}),
        content_type="application/json",
    )


def _not_found(what: str, repo: str, revision: str) -> web.Response:
    if what == "repo":
        return _error(404, "Repository not found", code="RepoNotFound")
    return _error(404, f"Invalid rev id: {revision}", code="RevisionNotFound")


class Hub(_HubCore):
    """The hub on the running event loop: ``async with Hub() as hub: ...``."""

    async def start(self) -> Self:
        await self._start_server()
        return self

    async def stop(self) -> None:
        await self._stop_server()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class ThreadedHub(_HubCore):
    """The hub on its own event loop in a daemon thread, for sync tests:
    ``with ThreadedHub() as hub: ...`` or ``hub.start()`` / ``hub.stop()``."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        cdn_same_origin: bool = False,
        chunk_size: int = CHUNK_SIZE,
        tree_page_size: int = TREE_PAGE_SIZE,
    ) -> None:
        super().__init__(
            host=host,
            cdn_same_origin=cdn_same_origin,
            chunk_size=chunk_size,
            tree_page_size=tree_page_size,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> Self:
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="test-hub", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        asyncio.run_coroutine_threadsafe(self._start_server(), loop).result(timeout)
        return self

    @property
    def thread_id(self) -> int:
        """The native id of the hub's thread (to read its CPU time)."""
        assert self._thread is not None and self._thread.native_id is not None
        return self._thread.native_id

    def stop(self, timeout: float = 10.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._stop_server(), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# ─── huggingface_hub against the hub ────────────────────────────────────────────────────


def hf_env(hub: _HubCore, home: Path | None = None) -> dict[str, str]:
    """Environment for a process (e.g. `hive serve`) that should use `huggingface_hub`
    against `hub` and nothing else: endpoint, no telemetry, not offline, no proxies, and a
    private ``HF_HOME`` (so no token or cache of the user's leaks in) when `home` is given."""
    env = {
        "HF_ENDPOINT": hub.url,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_OFFLINE": "0",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    if home is not None:
        env |= {"HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub")}
    return env


_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def use_hub_in_process(monkeypatch: Any, hub: _HubCore, home: Path) -> None:
    """Point this process's `huggingface_hub` at `hub` for one test (pytest `monkeypatch`).

    `huggingface_hub` reads ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_HOME`` and friends once,
    at import, into `huggingface_hub.constants`; the env vars are set too, for code that
    reads them later or starts subprocesses. Its shared httpx2 client is closed so the next
    one is made without proxies. Tokens are read per call (``HF_TOKEN``, then the token
    file under ``HF_HOME``), so neither is set here."""
    from huggingface_hub import constants
    from huggingface_hub.utils._http import close_session

    for k, v in hf_env(hub, home).items():
        monkeypatch.setenv(k, v)
    for k in (*_PROXY_VARS, "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(
        constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        hub.url + "/{repo_id}/resolve/{revision}/{filename}",
    )
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    close_session()
    os.makedirs(home, exist_ok=True)


@contextlib.asynccontextmanager
async def sizeless_server(body: bytes) -> AsyncIterator[str]:
    """A plain server on loopback that never says the size of `body`: no HEAD (405), the
    bytes chunked without Content-Length, a range answered 206 with ``Content-Range:
    bytes N-M/*`` (416 past the end). Yields the file's URL."""

    async def get(request: web.Request) -> web.StreamResponse:
        if request.method == "HEAD":
            raise web.HTTPMethodNotAllowed("HEAD", ["GET"])
        start = 0
        if (rng := request.headers.get("Range")) is not None:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            if start >= len(body):
                raise web.HTTPRequestRangeNotSatisfiable(
                    headers={"Content-Range": f"bytes */{len(body)}"}
                )
        response = web.StreamResponse(status=206 if start else 200)
        if start:  # the range, but not the size ("*")
            response.headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/*"
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for i in range(start, len(body), 256 * 1024):
                await response.write(body[i : i + 256 * 1024])
            await response.write_eof()
        except ConnectionError:  # the client stopped reading (its disk is full, say)
            raise asyncio.CancelledError from None
        return response

    app = web.Application()
    app.router.add_route("*", "/m.gguf", get)
    async with serving(app) as base:
        yield f"{base}/m.gguf"


@contextlib.asynccontextmanager
async def serving(app: web.Application, *, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """`app` served on a free 127.0.0.1 port until the block ends; yields its base URL
    (`http://127.0.0.1:<port>`, https with `tls`)."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
        await site.start()
        yield f"{'https' if tls else 'http'}://127.0.0.1:{_bound_port(site)}"
    finally:
        await runner.cleanup()
