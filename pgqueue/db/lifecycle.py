"""Dead letters and dependencies: enqueueing jobs that have either (redriving dead letters is
in :mod:`pgqueue.db.admin`).

What happens when such a job finishes is the database's work, in the transaction that finishes
it (triggers of migration 0007): a job that fails for good is copied to its dead-letter queue;
a job others depend on releases them when it completes, and cancels them (transitively) when it
fails for good, is cancelled or is deleted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..job import JobId
from .operation import Operation
from .sql import channel, queries

__all__ = ["insert_lifecycle_jobs"]


def _array_literal(ids: Sequence[int] | None) -> str | None:
    return None if not ids else "{" + ",".join(str(int(job_id)) for job_id in ids) + "}"


def insert_lifecycle_jobs(
    schema: str, jobs: Sequence[tuple[Any, str]], fields: Sequence[str], notify: bool, trace: str | None
) -> Operation[list[JobId | None]]:
    """Insert jobs (templates and encoded data) of which some have a dead-letter queue or
    dependencies, in one statement; ids in input order (None where a unique key was taken).

    ``fields``: the template attributes passed as arrays, as ``insert_jobs`` takes them.
    """
    params: dict[str, Any] = {name: [getattr(template, name) for template, _ in jobs] for name in fields}
    params.update(
        data=[data for _, data in jobs],
        dead_letter=[template.dead_letter for template, _ in jobs],
        depends_on=[_array_literal(template.depends_on) for template, _ in jobs],
        channel=channel(schema),
        notify=notify,
        trace=trace,
    )
    rows = yield queries(schema).insert_jobs_lifecycle, params
    return [None if row["id"] is None else JobId(row["id"], row["uid"]) for row in rows]
