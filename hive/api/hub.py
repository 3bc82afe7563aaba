"""`GET /v1/hub/files?repo=org/name`: a Hugging Face repository's GGUF files with their
sizes and quantization tags, for the download form (hive/observers/hub_files.py), asked of
the hub in threads of their own, under a time limit, with few listings at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from hive.api.responses import json_response
from hive.errors import TooManyRequests
from hive.observers.hub_files import HubListing, HubUnreachable, list_gguf_files, parse_repo

#: Seconds a listing may take before the answer is a 502 (each request to the hub has 8 s,
#: and is tried twice; a big repository takes several pages).
HUB_TIMEOUT = 20.0
#: Threads listing at once; their own pool, so a slow hub never holds the threads other
#: routes read the disk in.
THREADS = 2
#: Listings running or waiting (one the timeout gave up on still runs to its end): more
#: are refused with a 429.
MAX_PENDING = 8


def add_routes(app: web.Application) -> None:
    pool_key = web.AppKey("hub_pool", ThreadPoolExecutor)
    pending: set[asyncio.Future[HubListing]] = set()

    async def pool(app: web.Application) -> AsyncIterator[None]:
        app[pool_key] = ThreadPoolExecutor(THREADS, thread_name_prefix="hub-files")
        yield
        app[pool_key].shutdown(wait=False, cancel_futures=True)

    async def hub_files(request: web.Request) -> web.Response:
        repo, revision = parse_repo(request.query.get("repo"), request.query.get("revision"))
        if len(pending) >= MAX_PENDING:
            raise TooManyRequests(
                f"{MAX_PENDING} hub listings are still running (the hub is slow or "
                "unreachable); try again in a minute"
            )
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(request.app[pool_key], list_gguf_files, repo, revision)
        pending.add(future)
        future.add_done_callback(pending.discard)
        try:
            async with asyncio.timeout(HUB_TIMEOUT):
                result = await asyncio.shield(future)
        except TimeoutError:
            raise HubUnreachable(
                f"{repo}@{revision}: the hub did not answer within {HUB_TIMEOUT:g}s; "
                "check HF_ENDPOINT and the network, and try again"
            ) from None
        return json_response(result.model_dump(mode="json"))

    app.cleanup_ctx.append(pool)
    app.router.add_get("/v1/hub/files", hub_files)
