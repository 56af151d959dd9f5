"""Enqueueing: the jobs' templates and the operation that inserts them (one statement, an
``INSERT ... unnest`` for several, or a ``COPY`` for large batches)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from ..codec import encode_data
from .lifecycle import insert_lifecycle_jobs
from .operation import CopyIn, Operation
from .sql import channel, queries


@dataclass(frozen=True)
class JobTemplate:
    """Everything about a job to insert but its data: validated, and shared by every job of one
    task and set of options, so that bulk enqueues validate and format it once."""

    type: str
    queue: str
    priority: int
    max_attempts: int
    run_at: datetime | None = None
    delay: float | None = None
    retry_delay: float | None = None
    retry_backoff: bool | None = None
    retry_delay_max: float | None = None
    timeout: float | None = None
    unique_key: str | None = None
    dead_letter: str | None = None
    depends_on: tuple[int, ...] | None = None
    values: tuple[Any, ...] = field(init=False, repr=False, compare=False)
    """The parameters of ``insert_job`` after the data, in its order."""

    def __post_init__(self) -> None:
        values = (
            self.type,
            self.queue,
            self.priority,
            self.max_attempts,
            self.run_at,
            self.delay,
            self.retry_delay,
            self.retry_backoff,
            self.retry_delay_max,
            self.timeout,
        )
        object.__setattr__(self, "values", values)

    @property
    def runs_at_once(self) -> bool:
        return self.run_at is None and not self.delay

    def copy_suffix(self, now: datetime | None) -> str:
        """This template's columns as a tail of a COPY text line (after id and data): those of
        ``copy_jobs``, or with ``now`` None those of ``copy_jobs_now`` (no run_at)."""
        values: tuple[Any, ...] = (self.type, self.queue, self.priority, self.max_attempts)
        if now is not None:
            run_at = self.run_at if self.run_at is not None else now + timedelta(seconds=self.delay or 0)
            values += (run_at.isoformat(),)
        values += (self.retry_delay, self.retry_backoff, self.retry_delay_max, self.timeout)
        return "\t".join(_copy_text(value) for value in values)


class Unencoded(NamedTuple):
    """Job data still to be encoded (``encode_data(data, max_bytes)``), for bulk loads on the
    App's own pool: a COPY then encodes each chunk while PostgreSQL loads the one before. A
    bad item aborts the COPY, so nothing is written. (With the caller's connection, data is
    encoded before anything is sent: bad input must not abort the caller's transaction.)"""

    data: Any
    max_bytes: int


NewJob = tuple[JobTemplate, "str | Unencoded"]
"""A job to insert: its template and its data as JSON text (or still to encode)."""

COPY_MIN_JOBS = 64
"""Bulk enqueues of at least this many jobs (and no unique keys) are loaded with COPY."""


def _copy_text(value: Any) -> str:
    if value is None:
        return "\\N"
    if value is True or value is False:
        return "t" if value else "f"
    return str(value).replace("\\", "\\\\")


_TEMPLATE_FIELDS = tuple(
    name for name in JobTemplate.__dataclass_fields__ if name not in ("values", "dead_letter", "depends_on")
)


def insert_jobs(
    schema: str, jobs: Sequence[NewJob], notify: bool = True, trace: str | None = None
) -> Operation[list[int | None]]:
    """Insert jobs; return their ids in input order (None where a unique key was taken).

    ``trace`` (JSON text: the W3C trace context of the enqueue, see :mod:`pgqueue.tracing`) is
    stored with every job; given one, the jobs go through ``insert_job_traced`` or
    ``insert_jobs`` (never COPY), and the untraced statements stay as they were.

    With ``notify``, the workers of each queue are woken once, on commit. One job is one
    statement; many are one ``INSERT ... unnest`` (or, for large batches without unique
    keys, a ``COPY`` of rows whose ids were reserved first): one round trip for thousands.
    """
    if not jobs:
        return []
    q = queries(schema)
    if any(template.dead_letter is not None or template.depends_on for template, _ in jobs):
        return (yield from insert_lifecycle_jobs(schema, _encoded(jobs), _TEMPLATE_FIELDS, notify, trace))
    if trace is not None:
        return (yield from _insert_traced(schema, jobs, notify, trace))
    if len(jobs) >= COPY_MIN_JOBS and all(template.unique_key is None for template, _ in jobs):
        return (yield from _copy_jobs(schema, jobs, notify))
    jobs = _encoded(jobs)
    if len(jobs) == 1:
        template, data = jobs[0]
        if template.unique_key is None:
            if notify:
                rows = yield q.insert_job_notify, (data, *template.values, channel(schema))
            else:
                rows = yield q.insert_job, (data, *template.values)
            return [rows[0][0]]
        params: dict[str, Any] = {name: getattr(template, name) for name in _TEMPLATE_FIELDS}
        params.update(data=data, channel=channel(schema), notify=notify)
        rows = yield q.insert_unique_job, params
        return [rows[0]["id"] if rows else None]
    return (yield from _insert_many(schema, jobs, notify, None))


def _encoded(jobs: Sequence[NewJob]) -> list[tuple[JobTemplate, str]]:
    return [(template, data if type(data) is str else encode_data(*data)) for template, data in jobs]


def _insert_traced(
    schema: str, jobs: Sequence[NewJob], notify: bool, trace: str
) -> Operation[list[int | None]]:
    jobs = _encoded(jobs)
    if len(jobs) > 1:
        return (yield from _insert_many(schema, jobs, notify, trace))
    template, data = jobs[0]
    params: dict[str, Any] = {name: getattr(template, name) for name in _TEMPLATE_FIELDS}
    params.update(data=data, channel=channel(schema), notify=notify, trace=trace)
    rows = yield queries(schema).insert_job_traced, params
    return [rows[0]["id"] if rows else None]


def _insert_many(
    schema: str, jobs: Sequence[NewJob], notify: bool, trace: str | None
) -> Operation[list[int | None]]:
    params: dict[str, Any] = {
        name: [getattr(template, name) for template, _ in jobs] for name in _TEMPLATE_FIELDS
    }
    params.update(data=[data for _, data in jobs], channel=channel(schema), notify=notify, trace=trace)
    rows = yield queries(schema).insert_jobs, params
    if len(rows) == len(jobs):
        return [row["id"] for row in rows]
    # Some unique keys were taken: match the rows that were inserted back to their jobs.
    by_key = {row["unique_key"]: row["id"] for row in rows if row["unique_key"] is not None}
    plain = iter(row["id"] for row in rows if row["unique_key"] is None)
    ids: list[int | None] = []
    for template, _ in jobs:
        if template.unique_key is None:
            ids.append(next(plain))
        else:
            ids.append(by_key.pop(template.unique_key, None))
    return ids


def _copy_jobs(schema: str, jobs: Sequence[NewJob], notify: bool) -> Operation[list[int | None]]:
    q = queries(schema)
    rows = yield q.reserve_job_ids, {"n": len(jobs)}
    ids: list[int | None] = rows[0]["ids"]
    templates = {id(template): template for template, _ in jobs}.values()
    at_once = all(template.runs_at_once for template in templates)
    # Delays count from the reservation's now(); jobs that run at once take the COPY's.
    now: datetime | None = None if at_once else rows[0]["now"]
    suffixes = {id(template): template.copy_suffix(now) for template in templates}
    yield CopyIn(q.copy_jobs_now if at_once else q.copy_jobs, _copy_lines(jobs, ids, suffixes)), None
    if notify:
        queues = sorted({template.queue for template in templates})
        yield q.notify, {"channel": channel(schema), "queues": queues}
    return ids


def _copy_lines(
    jobs: Sequence[NewJob], ids: Sequence[int | None], suffixes: dict[int, str], rows: int = 2000
) -> Iterator[str]:
    """The jobs as COPY text lines, ``rows`` lines a chunk."""
    for start in range(0, len(jobs), rows):
        lines = []
        chunk = zip(ids[start : start + rows], jobs[start : start + rows], strict=True)
        for job_id, (template, data) in chunk:
            if type(data) is not str:
                data = encode_data(*data)
            if "\\" in data:  # COPY's text format reads a backslash as an escape
                data = data.replace("\\", "\\\\")
            lines.append(f"{job_id}\t{data}\t{suffixes[id(template)]}\n")
        yield "".join(lines)
