"""Every request's way in, before its route (hive/api/app.py installs it with `guard`): the
one place where errors become JSON answers (never a traceback), CORS for the origins hive
was told to trust, the refusal of what a web page on another site asks to change, the
bearer token, the body limit and the media types of request bodies.

With a token, every route needs it, reads included (logs and events can hold prompts):
deny by default, `/health`, `POST /v1/hooks/{name}` (signed by the git host instead) and
GET/HEAD of the dashboard's static files (`/`, `/ui/...`: no data in them) the paths open
to all, so a route added later is guarded
without a word. A CORS preflight from a trusted origin is answered without it (a
browser sends none).
"""

from __future__ import annotations

import hmac
import logging
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from hive.api.responses import error_response
from hive.errors import HiveError, ValidationFailed
from hive.model.text import clip, show_text, show_url

log = logging.getLogger(__name__)

#: The largest request body hive reads (a desired set, a job): 1 MiB.
MAX_BODY = 1024 * 1024
#: The routes open without the token: liveness, and a git host's push notifications
#: (authenticated by their HMAC signature instead: hive/api/sources.py).
OPEN_ROUTES = frozenset({"/health", "/v1/hooks/{name}"})
#: The dashboard's static files (hive/api/dashboard.py), open to GET and HEAD: they hold no
#: data; the page asks for the token when the API answers 401.
PUBLIC_FILES = frozenset({"/", "/ui/{path}"})
#: The path of the open `/v1/hooks/{name}` (a method it does not serve gets its 405).
HOOKS_PREFIX = "/v1/hooks/"
#: What a cross-origin request may send (a preflight lists them).
CORS_HEADERS = "Authorization, Content-Type, Last-Event-ID"
#: Seconds a browser may cache a preflight's answer.
CORS_MAX_AGE = 600

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The stream a handler already started (its headers are sent): an error after that ends
#: it, as no other answer can be sent.
_PREPARED = web.RequestKey("hive_prepared", web.StreamResponse)


def guard(app: web.Application, *, token: str | None, cors_origins: tuple[str, ...]) -> None:
    """Install the middlewares (outermost first: errors, CORS preflight, cross-site requests,
    token, body limit, media types)
    and the hook that adds CORS headers to every answer, streams included."""
    app.middlewares.extend(
        [
            errors_middleware,
            cors_preflight(cors_origins),
            cross_site(cors_origins),
            bearer_token(token),
            body_limit,
            media_types,
        ]
    )
    app.on_response_prepare.append(_remember_prepared)
    if cors_origins:
        app.on_response_prepare.append(cors_headers(cors_origins))


def _where(request: web.Request) -> str:
    """`METHOD /path` as an error quotes it: bounded, a signed query value redacted."""
    return f"{clip(request.method, 20)} {show_url(request.path)}"


# -- errors -------------------------------------------------------------------------------
async def _remember_prepared(request: web.Request, response: web.StreamResponse) -> None:
    request[_PREPARED] = response


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place where errors become HTTP answers: a HiveError as its status and reason,
    aiohttp's 4xx (404, 405 with `Allow`, 413) as JSON, and anything else (a bug) as a 500
    `InternalError` with a reference; the traceback goes to hive's log only."""
    try:
        return await handler(request)
    except HiveError as exc:
        extra = {"problems": exc.problems} if isinstance(exc, ValidationFailed) else {}
        return error_response(exc.http_status, exc.reason, exc.message, **extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 413:
            return too_large(request)
        response = error_response(
            exc.status, exc.reason.replace(" ", ""), f"{_where(request)}: {exc.reason}"
        )
        if "Allow" in exc.headers:  # a 405 names the methods the route serves (RFC 9110)
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except ConnectionResetError:
        raise  # the client went away mid-stream: nobody to answer, nothing to log
    except Exception as exc:
        reference = uuid.uuid4().hex[:12]
        log.error("%s failed (reference %s)", _where(request), reference, exc_info=exc)
        started: web.StreamResponse | None = request.get(_PREPARED)
        if started is not None:
            return started  # a stream already under way ends here
        return error_response(
            500,
            "InternalError",
            f"{_where(request)} failed inside hive (a bug): reference {reference}; "
            "hive's log has the details under that reference",
            reference=reference,
        )


def too_large(request: web.Request) -> web.Response:
    return error_response(
        413,
        "ContentTooLarge",
        f"{_where(request)}: the body is over {MAX_BODY} bytes (1 MiB), the most hive "
        "reads; send less (split a large desired set into several sources)",
        limit=MAX_BODY,
    )


# -- the body limit -----------------------------------------------------------------------
@web.middleware
async def body_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A body over MAX_BODY is refused (413) before any route sees it: at once when its
    Content-Length says so, else (chunked) once MAX_BODY + 1 bytes came. A body within the
    limit is read here; the route's `read()`/`json()` get it from the request."""
    if request.body_exists:
        length = request.content_length
        if length is not None and length > MAX_BODY:
            return too_large(request)
        await request.read()  # raises HTTPRequestEntityTooLarge past client_max_size
    return await handler(request)


# -- the token ----------------------------------------------------------------------------
def is_open(request: web.Request) -> bool:
    """Whether the request is to a route open to all (`/health`, `/v1/hooks/{name}`); a
    method a route does not serve gets its 405 (nothing there is secret)."""
    match = request.match_info
    exc = match.http_exception
    if exc is not None and not isinstance(exc, web.HTTPMethodNotAllowed):
        return False  # no such path: a 404 only a token holder may see
    if exc is None:
        resource = match.route.resource
        return resource is not None and resource.canonical in OPEN_ROUTES
    hook, _, name = request.path.partition(HOOKS_PREFIX)
    return request.path in OPEN_ROUTES or (not hook and bool(name) and "/" not in name)


def is_public_file(request: web.Request) -> bool:
    """Whether the request GETs (or HEADs) one of the dashboard's files (PUBLIC_FILES); as
    for `/health`, a method those paths do not serve gets its 405 (nothing there is
    secret, and no handler runs)."""
    exc = request.match_info.http_exception
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return request.path == "/" or request.path.startswith("/ui/")
    if request.method not in ("GET", "HEAD") or exc is not None:
        return False
    resource = request.match_info.route.resource
    return resource is not None and resource.canonical in PUBLIC_FILES


def bearer_token(token: str | None) -> Middleware:
    """With a token, every request but those to OPEN_ROUTES carries
    `Authorization: Bearer <token>` (compared in constant time) or gets a 401 that says
    what to send, without echoing what came. Unknown routes too: a 404 would tell a
    stranger which routes exist."""
    expected = token.encode() if token else b""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not token or is_open(request) or is_public_file(request):
            return await handler(request)
        given = request.headers.get("Authorization")
        scheme, _, credentials = (given or "").strip().partition(" ")
        sent = credentials.strip().encode("utf-8", "surrogateescape")
        if scheme.lower() == "bearer" and hmac.compare_digest(sent, expected):
            return await handler(request)
        why = (
            "no Authorization header was sent"
            if given is None
            else "the Authorization header does not hold this hive's token"
        )
        response = error_response(
            401,
            "Unauthorized",
            f"{_where(request)} needs `Authorization: Bearer <token>` with the token hive "
            f"was started with (--token / HIVE_TOKEN): {why}; the hive CLI sends it with "
            "--token or HIVE_TOKEN",
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="hive"'
        return response

    return check


# -- CORS ---------------------------------------------------------------------------------
def cors_preflight(origins: tuple[str, ...]) -> Middleware:
    """A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from a
    trusted origin to a route that exists is answered 204 with what the route allows,
    before the token is asked for. Anything else goes on (an untrusted origin gets what a
    plain OPTIONS gets: 401 or 405, and no CORS header)."""
    trusted = frozenset(origins)

    @web.middleware
    async def preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if (
            request.method != "OPTIONS"
            or origin not in trusted
            or "Access-Control-Request-Method" not in request.headers
        ):
            return await handler(request)
        methods = _methods_of(request)
        if not methods:
            return await handler(request)  # no such route: its 404 (or 401)
        assert origin is not None
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": ", ".join(sorted(methods)),
                "Access-Control-Allow-Headers": CORS_HEADERS,
                "Access-Control-Max-Age": str(CORS_MAX_AGE),
                "Vary": "Origin",
            },
        )

    return preflight


def _methods_of(request: web.Request) -> set[str]:
    """The methods the request's path serves (none when no route has that path)."""
    exc = request.match_info.http_exception
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return set(exc.allowed_methods)
    if exc is None:
        route = request.match_info.route
        return {route.method} if route.resource is not None else set()
    return set()


def cors_headers(origins: tuple[str, ...]) -> Callable[..., Awaitable[None]]:
    """`on_response_prepare`: a trusted origin's answers (errors and streams too) carry
    `Access-Control-Allow-Origin: <that origin>`; every answer carries `Vary: Origin`, as
    it depends on it."""
    trusted = frozenset(origins)

    async def add(request: web.Request, response: web.StreamResponse) -> None:
        vary = response.headers.get("Vary", "")
        if "origin" not in vary.lower():
            response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"
        origin = request.headers.get("Origin")
        if origin in trusted and "Access-Control-Allow-Origin" not in response.headers:
            assert origin is not None
            response.headers["Access-Control-Allow-Origin"] = origin

    return add


# -- cross-site requests ------------------------------------------------------------------
#: Methods that change nothing (a request with one of them is not refused for its origin).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: The GET routes whose `?queen_url=` changes where hive reports (the Queen's discovery).
DISCOVERY_ROUTES = frozenset({"/capabilities", "/v1/capabilities"})


def changes_state(request: web.Request) -> bool:
    """Whether the request asks hive to change something: any method but GET, HEAD and
    OPTIONS, and a discovery (`GET /capabilities?queen_url=`)."""
    if request.method not in SAFE_METHODS:
        return True
    return request.path in DISCOVERY_ROUTES and "queen_url" in request.query


def cross_site(origins: tuple[str, ...]) -> Middleware:
    """A request that changes state and comes from a web page of another site (its
    `Origin` is neither hive's own nor one of `--cors-origin`, or, without an `Origin`, the
    browser's `Sec-Fetch-Site` says `cross-site` or `same-site`) is refused with 403: with no
    token set, any page the user opens could otherwise download models, start workers or
    redirect the heartbeats. Clients that are not browsers (curl, the hive CLI, rbee's
    Queen) send neither header and pass."""
    trusted = frozenset(origins)

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not changes_state(request):
            return await handler(request)
        origin = request.headers.get("Origin")
        if origin is not None:
            own = f"{request.scheme}://{request.host}"
            if origin in trusted or origin == own:
                return await handler(request)
            why = f"its Origin {show_text(origin, 200)} is not one hive trusts"
        else:
            site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
            if site not in ("cross-site", "same-site"):
                return await handler(request)
            why = f"the browser says it comes from another site (Sec-Fetch-Site: {site})"
        return error_response(
            403,
            "CrossSiteRequest",
            f"{_where(request)} changes hive's state and {why}: a web page cannot drive "
            "hive. To let a web UI you trust do it, start hive with --cors-origin <its "
            "origin> (HIVE_CORS_ORIGINS); curl and the hive CLI send no Origin and are not "
            "affected",
        )

    return check


# -- media types --------------------------------------------------------------------------
#: What a job's body must be: rbee's operation JSON.
JSON_TYPES = ("application/json",)
#: What a desired set may be sent as.
MANIFEST_TYPES = (
    "application/yaml",
    "application/json",
    "application/x-yaml",
    "text/yaml",
    "text/x-yaml",
)


def _needed_types(request: web.Request) -> tuple[str, ...] | None:
    """The media types the request's body must have (None: any, or no body read)."""
    route = request.match_info.route.resource
    canonical = route.canonical if route is not None else ""
    if canonical == "/v1/jobs" and request.method == "POST":
        return JSON_TYPES
    if canonical == "/v1/desired/{source}" and request.method in ("PUT", "PATCH"):
        return MANIFEST_TYPES
    return None


@web.middleware
async def media_types(request: web.Request, handler: Handler) -> web.StreamResponse:
    """`POST /v1/jobs` takes `application/json`, `PUT`/`PATCH /v1/desired/{source}` JSON or
    YAML (`application/json`, `application/yaml`, …; a `+json` type too): anything else is a
    415 saying what to send. (A web page can send `text/plain` or a form without asking the
    browser's leave first; it cannot send these.)"""
    needed = _needed_types(request)
    if needed is None:
        return await handler(request)
    given = request.content_type if "Content-Type" in request.headers else ""
    if given in needed or (given.startswith("application/") and given.endswith("+json")):
        return await handler(request)
    sent = f"Content-Type {show_text(given, 100)}" if given else "no Content-Type"
    return error_response(
        415,
        "UnsupportedMediaType",
        f"{_where(request)} takes {', '.join(needed)} (or a +json type), and {sent} was "
        f"sent: say what the body is (curl: -H 'Content-Type: {needed[0]}')",
        accepted=list(needed),
    )
