"""Read-only views of the job and worker tables, for the dashboard, ``/metrics`` and admin tools.

Operations in the style of :mod:`pgqueue.db.ops`: generators run by ``run``/``arun`` or the
App's pool. :class:`JobFilter` is the filter that the job list and the actions on many jobs
(:mod:`pgqueue.db.admin`) share.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..errors import InvalidJob
from ..job import JobState, validate_name
from .operation import Operation, Rows
from .sql import queries

__all__ = [
    "GONE_AFTER",
    "JobFilter",
    "JobPage",
    "QueueStats",
    "WorkerInfo",
    "count_jobs",
    "job_types",
    "list_jobs",
    "queue_overview",
    "throughput",
    "worker_list",
]

GONE_AFTER = 30.0
"""Seconds without a heartbeat after which a worker counts as gone. Workers record that they
are alive every third of their lease (5 s with the default 15 s lease): 30 s is several missed
heartbeats in a row."""

STATES = tuple(state.value for state in JobState)


@dataclass(frozen=True)
class JobFilter:
    """Which jobs a list or an action covers; ``None`` matches everything.

    ``error`` matches jobs whose last error contains that text (case-insensitive);
    ``older_than`` jobs created more than that long ago (seconds, or a timedelta).
    """

    queue: str | None = None
    type: str | None = None
    state: str | None = None
    error: str | None = None
    older_than: float | timedelta | None = None

    def __post_init__(self) -> None:
        for name in ("queue", "type"):
            value = getattr(self, name)
            if value is not None:
                validate_name(name, value)
        if self.state is not None and str(self.state) not in STATES:
            raise InvalidJob(f"state must be one of {', '.join(STATES)}, not {self.state!r}")
        if self.error is not None and (not isinstance(self.error, str) or "\x00" in self.error):
            raise InvalidJob("error must be text without NUL characters")
        seconds = self.seconds
        if seconds is not None and not (seconds >= 0 and seconds < float("inf")):
            raise InvalidJob(f"older_than must be a duration of zero or more, not {self.older_than!r}")

    @property
    def seconds(self) -> float | None:
        """``older_than`` in seconds."""
        if isinstance(self.older_than, timedelta):
            return self.older_than.total_seconds()
        if self.older_than is None:
            return None
        if isinstance(self.older_than, bool) or not isinstance(self.older_than, (int, float)):
            raise InvalidJob(f"older_than must be seconds or a timedelta, not {self.older_than!r}")
        return float(self.older_than)

    def params(self) -> dict[str, Any]:
        """The filter's statement parameters (see ``job_filter`` in queries.sql)."""
        return {
            "queue": self.queue,
            "type": self.type,
            "state": None if self.state is None else str(self.state),
            "error": self.error or None,
            "older_than": self.seconds,
        }


@dataclass(frozen=True)
class QueueStats:
    """One queue's numbers right now (see ``queue_overview`` in queries.sql)."""

    queue: str
    waiting: int
    scheduled: int
    active: int
    retrying: int
    failed: int
    cancelled: int
    completed: int
    completed_last_minute: int
    oldest_waiting_seconds: float | None


@dataclass(frozen=True)
class WorkerInfo:
    """A registered worker process; ``alive`` until it misses heartbeats for ``GONE_AFTER`` s."""

    id: str
    hostname: str
    pid: int
    queues: list[str]
    concurrency: int
    started_at: datetime
    last_seen_at: datetime
    seen_seconds_ago: float
    running: int
    alive: bool


@dataclass(frozen=True)
class JobPage:
    """A page of a job list, newest first, and the ids to page on from (None: no more that way)."""

    jobs: Rows
    older: int | None
    """Pass as ``before`` for the next (older) page."""
    newer: int | None
    """Pass as ``after`` for the previous (newer) page."""


def queue_overview(schema: str) -> Operation[list[QueueStats]]:
    """Every queue with jobs in it, by name."""
    rows = yield queries(schema).queue_overview, None
    return [QueueStats(**row) for row in rows]


def throughput(schema: str, minutes: int = 60, queue: str | None = None) -> Operation[Rows]:
    """Rows ``{minute, completed, failed}`` for each of the last ``minutes`` minutes, oldest first."""
    return (yield queries(schema).throughput, {"minutes": minutes, "queue": queue})


def list_jobs(
    schema: str,
    where: JobFilter,
    *,
    before: int | None = None,
    after: int | None = None,
    limit: int = 50,
) -> Operation[JobPage]:
    """One page of the jobs matching ``where``, newest first: the first page, the one older than
    the id ``before``, or the one newer than the id ``after`` (keyset paging by id)."""
    params = {**where.params(), "limit": limit + 1}
    if after is not None:
        rows = yield queries(schema).list_jobs_newer, {**params, "after": after}
        more_newer = len(rows) > limit
        jobs = list(reversed(rows[:limit]))
        more_older = True  # the page came from newer than `after`, which matched
    else:
        rows = yield queries(schema).list_jobs, {**params, "before": before}
        more_older = len(rows) > limit
        jobs = rows[:limit]
        more_newer = before is not None
    if not jobs:
        return JobPage([], None, None)
    return JobPage(
        jobs,
        older=jobs[-1]["id"] if more_older else None,
        newer=jobs[0]["id"] if more_newer else None,
    )


def count_jobs(schema: str, where: JobFilter, within: list[str] | None = None) -> Operation[int]:
    """How many jobs match ``where`` (and, if given, are in one of the states ``within``)."""
    rows = yield queries(schema).count_jobs, {**where.params(), "within": within}
    return int(rows[0]["jobs"])


def job_types(schema: str) -> Operation[dict[str, list[str]]]:
    """The job types present in each queue."""
    rows = yield queries(schema).job_types, None
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row["queue"], []).append(row["type"])
    return found


def worker_list(schema: str, gone_after: float = GONE_AFTER) -> Operation[list[WorkerInfo]]:
    """The registered workers, newest first, each alive or gone."""
    rows = yield queries(schema).worker_list, None
    return [WorkerInfo(**row, alive=row["seen_seconds_ago"] <= gone_after) for row in rows]
