"""The records a worker keeps per job: the claimed row, the run in progress, its result."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, NamedTuple

from ..context import JobContext
from .executors import Outcome

log = logging.getLogger("pgqueue.worker")

_BY_ID = attrgetter("id")
_BY_PRIORITY = attrgetter("priority")


@dataclass(slots=True)
class ClaimedJob:
    """A job as the claim returned it (the columns of ``claim_picked``'s RETURNING)."""

    id: int
    type: str
    queue: str
    data: dict[str, Any]
    priority: int
    attempts: int
    max_attempts: int
    retry_delay: float | None
    retry_backoff: bool | None
    retry_delay_max: float | None
    timeout: float | None
    lease_id: str
    trace: dict[str, Any] | None = None
    uid: str | None = None
    """As the claim's JSON gives it: the handler's context makes it a UUID if it is read."""

    @classmethod
    def from_rows(cls, rows: list[list[Any]] | None) -> list[ClaimedJob]:
        """The jobs of a claim's JSON (``claimed_json`` in ``queries.sql``: one array per job, its
        values in the order of these fields), in the order they are to start: highest priority
        first, then oldest (the claim picks them in that order, but returns them as it met them)."""
        if not rows:
            return []
        jobs = [cls(*row) for row in rows]
        jobs.sort(key=_BY_ID)  # two stable sorts: the second costs nothing when all priorities are equal
        jobs.sort(key=_BY_PRIORITY, reverse=True)
        return jobs


Sink = Callable[[int, Any], Callable[[dict[str, Any]], None]]
"""Makes the callable a job's progress reports go to, given its id and lease."""


@dataclass(slots=True)
class Running:
    job: ClaimedJob
    task: asyncio.Task[None] | None = None
    lost: bool = False
    """The lease is gone (rescued, cancelled, or handed back at shutdown): no outcome is recorded."""
    started: float = field(default_factory=time.monotonic)
    context: JobContext | None = None
    """What the handler sees of its job, once it starts: where a cancellation is signalled."""
    then: ClaimedJob | None = None
    """The job, claimed again while this run was told to stop: it starts when this run ends."""

    def cancel(self) -> None:
        """The job was cancelled, or its lease lost: record no outcome, and tell the handler."""
        self.lost = True
        if self.context is not None:
            self.context._cancel()

    def open_context(self, schema: str, started: float, sink: Sink) -> JobContext:
        """What the handler sees of its job; ``sink(job id, lease)`` takes its progress reports."""
        job = self.job
        context = self.context = JobContext._started(
            job.id,
            job.type,
            job.queue,
            job.attempts,
            job.max_attempts,
            job.lease_id,
            schema,
            started,
            job.uid,
            sink(job.id, job.lease_id),
        )
        if self.lost:  # cancelled before it started
            context._cancel_event.set()
        return context

    def claimed_again(self, job: ClaimedJob, sink: Sink) -> None:
        """This worker claimed the job again while it holds it: the earlier claim was lost (a
        server that failed over never saw it) or taken back (cancelled, then retried). A run that
        holds the job goes on under the new claim, so the job runs once; a run told to stop is
        left to end, and the job starts again after it."""
        if self.lost:
            self.then = job
            log.info("job %s: claimed again while its stopped run goes on: it starts after it", job.id)
            return
        log.info(
            "job %s: claimed again while it runs here (its claim was lost): it goes on under the new claim",
            job.id,
        )
        self.job = job
        if self.context is not None:
            object.__setattr__(self.context, "lease_id", job.lease_id)
            object.__setattr__(self.context, "_progress_sink", sink(job.id, job.lease_id))


class Result(NamedTuple):
    job: ClaimedJob
    outcome: Outcome
    duration: float
    handler_completed: bool = False
    """The handler completed the job itself, with JobContext.complete (its transaction may have
    rolled back since)."""


def report_lost(job: ClaimedJob, handler_completed: bool) -> None:
    """Log a job that ended after it was cancelled, its lease lost, or handed back: its outcome
    is not recorded."""
    if handler_completed:
        # Lost after complete() had succeeded: either that transaction rolled back (the
        # heartbeat then found the lease gone: it has warned) or the job was being handed
        # back at shutdown after it committed. The row says which; nothing is recorded here.
        log.info(
            "job %s stopped after its handler completed it in its own transaction "
            "(completed if that transaction committed)",
            job.id,
            extra={"job_id": job.id, "type": job.type, "outcome": "handler-completed"},
        )
        return
    log.warning(
        "job %s finished after it was cancelled or its lease lost; its outcome is not recorded",
        job.id,
        extra={"job_id": job.id, "type": job.type, "outcome": "lease-lost"},
    )
