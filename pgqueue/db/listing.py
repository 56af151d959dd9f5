"""Read-only look-ups for the command line's job listings: ``pgqueue jobs`` and ``pgqueue status``."""

from __future__ import annotations

from typing import Any

from . import inspect
from .inspect import JobFilter
from .operation import Operation, Rows
from .sql import queries


def list_jobs(
    schema: str,
    *,
    queue: str | None = None,
    type: str | None = None,
    state: str | None = None,
    error_contains: str | None = None,
    after: int = 0,
    limit: int = 50,
) -> Operation[Rows]:
    """One page of jobs in id order, after the id ``after`` (keyset paging: pass the last id
    of a page to get the next), filtered by whichever of the filters are given."""
    where = JobFilter(queue=queue, type=type, state=state, error=error_contains)
    page = yield from inspect.list_jobs(schema, where, after=after, limit=limit)
    return page.jobs[::-1]  # a page after an id comes newest first, as the dashboard shows it


def queue_activity(schema: str, minutes: int = 5) -> Operation[dict[str, dict[str, Any]]]:
    """Per queue: ``oldest_waiting`` (seconds the oldest runnable job has waited, None if none
    waits) and ``completed_per_minute`` over the last ``minutes`` minutes."""
    rows = yield queries(schema).queue_activity, {"minutes": minutes}
    return {
        row["queue"]: {
            "oldest_waiting": row["oldest_waiting"],
            "completed_per_minute": row["completed_per_minute"],
        }
        for row in rows
    }
