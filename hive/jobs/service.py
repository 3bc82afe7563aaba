"""The job API's one entry: a request body becomes a running job (a read, or a checked
write), kept in the registry; and the jobs' counts by operation and outcome for
`/metrics`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hive.jobs.follow import Moved
from hive.jobs.job import Job, JobRegistry, Outcome, Runner
from hive.jobs.operations import HiveCheck, Operation, parse_operation
from hive.jobs.reads import READS
from hive.jobs.writes import WriteJob
from hive.model.text import clip, redact_text, show
from hive.runtime.manager import Manager

#: The names of this hive a job sends that need no word (rbee-keeper's default).
LOCAL_ALIASES = frozenset({"localhost", "127.0.0.1"})


class JobService:
    def __init__(self, manager: Manager) -> None:
        settings = manager.settings
        self.manager = manager
        #: Ended jobs by (operation as sent, outcome).
        self.ended: Counter[tuple[str, str]] = Counter()
        self.registry = JobRegistry(
            clock=manager.clock,
            retention=settings.job_retention,
            max_finished=settings.jobs_kept,
            max_running=settings.jobs_running_max,
            max_events=settings.job_events_max,
            on_end=self._ended,
        )
        self._writes = WriteJob(manager, Moved(manager.statuses))

    def _ended(self, job: Job) -> None:
        self.ended[(job.operation, (job.outcome or Outcome.CANCELLED).value)] += 1

    def _named(self, op: Operation) -> str | None:
        """What the job's first line says when the request names this hive otherwise than
        by its own id or `localhost` (rbee's Queen sends its own alias for a hive; rbee's
        hive narrates `hive_id` and never refuses it)."""
        mine = self.manager.settings.hive_id
        names = [op.hive_id, *([op.alias] if isinstance(op, HiveCheck) else [])]
        other = [n for n in dict.fromkeys(names) if n != mine and n not in LOCAL_ALIASES]
        if not other:
            return None
        return (
            f"📛 The request names this hive {', '.join(show(n, 80) for n in other)}; this "
            f"hive is {mine!r} (any name is taken as this hive, as rbee's hive takes it)"
        )

    async def submit(self, body: bytes, *, correlation_id: str | None = None) -> Job:
        """Parse, check and start a job; 400/404/409/429 as HiveErrors, nothing written."""
        op = parse_operation(body)
        named = self._named(op)
        read = READS.get(type(op))
        work: Runner
        if read is not None:
            manager = self.manager

            async def work(job: Job) -> None:
                await read(manager, job, op)

        else:
            work = await self._writes.prepare(op)  # type: ignore[arg-type]

        async def runner(job: Job) -> None:
            if named is not None:
                job.emit("hive_alias", named, data={"hive_id": op.hive_id})
            await work(job)

        correlation = clip(redact_text(correlation_id), 100) if correlation_id else None
        return self.registry.start(op.operation, runner, correlation_id=correlation)


class JobCollector(Collector):
    """`hive_jobs_total{operation,outcome}` and `hive_jobs_running`."""

    def __init__(self, service: JobService) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        total = CounterMetricFamily(
            "hive_jobs",
            "Jobs ended, by operation (as the request named it) and outcome.",
            labels=["operation", "outcome"],
        )
        for (operation, outcome), n in sorted(self._service.ended.items()):
            total.add_metric([operation, outcome], n)
        yield total
        yield GaugeMetricFamily(
            "hive_jobs_running", "Jobs running now.", value=self._service.registry.running
        )
