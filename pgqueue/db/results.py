"""A job's result, for a caller waiting on it (:meth:`pgqueue.App.wait_for`)."""

from __future__ import annotations

from typing import Any

from ..errors import JobCancelled, JobFailed
from ..job import JobState
from .operation import Operation
from .ops import get_job
from .sql import queries

PENDING: Any = object()
"""What :func:`job_result` gives for a job that has not finished."""


def listen_done(schema: str) -> Operation[None]:
    """LISTEN for finished jobs on the connection (autocommit: it takes effect at once), then
    register as a waiter, without which the workers announce nothing. Read the job only after
    this: the registration waits for any worker's statement that finished jobs unannounced."""
    q = queries(schema)
    yield q.listen_done, None
    yield q.wait_register, None


def job_result(schema: str, job_id: int) -> Operation[Any]:
    """The output of a completed job; :data:`PENDING` while it waits or runs; JobFailed for a job
    that failed for good, JobCancelled for a cancelled one, JobNotFound for no such job."""
    job = yield from get_job(schema, job_id)
    if job.state is JobState.COMPLETED:
        return job.output
    if job.state is JobState.FAILED:
        raise JobFailed(f"job {job_id} failed: {job.error or 'no error recorded'}", job_id, job.error, job)
    if job.state is JobState.CANCELLED:
        raise JobCancelled(f"job {job_id} was cancelled", job_id)
    return PENDING


def announces(payload: str, job_id: int) -> bool:
    """Whether a notification on the done channel may concern ``job_id`` ('' stands for any job)."""
    return not payload or str(job_id) in payload.split()
