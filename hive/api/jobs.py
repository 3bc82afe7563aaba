"""The job API: `POST /v1/jobs` (rbee's operation JSON → `{"job_id", "sse_url"}`), `GET
/v1/jobs/{id}/stream` (the job's lines as SSE, then `[DONE]`, `[ERROR] <reason>` or
`[CANCELLED]`) and `DELETE /v1/jobs/{id}` (cancel).

A job runs from its POST, whether or not a stream is open. A stream replays the job from
its first line (a job keeps its own bounded list of lines), so one opened late misses
nothing, and any number of streams may follow one job, each from the start.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry

from hive.api.responses import json_response as _json
from hive.errors import NotFound
from hive.jobs.job import Job, Outcome
from hive.jobs.service import JobCollector, JobService
from hive.model.text import show
from hive.narration.sse import NextFrames, stream_frames
from hive.runtime.manager import Manager

JOBS = web.AppKey("jobs", JobService)


async def create_job(request: web.Request) -> web.Response:
    service = request.app[JOBS]
    job = await service.submit(
        await request.read(), correlation_id=request.headers.get("X-Correlation-Id")
    )
    return _json({"job_id": job.id, "sse_url": f"/v1/jobs/{job.id}/stream"})


def _job(request: web.Request) -> Job:
    job_id = request.match_info["job_id"]
    job = request.app[JOBS].registry.get(job_id)
    if job is None:
        raise NotFound(
            f"no job {show(job_id, 80)}: it never existed or ended more than the retention "
            "ago (HIVE_JOB_RETENTION)"
        )
    return job


def job_frames(job: Job) -> NextFrames:
    """A job's lines from its first, each as it comes, then its end marker (`[DONE]`,
    `[ERROR] <reason>` or `[CANCELLED]`) with the last of them."""
    cursor, over = 0, False

    async def next_frames(within: float) -> bytes | None:
        nonlocal cursor, over
        if over:
            return None
        while True:
            frames, cursor = job.read(cursor)
            if job.outcome is not None and cursor >= job.end:
                over = True
                return b"".join(frames) + job.marker()
            if frames:
                return b"".join(frames)
            if not await job.wait(cursor, within=within):
                return b""

    return next_frames


async def stream_job(request: web.Request) -> web.StreamResponse:
    job = _job(request)
    keepalive = request.app[JOBS].manager.settings.sse_keepalive
    return await stream_frames(request, job_frames(job), keepalive=keepalive)


async def cancel_job(request: web.Request) -> web.Response:
    job = _job(request)
    if job.outcome is None:
        await request.app[JOBS].registry.cancel(job)
    if job.outcome is not Outcome.CANCELLED:  # rbee answers 404 too: already completed/failed
        assert job.outcome is not None
        raise NotFound(
            f"job {job.id} had already ended ({job.outcome.value}): nothing to cancel (its "
            "stream still tells how it ended)"
        )
    return _json({"job_id": job.id, "status": "cancelled"})


def add_routes(app: web.Application, manager: Manager, *, metrics: CollectorRegistry) -> None:
    """The job routes, the job service, its metrics, and its stop (running jobs end with
    `[CANCELLED]` when hive stops; what they wrote stays)."""
    service = JobService(manager)
    app[JOBS] = service
    metrics.register(JobCollector(service))

    async def end_jobs(app: web.Application) -> None:
        await service.registry.stop()

    app.on_shutdown.append(end_jobs)
    app.router.add_post("/v1/jobs", create_job)
    app.router.add_get("/v1/jobs/{job_id}/stream", stream_job)
    app.router.add_delete("/v1/jobs/{job_id}", cancel_job)
