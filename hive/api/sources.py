"""The routes of git sources: `POST /v1/sources/{name}/suspend|resume|sync` (bearer token,
as every route) and `POST /v1/hooks/{name}`, a git host's push notification, which the
guard lets through without the token (a git host cannot send it): it is authenticated by
its HMAC-SHA256 signature with the source's `--git-webhook-secret-file` instead. A push
to a ref the source does not follow (another branch) is answered 202 with the reason it
is `ignored`, and fetches nothing."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from hive.api.responses import error_response
from hive.api.responses import json_response as _json
from hive.errors import Conflict, NotFound
from hive.model.gitsource import SuspendAnswer
from hive.model.text import show
from hive.runtime.manager import Manager
from hive.sources.git import GitSource

#: The header GitHub, Gitea and Forgejo sign a delivery's body in.
SIGNATURE_HEADER = "X-Hub-Signature-256"
#: GitLab's webhooks send the secret itself (no signature): over TLS only.
GITLAB_TOKEN_HEADER = "X-Gitlab-Token"


def git_source(manager: Manager, name: str) -> GitSource:
    """The git source the store calls `name` (`git:fleet`); NotFound when no source has
    that name, Conflict when it is not a git source."""
    for source in manager.sources:
        if isinstance(source, GitSource) and source.name == name:
            return source
    known = sorted(s.name for s in manager.store.sources())
    if name in known:
        raise Conflict(
            f"source {show(name)} is not a git source: only git sources (--git) can be "
            "suspended, resumed or synced"
        )
    raise NotFound(
        f"no source is called {show(name)} (sources: {', '.join(known) or 'none'}; "
        "see GET /v1/status)"
    )


def pushed_ref(body: bytes) -> str | None:
    """The ref a push notification names (`{"ref": "refs/heads/main", ...}`, as GitHub,
    Gitea, Forgejo and GitLab send it), or None: a body that is not JSON, or names none."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return None
    ref = payload.get("ref") if isinstance(payload, dict) else None
    return ref if isinstance(ref, str) else None


def add_routes(app: web.Application, manager: Manager) -> None:
    """Register the routes of this module on `app`, serving `manager`."""

    async def suspend(request: web.Request) -> web.Response:
        source = git_source(manager, request.match_info["name"])
        source.suspend()
        return _json(SuspendAnswer(source=source.name, suspended=True).model_dump(mode="json"))

    async def resume(request: web.Request) -> web.Response:
        source = git_source(manager, request.match_info["name"])
        source.resume()
        return _json(SuspendAnswer(source=source.name, suspended=False).model_dump(mode="json"))

    async def sync(request: web.Request) -> web.Response:
        source = git_source(manager, request.match_info["name"])
        answer = await asyncio.shield(source.sync_now())
        return _json(answer.model_dump(mode="json"))

    async def hook(request: web.Request) -> web.Response:
        """Without a good signature nothing is done (and nothing says which sources exist
        or have a secret): 401."""
        name = f"git:{request.match_info['name']}"
        body = await request.read()  # bounded by the app's client_max_size (1 MiB)
        source = next(
            (s for s in manager.sources if isinstance(s, GitSource) and s.name == name), None
        )
        signature = request.headers.get(SIGNATURE_HEADER)
        token = request.headers.get(GITLAB_TOKEN_HEADER)
        if source is None or not (source.signed(body, signature) or source.token_matches(token)):
            why = (
                "neither X-Hub-Signature-256 nor X-Gitlab-Token was sent"
                if signature is None and token is None
                else "the signature (or GitLab's token) does not hold"
            )
            return error_response(
                401,
                "Unauthorized",
                f"POST /v1/hooks/{show(request.match_info['name'])}: {why} (sign the body "
                "with HMAC-SHA256 and the source's --git-webhook-secret-file, or send that "
                "secret as X-Gitlab-Token; the source must exist and have one)",
            )
        ignored = source.ignores_push(pushed_ref(body))
        if ignored is not None:
            answer = {"source": source.name, "accepted": False, "ignored": ignored}
            return _json(answer, status=202)
        source.notify()  # Conflict while suspended
        return _json({"source": source.name, "accepted": True}, status=202)

    app.router.add_post("/v1/sources/{name}/suspend", suspend)
    app.router.add_post("/v1/sources/{name}/resume", resume)
    app.router.add_post("/v1/sources/{name}/sync", sync)
    app.router.add_post("/v1/hooks/{name}", hook)
