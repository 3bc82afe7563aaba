"""The web dashboard's static files (hive/dashboard/: HTML, CSS, JavaScript modules), served
at `/` and `/ui/{path}`. They hold no data, so they are open without the token (guard.py);
the page then calls the API like any client, with the token the user types in.

The files are read once, when the app is built, and served from memory with their content
type, an `ETag` and `Cache-Control: no-cache` (the browser revalidates, so an upgraded hive
is seen at once), and a Content-Security-Policy that lets the page load only its own files.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from aiohttp import web

from hive.errors import NotFound
from hive.model.text import show_text

#: The folder of the dashboard's files inside the hive package.
PACKAGE_DIR = "dashboard"
#: The paths served without the token (GET and HEAD only: guard.py).
PUBLIC_ROUTES = frozenset({"/", "/ui/{path}"})
#: Content types by file suffix; a file of another suffix is not served.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
}
#: The page may load and call only its own origin; no inline script, no frames.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)


@dataclass(frozen=True)
class Asset:
    """One file of the dashboard, as served."""

    body: bytes
    content_type: str
    etag: str


def load_assets(root: Traversable | None = None) -> dict[str, Asset]:
    """Every servable file under `root` (hive/dashboard/ by default), by its path relative
    to it (`index.html`, `js/app.js`)."""
    base = root if root is not None else resources.files("hive") / PACKAGE_DIR
    found: dict[str, Asset] = {}

    def walk(node: Traversable, prefix: str) -> None:
        for child in node.iterdir():
            rel = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, rel + "/")
                continue
            suffix = "." + child.name.rpartition(".")[2]
            if suffix not in CONTENT_TYPES:
                continue
            body = child.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            found[rel] = Asset(body=body, content_type=CONTENT_TYPES[suffix], etag=etag)

    if base.is_dir():
        walk(base, "")
    return found


def _answer(request: web.Request, asset: Asset) -> web.Response:
    headers = {
        "ETag": asset.etag,
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    if asset.content_type.startswith("text/html"):
        headers["Content-Security-Policy"] = CSP
        headers["X-Frame-Options"] = "DENY"
    if asset.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = asset.content_type
    return web.Response(body=asset.body, headers=headers)


def add_routes(app: web.Application) -> None:
    """`GET /` (the page) and `GET /ui/{path}` (its scripts and styles)."""
    assets = load_assets()

    async def index(request: web.Request) -> web.Response:
        asset = assets.get("index.html")
        if asset is None:
            raise NotFound("this hive was installed without its dashboard (hive/dashboard/)")
        return _answer(request, asset)

    async def static(request: web.Request) -> web.Response:
        path = request.match_info["path"]
        asset = assets.get(path)
        if asset is None:
            raise NotFound(f"/ui/{show_text(path, 200)} is not a file of the dashboard")
        return _answer(request, asset)

    app.router.add_get("/", index)
    app.router.add_get("/ui/{path:.+}", static)
