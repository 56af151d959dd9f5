"""Enqueueing: the jobs' templates and the operation that inserts them (one statement, an
``INSERT ... unnest`` for several, or a ``COPY`` for large batches)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple, overload

from ..codec import encode_data
from ..job import DEFAULT_QUEUE, JobId, JobOptions, job_uids_hex
from ..settings import resolve_option
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
    unique_for: float | None = None
    debounce: float | None = None
    concurrency_key: str | None = None
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

    @property
    def keyed(self) -> bool:
        """Enqueued with a window on its key (``unique_for`` or ``debounce``): one statement each."""
        return self.unique_for is not None or self.debounce is not None

    def copy_suffix(self, now: datetime | None) -> str:
        """This template's columns as a tail of a COPY text line (after id, uid and data): those of
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


class Batch(Sequence[NewJob]):
    """Jobs of one template, their data still to be encoded: a bulk enqueue of one task on the
    App's own pool. Holds no pair per job: the pairs are made when read, a chunk at a time as a
    COPY sends them while PostgreSQL loads the chunk before (made all at once, thousands of them
    cost more in garbage collection than in making)."""

    __slots__ = ("items", "max_bytes", "template")

    def __init__(self, template: JobTemplate, items: list[Any], max_bytes: int) -> None:
        self.template, self.items, self.max_bytes = template, items, max_bytes

    def __len__(self) -> int:
        return len(self.items)

    @overload
    def __getitem__(self, index: int) -> NewJob: ...
    @overload
    def __getitem__(self, index: slice) -> list[NewJob]: ...
    def __getitem__(self, index: int | slice) -> NewJob | list[NewJob]:
        template, limit = self.template, self.max_bytes
        if isinstance(index, slice):
            return [(template, Unencoded({} if data is None else data, limit)) for data in self.items[index]]
        data = self.items[index]
        return template, Unencoded({} if data is None else data, limit)

    def __iter__(self) -> Iterator[NewJob]:
        template, limit = self.template, self.max_bytes
        for data in self.items:
            yield template, Unencoded({} if data is None else data, limit)


def templates_of(jobs: Sequence[NewJob]) -> list[JobTemplate]:
    """The jobs' templates, each once, in order of first use."""
    if type(jobs) is Batch:
        return [jobs.template]
    return list({id(template): template for template, _ in jobs}.values())


COPY_MIN_JOBS = 64
"""Bulk enqueues of at least this many jobs (and no unique keys) are loaded with COPY."""


def _copy_text(value: Any) -> str:
    if value is None:
        return "\\N"
    if value is True or value is False:
        return "t" if value else "f"
    return str(value).replace("\\", "\\\\")


_TEMPLATE_FIELDS = tuple(
    name for name in JobTemplate.__dataclass_fields__ if name not in ("values", "depends_on")
)
"""The parameters of a one-job insert statement."""
_MANY_FIELDS = tuple(
    name for name in _TEMPLATE_FIELDS if name not in ("unique_for", "debounce", "dead_letter")
)
"""The array parameters of ``insert_jobs`` and ``insert_jobs_lifecycle`` (keyed jobs never go
through them)."""


def make_template(
    type_: str, task_options: JobOptions | None, options: JobOptions, defaults: JobOptions
) -> JobTemplate:
    """The template of a job of this type: the enqueue's ``options`` over its task's (None for a
    type no task is registered for), checked as a whole. Retry settings and timeouts are stored
    only where the task or the call sets them; otherwise the worker applies its task's (or the
    app's) defaults, and rows stay narrow."""
    merged = (task_options or JobOptions()).merged(options).check_keys(options)
    return JobTemplate(
        type=type_,
        queue=merged.queue or DEFAULT_QUEUE,
        priority=merged.priority or 0,
        max_attempts=resolve_option("max_attempts", options.max_attempts, task_options, defaults) or 1,
        **{name: getattr(merged, name) for name in _AS_GIVEN},
    )


_AS_GIVEN = tuple(
    name
    for name in JobTemplate.__dataclass_fields__
    if name not in ("type", "queue", "priority", "max_attempts", "values")
)
"""The template's fields taken from the merged options as they are."""


def insert_jobs(
    schema: str, jobs: Sequence[NewJob], notify: bool = True, trace: str | None = None
) -> Operation[list[JobId | None]]:
    """Insert jobs; return their ids (each a :class:`~pgqueue.job.JobId` with its uid) in input
    order, None where a plain unique key was taken.

    ``trace`` (JSON text: the W3C trace context of the enqueue, see :mod:`pgqueue.tracing`) is
    stored with every job; given one, the jobs go through ``insert_job_traced`` or
    ``insert_jobs`` (never COPY), and the untraced statements stay as they were.

    With ``notify``, the workers of each queue are woken once, on commit. One job is one
    statement; many are one ``INSERT ... unnest`` (or, for large batches without unique
    keys, a ``COPY`` of rows whose ids were reserved first): one round trip for thousands.
    Jobs with a window on their key (``unique_for``, ``debounce``) take one statement each,
    after the others.
    """
    if not jobs:
        return []
    templates = templates_of(jobs)
    if any(template.keyed for template in templates):
        return (yield from _insert_with_keyed(schema, jobs, notify, trace))
    q = queries(schema)
    if any(template.dead_letter is not None or template.depends_on for template in templates):
        return (yield from insert_lifecycle_jobs(schema, _encoded(jobs), _MANY_FIELDS, notify, trace))
    if trace is not None:
        return (yield from _insert_traced(schema, jobs, notify, trace))
    counted = any(template.concurrency_key is not None for template in templates)
    keys = any(template.unique_key is not None for template in templates)
    if len(jobs) >= COPY_MIN_JOBS and not counted and not keys:
        return (yield from _copy_jobs(schema, jobs, templates, notify))
    jobs = _encoded(jobs)
    if len(jobs) == 1 and not counted:  # a job with a concurrency key goes through insert_jobs
        template, data = jobs[0]
        if template.unique_key is None:
            if notify:
                rows = yield q.insert_job_notify, (data, *template.values, channel(schema))
            else:
                rows = yield q.insert_job, (data, *template.values)
            return [JobId(rows[0][0], rows[0][1])]
        rows = yield q.insert_unique_job, _params(schema, template, data, notify)
        return [JobId(rows[0]["id"], rows[0]["uid"]) if rows else None]
    return (yield from _insert_many(schema, jobs, notify, None))


def _params(
    schema: str, template: JobTemplate, data: str | Unencoded, notify: bool, trace: str | None = None
) -> dict[str, Any]:
    """The named parameters of a one-job insert statement."""
    params: dict[str, Any] = {name: getattr(template, name) for name in _TEMPLATE_FIELDS}
    text = data if type(data) is str else encode_data(*data)
    params.update(data=text, channel=channel(schema), notify=notify, trace=trace)
    return params


def _encoded(jobs: Sequence[NewJob]) -> list[tuple[JobTemplate, str]]:
    return [(template, data if type(data) is str else encode_data(*data)) for template, data in jobs]


def _insert_traced(
    schema: str, jobs: Sequence[NewJob], notify: bool, trace: str
) -> Operation[list[JobId | None]]:
    jobs = _encoded(jobs)
    if len(jobs) > 1 or jobs[0][0].concurrency_key is not None:
        return (yield from _insert_many(schema, jobs, notify, trace))
    template, data = jobs[0]
    rows = yield queries(schema).insert_job_traced, _params(schema, template, data, notify, trace)
    return [JobId(rows[0]["id"], rows[0]["uid"]) if rows else None]


def _insert_with_keyed(
    schema: str, jobs: Sequence[NewJob], notify: bool, trace: str | None
) -> Operation[list[JobId | None]]:
    """The jobs without a window as usual, then each keyed job in a statement of its own (in input
    order, so that of two debounced enqueues of one key in a batch, the later's data wins)."""
    ids: list[JobId | None] = [None] * len(jobs)
    # Encoded before anything is sent: bad data must not leave the jobs before it written.
    keyed = [(n, _params(schema, t, data, notify, trace)) for n, (t, data) in enumerate(jobs) if t.keyed]
    plain = [n for n, (template, _) in enumerate(jobs) if not template.keyed]
    if plain:
        inserted = yield from insert_jobs(schema, [jobs[n] for n in plain], notify, trace)
        for n, job_id in zip(plain, inserted, strict=True):
            ids[n] = job_id
    q = queries(schema)
    for n, params in keyed:
        throttled = jobs[n][0].unique_for is not None
        rows = yield (q.insert_throttled_job if throttled else q.insert_debounced_job), params
        ids[n] = JobId(rows[0]["id"], rows[0]["uid"], rows[0]["created"])
    return ids


def _insert_many(
    schema: str, jobs: Sequence[NewJob], notify: bool, trace: str | None
) -> Operation[list[JobId | None]]:
    params: dict[str, Any] = {
        name: [getattr(template, name) for template, _ in jobs] for name in _MANY_FIELDS
    }
    params.update(data=[data for _, data in jobs], channel=channel(schema), notify=notify, trace=trace)
    rows = yield queries(schema).insert_jobs, params
    if len(rows) == len(jobs):
        return [JobId(row["id"], row["uid"]) for row in rows]
    # Some unique keys were taken: match the rows that were inserted back to their jobs.
    by_key = {
        row["unique_key"]: JobId(row["id"], row["uid"]) for row in rows if row["unique_key"] is not None
    }
    plain = iter(JobId(row["id"], row["uid"]) for row in rows if row["unique_key"] is None)
    ids: list[JobId | None] = []
    for template, _ in jobs:
        if template.unique_key is None:
            ids.append(next(plain))
        else:
            ids.append(by_key.pop(template.unique_key, None))
    return ids


def _copy_jobs(
    schema: str, jobs: Sequence[NewJob], templates: list[JobTemplate], notify: bool
) -> Operation[list[JobId | None]]:
    q = queries(schema)
    rows = yield q.reserve_job_ids, {"n": len(jobs)}
    ids: list[int] = rows[0]["ids"]
    at_once = all(template.runs_at_once for template in templates)
    # Delays count from the reservation's now(); jobs that run at once take the COPY's.
    now: datetime | None = None if at_once else rows[0]["now"]
    suffixes = {id(template): template.copy_suffix(now) for template in templates}
    made: list[JobId | None] = []
    lines = _copy_lines(jobs, ids, rows[0]["now"], suffixes, made)
    yield CopyIn(q.copy_jobs_now if at_once else q.copy_jobs, lines), None
    if notify:
        queues = sorted({template.queue for template in templates})
        yield q.notify, {"channel": channel(schema), "queues": queues}
    return made


def _copy_lines(
    jobs: Sequence[NewJob],
    ids: Sequence[int],
    at: datetime,
    suffixes: dict[int, str],
    made: list[JobId | None],
    rows: int = 2000,
) -> Iterator[str]:
    """The jobs as COPY text lines, ``rows`` lines a chunk, each job's uid made from its id as the
    database's ``job_uid(id)`` makes them (COPY returns no rows), as 32 hex digits.

    The jobs' ids for the caller are appended to ``made`` a chunk at a time, after the chunk
    has gone: while PostgreSQL loads it, which takes longer than making them. (The first chunk
    is small, for the server to start sooner.)"""
    start, end = 0, min(rows // 4, len(jobs))
    while start < len(jobs):
        chunk_ids = ids[start:end]
        uids = job_uids_hex(chunk_ids, at)
        lines = []
        for job_id, uid, (template, data) in zip(chunk_ids, uids, jobs[start:end], strict=True):
            if type(data) is not str:
                data = encode_data(*data)
            if "\\" in data:  # COPY's text format reads a backslash as an escape
                data = data.replace("\\", "\\\\")
            lines.append(f"{job_id}\t{uid}\t{data}\t{suffixes[id(template)]}\n")
        yield "".join(lines)
        made.extend(map(JobId, chunk_ids, uids))
        start, end = end, end + rows
