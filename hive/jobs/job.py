"""A job and the registry of jobs: each job keeps its own bounded list of events, so a
stream opened late replays it from the start, and any number of streams read it; finished
jobs stay readable for a while, bounded in number; running jobs are bounded too.

A job's events are rbee narration (`actor`, `action`, `target`, `human`, `formatted`,
`job_id`, `emitted_at_ms`, optional `correlation_id`) with hive's `message`, `level`,
`object` and structured `data`; each is framed for SSE once, when it is added.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any

from hive.core.clock import Clock
from hive.errors import TooManyRequests
from hive.model.events import Event, Level
from hive.model.text import clip, redact_data, redact_text, show_text

log = logging.getLogger(__name__)

#: Who narrates a job's own lines (rbee's `actor`; rbee's hive says `hv-router`).
ACTOR = "hive"


def formatted(actor: str, action: str, human: str) -> str:
    """rbee's `formatted` as narration-core writes it (format.rs at 6ca91007, with the actor
    where rbee puts the function name it lacks): bold name, dim action, then the message."""
    return f"\x1b[1m{actor:<40}\x1b[0m \x1b[2m{action:<20}\x1b[0m\n{human}\n"


class Outcome(StrEnum):
    DONE = "done"
    ERROR = "error"
    CANCELLED = "cancelled"


class JobFailed(Exception):
    """A job ends with `[ERROR] <reason>` (the reason is bounded and redacted)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _frame(payload: dict[str, Any] | str) -> bytes:
    text = (
        payload
        if isinstance(payload, str)
        else json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    )
    return f"data: {text}\n\n".encode()


class Job:
    """One job: its operation, its events (bounded: the oldest go first, and a reader
    that missed some gets an `events_dropped` line), and how it ended."""

    def __init__(
        self,
        *,
        job_id: str,
        operation: str,
        clock: Clock,
        max_events: int,
        correlation_id: str | None = None,
    ) -> None:
        self.id = job_id
        self.operation = operation
        self.correlation_id = correlation_id
        self._clock = clock
        self.created = clock.monotonic()
        self.finished_at: float | None = None
        self.outcome: Outcome | None = None
        self.reason = ""
        self._frames: deque[bytes] = deque(maxlen=max_events)
        #: The sequence number of the first frame still kept (frames before it were dropped).
        self._first = 0
        self._changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        #: A client cancelled it: what it wrote is undone (not when hive itself stops).
        self.undo = False

    # -- writing ---------------------------------------------------------------------------
    def emit(
        self,
        action: str,
        message: str,
        *,
        target: str | None = None,
        level: Level = Level.INFO,
        object: str | None = None,
        data: dict[str, Any] | None = None,
        emitted_at_ms: int | None = None,
    ) -> None:
        """One narration line of this job (`message` redacted and bounded here)."""
        self._append(
            _frame(
                self._event(
                    action,
                    message,
                    target=target,
                    level=level,
                    object=object,
                    data=data,
                    emitted_at_ms=emitted_at_ms,
                )
            )
        )

    def _event(
        self,
        action: str,
        message: str,
        *,
        target: str | None = None,
        level: Level = Level.INFO,
        object: str | None = None,
        data: dict[str, Any] | None = None,
        emitted_at_ms: int | None = None,
    ) -> dict[str, Any]:
        """A line's fields: rbee's narration and hive's own."""
        human = clip(redact_text(message), 2000)
        event: dict[str, Any] = {
            "action": action,
            "message": human,
            "actor": ACTOR,
            "target": target or object or self.id,
            "human": human,
            "formatted": formatted(ACTOR, action, human),
            "job_id": self.id,
            "emitted_at_ms": emitted_at_ms
            if emitted_at_ms is not None
            else int(self._clock.now().timestamp() * 1000),
            "level": level.value,
            "object": object,
            "data": redact_data(data) if data else {},
        }
        if self.correlation_id is not None:
            event["correlation_id"] = self.correlation_id
        return event

    def forward(self, event: Event) -> None:
        """A bus event about an object this job follows, as a line of the job."""
        self.emit(
            event.action,
            event.message,
            level=event.level,
            object=event.object,
            data={**event.data, "event_id": event.id},
            emitted_at_ms=int(event.time.timestamp() * 1000),
        )

    def _append(self, frame: bytes) -> None:
        if len(self._frames) == self._frames.maxlen:
            self._first += 1
        self._frames.append(frame)
        self._changed.set()
        self._changed = asyncio.Event()

    def finish(self, outcome: Outcome, reason: str = "") -> None:
        if self.outcome is not None:
            return
        self.outcome = outcome
        self.reason = " ".join(show_text(reason, 1000).splitlines())
        self.finished_at = self._clock.monotonic()
        self._changed.set()

    # -- reading ---------------------------------------------------------------------------
    @property
    def end(self) -> int:
        """The sequence number after the last frame."""
        return self._first + len(self._frames)

    def read(self, cursor: int) -> tuple[list[bytes], int]:
        """The frames from `cursor` on (an `events_dropped` line first when some left the
        list before this reader got them), and the new cursor."""
        out: list[bytes] = []
        if cursor < self._first:
            missed = self._first - cursor
            out.append(
                _frame(
                    self._event(
                        "events_dropped",
                        f"{missed} earlier lines of this job were dropped (a job keeps its "
                        f"last {self._frames.maxlen})",
                        level=Level.WARNING,
                        data={"missed": missed},
                    )
                )
            )
            cursor = self._first
        out.extend(list(self._frames)[cursor - self._first :])
        return out, self.end

    def marker(self) -> bytes:
        """The stream's last line: `[DONE]`, `[ERROR] <reason>` or `[CANCELLED]`."""
        match self.outcome:
            case Outcome.DONE:
                return _frame("[DONE]")
            case Outcome.ERROR:
                return _frame(f"[ERROR] {self.reason}")
            case _:
                return _frame("[CANCELLED]")

    async def wait(self, cursor: int, *, within: float) -> bool:
        """Until a frame after `cursor` exists or the job ended; False on timeout."""
        if cursor < self.end or self.outcome is not None:
            return True
        try:
            await asyncio.wait_for(self._changed.wait(), within)
        except TimeoutError:
            return False
        return True

    def summary(self) -> dict[str, Any]:
        return {
            "job_id": self.id,
            "operation": self.operation,
            "status": self.outcome.value if self.outcome else "running",
        }


Runner = Callable[[Job], Awaitable[None]]
#: Told of every job that ends: its operation and outcome (the metrics count them).
OnEnd = Callable[[Job], None]


class JobRegistry:
    """Jobs by id. Running jobs are bounded (`max_running`; one more is refused with
    429); a finished job is kept `retention` seconds, and at most `max_finished` of them
    (the oldest go first)."""

    def __init__(
        self,
        *,
        clock: Clock,
        retention: float,
        max_finished: int,
        max_running: int,
        max_events: int,
        on_end: OnEnd | None = None,
    ) -> None:
        self._clock = clock
        self._retention = retention
        self._max_finished = max_finished
        self._max_running = max_running
        self._max_events = max_events
        self._on_end = on_end
        self._jobs: dict[str, Job] = {}
        self._running: set[str] = set()
        #: Finished jobs, oldest end first.
        self._finished: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._jobs)

    @property
    def running(self) -> int:
        return len(self._running)

    def start(self, operation: str, runner: Runner, *, correlation_id: str | None = None) -> Job:
        """A new job running `runner` from now (its stream may open at any time)."""
        self.sweep()
        if len(self._running) >= self._max_running:
            raise TooManyRequests(
                f"{len(self._running)} jobs are running (the most at once: "
                f"{self._max_running}, HIVE_JOBS_RUNNING_MAX); try again once some end"
            )
        job = Job(
            job_id=f"job-{uuid.uuid4()}",
            operation=operation,
            clock=self._clock,
            max_events=self._max_events,
            correlation_id=correlation_id,
        )
        self._jobs[job.id] = job
        self._running.add(job.id)
        job.task = asyncio.create_task(self._run(job, runner), name=f"job {job.id}")
        return job

    async def _run(self, job: Job, runner: Runner) -> None:
        try:
            await runner(job)
        except JobFailed as exc:
            job.finish(Outcome.ERROR, exc.reason)
        except asyncio.CancelledError:
            job.finish(Outcome.CANCELLED)
        except Exception as exc:  # a bug: said on the stream, never lost
            log.exception("job %s (%s) failed", job.id, job.operation)
            why = f"internal error: {type(exc).__name__}: {show_text(str(exc))}"
            job.finish(Outcome.ERROR, why)
        else:
            job.finish(Outcome.DONE)
        finally:
            job.finish(Outcome.CANCELLED)  # no-op unless nothing above ended it
            self._ended(job)

    def _ended(self, job: Job) -> None:
        self._running.discard(job.id)
        self._finished[job.id] = job.finished_at or self._clock.monotonic()
        if self._on_end is not None:
            self._on_end(job)
        self.sweep()

    def get(self, job_id: str) -> Job | None:
        self.sweep()
        return self._jobs.get(job_id)

    async def cancel(self, job: Job) -> None:
        """Cancel a running job and wait until its clean-up has run."""
        task = job.task
        if task is None or task.done():
            return
        job.undo = True
        task.cancel()
        await asyncio.wait([task])

    def sweep(self) -> None:
        """Forget finished jobs past their retention, and the oldest beyond the bound."""
        now = self._clock.monotonic()
        while self._finished:
            job_id, ended = next(iter(self._finished.items()))
            if now - ended < self._retention and len(self._finished) <= self._max_finished:
                break
            del self._finished[job_id]
            self._jobs.pop(job_id, None)

    async def stop(self) -> None:
        """hive is stopping: every running job is cancelled (its stream ends)."""
        tasks = [j.task for j in self._jobs.values() if j.task is not None and not j.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
