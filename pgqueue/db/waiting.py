"""Operations for tests: the jobs still waiting or running, and moving waiting jobs through time.

Generators like those of :mod:`pgqueue.db.ops`, run by ``run``/``arun`` or the App's pool.
"""

from __future__ import annotations

from ..job import Job
from .operation import Operation
from .sql import queries

__all__ = ["advance_run_at", "unfinished_jobs"]


def unfinished_jobs(schema: str, limit: int = 10_000) -> Operation[list[Job]]:
    """Jobs that wait (created, retry) or run (active), oldest first, at most ``limit``."""
    rows = yield queries(schema).unfinished_jobs, {"limit": limit}
    return [Job.from_row(row) for row in rows]


def advance_run_at(schema: str, seconds: float) -> Operation[int]:
    """Make every waiting job runnable ``seconds`` earlier; the number of jobs moved."""
    rows = yield queries(schema).advance_run_at, {"seconds": float(seconds)}
    return len(rows)
