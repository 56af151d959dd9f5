"""The records a worker keeps per job: the claimed row, the run in progress, its result."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..context import JobContext
from .executors import Outcome

log = logging.getLogger("pgqueue.worker")


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
    def from_rows(cls, rows: list[dict[str, Any]] | None) -> list[ClaimedJob]:
        return [cls(**row) for row in rows] if rows else []


@dataclass(slots=True)
class Running:
    job: ClaimedJob
    task: asyncio.Task[None] | None = None
    lost: bool = False
    """The lease is gone (rescued, cancelled, or handed back at shutdown): no outcome is recorded."""
    started: float = field(default_factory=time.monotonic)
    context: JobContext | None = None
    """What the handler sees of its job, once it starts: where a cancellation is signalled."""

    def cancel(self) -> None:
        """The job was cancelled, or its lease lost: record no outcome, and tell the handler."""
        self.lost = True
        if self.context is not None:
            self.context._cancel()


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
