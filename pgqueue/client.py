"""Database operations, written once for both sync and async connections.

Each operation is a generator: it yields ``(statement, params)`` pairs, receives each
statement's rows back, and returns its result. :func:`run` drives one on a
``psycopg.Connection``, :func:`arun` on an ``AsyncConnection``; only those two do I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generator, Iterable, Iterator, NamedTuple, Sequence, TypeVar

import psycopg
from psycopg import sql
from psycopg.pq import ExecStatus
from psycopg.rows import dict_row, tuple_row

from .connections import AsyncPooledConnection, PooledConnection
from .errors import JobNotFound, LeaseLost
from .job import Job, encode_data
from .migrate import check_version
from .sql import channel, queries

T = TypeVar("T")
Rows = list[Any]
"""A statement's rows: dicts for a statement with named parameters, tuples for positional ones."""
Operation = Generator["tuple[sql.Composable | CopyIn, dict[str, Any] | tuple[Any, ...] | None]", Rows, T]


@dataclass(frozen=True)
class CopyIn:
    """A ``COPY ... FROM STDIN`` statement and its data, for an operation to yield in place of a query.

    The data comes in chunks of text (encoded in the connection's encoding), sent as they are
    made: PostgreSQL loads the first rows while the client still formats the last ones.
    """

    statement: sql.Composable
    chunks: Iterable[str]


def run(conn: psycopg.Connection[Any], operation: Operation[T]) -> T:
    """Run an operation on a sync connection.

    Statements with named parameters (a dict, or None) give their rows as dicts; those with
    positional parameters (a tuple) give tuples, which cost less on the hot enqueue path.
    """
    kept = isinstance(conn, PooledConnection)
    cur = conn.kept_cursor() if kept else conn.cursor()
    try:
        statement, params = next(operation)
        while True:
            rows: Rows = []
            if isinstance(statement, CopyIn):
                with cur.copy(statement.statement) as copy:
                    for chunk in statement.chunks:
                        copy.write(chunk)
            else:
                factory = tuple_row if type(params) is tuple else dict_row
                if cur.row_factory is not factory:
                    cur.row_factory = factory  # type: ignore[assignment]
                cur.execute(statement, params)
                if _has_rows(cur):
                    rows = cur.fetchall()
            statement, params = operation.send(rows)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        if not kept:
            cur.close()


async def arun(conn: psycopg.AsyncConnection[Any], operation: Operation[T]) -> T:
    """Run an operation on an async connection (rows as :func:`run` gives them)."""
    kept = isinstance(conn, AsyncPooledConnection)
    cur = conn.kept_cursor() if kept else conn.cursor()
    try:
        statement, params = next(operation)
        while True:
            rows: Rows = []
            if isinstance(statement, CopyIn):
                async with cur.copy(statement.statement) as copy:
                    for chunk in statement.chunks:
                        await copy.write(chunk)
            else:
                factory = tuple_row if type(params) is tuple else dict_row
                if cur.row_factory is not factory:
                    cur.row_factory = factory  # type: ignore[assignment]
                await cur.execute(statement, params)
                if _has_rows(cur):
                    rows = await cur.fetchall()
            statement, params = operation.send(rows)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        if not kept:
            await cur.close()


def _has_rows(cur: Any) -> bool:
    # Cheaper than cur.description, which builds a Column object per column on each call.
    result = cur.pgresult
    return result is not None and result.status == ExecStatus.TUPLES_OK


# --- producers -------------------------------------------------------------------------


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
    values: tuple[Any, ...] = field(init=False, repr=False, compare=False)
    """The parameters of ``insert_job`` after the data, in its order."""

    def __post_init__(self) -> None:
        values = (self.type, self.queue, self.priority, self.max_attempts, self.run_at, self.delay,
                  self.retry_delay, self.retry_backoff, self.retry_delay_max, self.timeout)
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


_TEMPLATE_FIELDS = tuple(name for name in JobTemplate.__dataclass_fields__ if name != "values")


def check_schema(schema: str) -> Operation[None]:
    """Raise SchemaOutOfDate unless the schema is at the version this code expects.

    Reads the catalog first, so a missing schema never aborts the caller's transaction.
    """
    rows = yield queries(schema).schema_version_table, {"schema": schema}
    version = None
    if rows[0]["present"]:
        rows = yield queries(schema).schema_version, None
        version = rows[0]["version_num"] if rows else None
    check_version(version, schema)


def insert_jobs(schema: str, jobs: Sequence[NewJob], notify: bool = True) -> Operation[list[int | None]]:
    """Insert jobs; return their ids in input order (None where a unique key was taken).

    With ``notify``, the workers of each queue are woken once, on commit. One job is one
    statement; many are one ``INSERT ... unnest`` (or, for large batches without unique
    keys, a ``COPY`` of rows whose ids were reserved first): one round trip for thousands.
    """
    if not jobs:
        return []
    q = queries(schema)
    if len(jobs) >= COPY_MIN_JOBS and all(template.unique_key is None for template, _ in jobs):
        return (yield from _copy_jobs(schema, jobs, notify))
    jobs = [(template, data if type(data) is str else encode_data(*data)) for template, data in jobs]
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
    params = {name: [getattr(template, name) for template, _ in jobs] for name in _TEMPLATE_FIELDS}
    params.update(data=[data for _, data in jobs], channel=channel(schema), notify=notify)
    rows = yield q.insert_jobs, params
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
        for job_id, (template, data) in zip(ids[start:start + rows], jobs[start:start + rows]):
            if type(data) is not str:
                data = encode_data(*data)
            if "\\" in data:  # COPY's text format reads a backslash as an escape
                data = data.replace("\\", "\\\\")
            lines.append(f"{job_id}\t{data}\t{suffixes[id(template)]}\n")
        yield "".join(lines)


def _checked_id(job_id: Any) -> int:
    # Refused here: a text id would reach PostgreSQL as a failed cast and abort the caller's transaction.
    if isinstance(job_id, bool) or not isinstance(job_id, int):
        raise JobNotFound(f"no job with id {job_id!r}: job ids are integers")
    return job_id


def get_job(schema: str, job_id: int) -> Operation[Job]:
    """The job with that id; JobNotFound if there is none."""
    rows = yield queries(schema).get_job, {"id": _checked_id(job_id)}
    if not rows:
        raise JobNotFound(f"no job with id {job_id}")
    return Job.from_row(rows[0])


def cancel_job(schema: str, job_id: int) -> Operation[bool]:
    """Cancel a job that has not finished; False if it had already finished."""
    rows = yield queries(schema).cancel, {"id": _checked_id(job_id)}
    if not rows:
        yield from get_job(schema, job_id)  # raises JobNotFound for an unknown id
    return bool(rows)


def retry_job(schema: str, job_id: int, notify: bool = True) -> Operation[bool]:
    """Run a failed or cancelled job again; False if it was in another state."""
    rows = yield queries(schema).retry, {"id": _checked_id(job_id)}
    if not rows:
        yield from get_job(schema, job_id)
        return False
    if notify:
        yield queries(schema).notify, {"channel": channel(schema), "queues": [rows[0]["queue"]]}
    return True


def counts(schema: str) -> Operation[dict[str, dict[str, int]]]:
    """Jobs per queue and state."""
    rows = yield queries(schema).counts, None
    result: dict[str, dict[str, int]] = {}
    for row in rows:
        result.setdefault(row["queue"], {})[row["state"]] = row["jobs"]
    return result


_ESCAPED_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")
_SURROGATE = re.compile("[\ud800-\udfff]")


def encode_output(value: Any) -> str | None:
    """A handler's return value as JSON text that PostgreSQL accepts.

    Values JSON cannot carry are stored as ``{"repr": ...}``; NUL characters and lone
    surrogates, which jsonb refuses, become U+FFFD.
    """
    if value is None:
        return None
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        try:
            shown = repr(value)[:10_000]
        except Exception:  # noqa: BLE001 - a handler's output must never take the worker down
            shown = f"<unrepresentable {type(value).__name__}>"
        text = json.dumps({"repr": shown}, ensure_ascii=False)
    text = _SURROGATE.sub("\ufffd", text)
    return _ESCAPED_NUL.sub(lambda m: m.group(1) + "\\ufffd", text)


def workers(schema: str) -> Operation[Rows]:
    """The rows of the worker registry, newest first."""
    return (yield queries(schema).workers, None)


# --- completion in the handler's own transaction -----------------------------------------


def complete_job(
    schema: str, job_id: int, lease_id: Any, output: Any, duration: float | None
) -> Operation[None]:
    """Complete one job under its claim's lease, on the caller's connection and in its open
    transaction (nothing is committed here): the caller's writes and the completion commit
    together, or neither does.

    Raises LeaseLost, having written nothing, when the lease is no longer the job's (rescued
    after it expired, cancelled, or completed already); the caller's transaction stays usable
    but should be rolled back, which letting the error propagate does.
    """
    rows = yield queries(schema).complete, {
        "id": job_id, "lease_id": str(lease_id), "output": encode_output(output), "duration": duration,
    }
    if not rows:
        raise LeaseLost(
            f"job {job_id}: this attempt no longer holds the job (rescued after its lease expired, "
            "cancelled, or completed already); roll back so that its effects are not written"
        )
