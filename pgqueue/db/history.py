"""The history of jobs, paged by key, and how long each queue keeps its finished jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..errors import InvalidJob
from ..job import Job, _seconds, validate_name
from .inspect import JobFilter
from .operation import Operation
from .sql import queries

__all__ = ["PAGE_MAX", "job_history", "set_queue_retention"]

PAGE_MAX = 1000
"""The most jobs one page of :func:`job_history` holds."""


def job_history(
    schema: str, where: JobFilter, since: datetime | None, limit: int, after: int | None
) -> Operation[list[Job]]:
    """Up to ``limit`` jobs matching ``where``, created at ``since`` or later, with ids above
    ``after``, oldest first (the next page: ``after`` = the last id of this one)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= PAGE_MAX:
        raise InvalidJob(f"limit must be an integer from 1 to {PAGE_MAX}, not {limit!r}")
    if after is not None and (isinstance(after, bool) or not isinstance(after, int)):
        raise InvalidJob(f"after must be a job id, not {after!r}")
    if since is not None and (not isinstance(since, datetime) or since.utcoffset() is None):
        raise InvalidJob("since must be a timezone-aware datetime")
    params = {**where.params(), "since": since, "limit": limit, "after": after or 0}
    rows = yield queries(schema).job_history, params
    return [Job.from_row(row) for row in rows]


_UNSET: Any = object()


def set_queue_retention(
    schema: str, name: str, completed: Any = _UNSET, failed: Any = _UNSET
) -> Operation[dict[str, Any]]:
    """Set how long the queue's completed, and its failed or cancelled, jobs are kept (seconds or
    a timedelta; None: the workers' defaults again); an argument left out is left as it was."""
    validate_name("queue", name)
    values = {}
    for kind, value in (("completed", completed), ("failed", failed)):
        values[kind] = None if value is _UNSET or value is None else _seconds(f"{kind} retention", value)
    rows = yield (
        queries(schema).set_queue_retention,
        {
            **values,
            "name": name,
            "set_completed": completed is not _UNSET,
            "set_failed": failed is not _UNSET,
        },
    )
    return dict(rows[0])
