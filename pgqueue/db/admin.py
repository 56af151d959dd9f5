"""Actions on jobs for operators: delete one, and cancel, retry or delete every job a filter matches.

The actions on many jobs work in batches of :data:`BATCH` rows, one statement each, walking
the matching rows in id order: on the App's own pool each batch commits by itself, so a
million matching rows never hold their locks, or one long transaction, at once. Rows a worker
holds at that moment are passed over (they are being claimed or finished right now).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from .inspect import JobFilter
from .operation import Operation
from .ops import resolve_job_id
from .sql import channel, queries

__all__ = [
    "BATCH",
    "AdminMethods",
    "cancel_jobs",
    "count_dead_letters",
    "dead_letter_overview",
    "delete_job",
    "delete_jobs",
    "redrive",
    "retry_jobs",
]

R = TypeVar("R")

BATCH = 5000
"""Rows per statement of an action on many jobs."""


def delete_job(schema: str, job: Any) -> Operation[bool]:
    """Delete one job (by id or uid), whatever its state; False if there was none with that id."""
    rows = yield queries(schema).delete_job, {"id": (yield from resolve_job_id(schema, job))}
    return bool(rows)


def _batched(
    schema: str, statement: str, where: JobFilter, notify: bool, batch: int = BATCH
) -> Operation[int]:
    q = queries(schema)
    params = {**where.params(), "batch": batch, "after": 0}
    total = 0
    while True:
        rows = yield getattr(q, statement), params
        total += len(rows)
        if notify and rows:
            yield q.notify, {"channel": channel(schema), "queues": sorted({row["queue"] for row in rows})}
        if len(rows) < batch:
            return total
        params["after"] = max(row["id"] for row in rows)


def cancel_jobs(schema: str, where: JobFilter, batch: int = BATCH) -> Operation[int]:
    """Cancel the unfinished jobs matching ``where``; the number cancelled."""
    return (yield from _batched(schema, "cancel_batch", where, False, batch))


def retry_jobs(schema: str, where: JobFilter, notify: bool = True, batch: int = BATCH) -> Operation[int]:
    """Run the failed and cancelled jobs matching ``where`` again, now; the number retried."""
    return (yield from _batched(schema, "retry_batch", where, notify, batch))


def delete_jobs(schema: str, where: JobFilter, batch: int = BATCH) -> Operation[int]:
    """Delete the jobs matching ``where``, whatever their state; the number deleted."""
    return (yield from _batched(schema, "delete_batch", where, False, batch))


def redrive(schema: str, where: JobFilter, notify: bool = True, batch: int = BATCH) -> Operation[int]:
    """Put the dead letters matching ``where`` (its queue: the dead-letter queue) back on their
    original queues, to run now with fresh attempts; the number moved."""
    return (yield from _batched(schema, "redrive_batch", where, notify, batch))


def count_dead_letters(schema: str, where: JobFilter) -> Operation[int]:
    """How many dead letters match ``where``: what :func:`redrive` would move."""
    rows = yield queries(schema).count_dead_letters, where.params()
    return int(rows[0]["jobs"])


def dead_letter_overview(schema: str) -> Operation[list[dict[str, Any]]]:
    """The dead letters waiting, per dead-letter queue, queue they failed on and type: ``jobs``,
    ``oldest`` and ``newest`` (when they were dead-lettered)."""
    rows = yield queries(schema).dead_letter_overview, None
    return [dict(row) for row in rows]


Seconds = float | timedelta | None


class _Host(Protocol):
    """What the methods below need of the App they are mixed into."""

    schema: str
    notify: bool

    @property
    def _execute(self) -> Callable[[Operation[R], Any], R]: ...


class AdminMethods:
    """The App's methods for operators (mixed into :class:`pgqueue.App`)."""

    def delete_job(self: _Host, job_id: Any, conn: Any = None) -> bool:
        """Delete one job (its id or uid), whatever its state; False if there was none with that id.

        A running job's worker finds its row gone and records nothing.
        """
        return self._execute(delete_job(self.schema, job_id), conn)

    def cancel_jobs(
        self: _Host,
        queue: str | None = None,
        type: str | None = None,
        state: str | None = None,
        older_than: Seconds = None,
        *,
        error: str | None = None,
        conn: Any = None,
    ) -> int:
        """Cancel every unfinished job matching the filter (None matches all); the number cancelled.

        ``older_than``: created more than that long ago (seconds or a timedelta); ``error``: the
        last error contains that text. Works in batches of 5,000 rows, each its own transaction
        on the App's pool (one transaction, the caller's, with ``conn=``).

        >>> app.cancel_jobs(queue="emails", state="retry", older_than=timedelta(hours=1))
        """
        where = JobFilter(queue, type, state, error, older_than)
        return self._execute(cancel_jobs(self.schema, where), conn)

    def retry_jobs(
        self: _Host,
        queue: str | None = None,
        type: str | None = None,
        state: str | None = None,
        older_than: Seconds = None,
        *,
        error: str | None = None,
        conn: Any = None,
    ) -> int:
        """Run every failed or cancelled job matching the filter again, now; the number retried.

        Filters and batches as :meth:`cancel_jobs`.

        >>> app.retry_jobs(type="send-welcome-email", error="timeout")
        """
        where = JobFilter(queue, type, state, error, older_than)
        return self._execute(retry_jobs(self.schema, where, self.notify), conn)

    def delete_jobs(
        self: _Host,
        queue: str | None = None,
        type: str | None = None,
        state: str | None = None,
        older_than: Seconds = None,
        *,
        error: str | None = None,
        conn: Any = None,
    ) -> int:
        """Delete every job matching the filter, whatever its state; the number deleted.

        Filters and batches as :meth:`cancel_jobs`.

        >>> app.delete_jobs(state="failed", older_than=86400)
        """
        where = JobFilter(queue, type, state, error, older_than)
        return self._execute(delete_jobs(self.schema, where), conn)

    def redrive(
        self: _Host,
        dead_letter_queue: str,
        type: str | None = None,
        older_than: Seconds = None,
        *,
        error: str | None = None,
        dry_run: bool = False,
        conn: Any = None,
    ) -> int:
        """Put the jobs waiting on a dead-letter queue back on the queues they failed on, to run
        now with fresh attempts (their error history is kept); the number moved. Should one fail
        for good again, a new copy goes to the dead-letter queue.

        Filters as :meth:`cancel_jobs` (``older_than``: dead-lettered that long ago); batches of
        5,000. ``dry_run``: move nothing, return how many would be moved.

        >>> app.redrive("emails-dead", type="send-welcome-email")
        """
        where = JobFilter(dead_letter_queue, type, None, error, older_than)
        if dry_run:
            return self._execute(count_dead_letters(self.schema, where), conn)
        return self._execute(redrive(self.schema, where, self.notify), conn)
