"""Worker health and performance over HTTP: `/health` with a timeout, and the worker's
Prometheus text (llama.cpp's `/metrics`) read into `WorkerMetrics`."""

from __future__ import annotations

import asyncio
from datetime import datetime

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from hive.model.workers import WorkerMetrics

#: llama.cpp's metric samples → WorkerMetrics fields.
_LLAMACPP = {
    "llamacpp:prompt_tokens_total": "prompt_tokens",
    "llamacpp:tokens_predicted_total": "tokens_generated",
    "llamacpp:predicted_tokens_seconds": "avg_tokens_per_sec",
    "llamacpp:requests_processing": "busy_slots",
    "llamacpp:requests_deferred": "deferred_requests",
    "llamacpp:n_decode_total": "decode_calls",
}


async def probe(session: aiohttp.ClientSession, url: str, *, limit: float) -> str | None:
    """None when `url` answers 2xx within `limit` seconds; otherwise what went wrong."""
    try:
        async with session.get(
            url, timeout=aiohttp.ClientTimeout(total=limit), allow_redirects=False
        ) as response:
            await response.read()
            if 200 <= response.status < 300:
                return None
            return f"{url} answered {response.status}"
    except TimeoutError:
        return f"{url} did not answer within {limit:g}s"
    except (aiohttp.ClientError, OSError) as exc:
        return f"{url}: {type(exc).__name__}: {exc}" if str(exc) else f"{url}: {exc!r}"
    except asyncio.CancelledError:
        raise


def parse_metrics(text: str, *, now: datetime) -> WorkerMetrics:
    """The samples hive knows in a Prometheus text page; unknown ones are ignored, and a
    malformed page gives what was read before the bad line, never an exception."""
    values: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                field = _LLAMACPP.get(sample.name)
                if field is not None:
                    values[field] = float(sample.value)
    except ValueError:
        pass
    return WorkerMetrics(scraped_at=now, **values)


async def scrape(
    session: aiohttp.ClientSession, url: str, *, limit: float, now: datetime
) -> WorkerMetrics | None:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=limit)) as response:
            if response.status != 200:
                return None
            text = await response.text(errors="replace")
    except (TimeoutError, aiohttp.ClientError, OSError):
        return None
    return parse_metrics(text, now=now)
