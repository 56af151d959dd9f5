"""Database operations, written once for both sync and async connections.

Each operation is a generator: it yields ``(statement, params)`` pairs, receives each
statement's rows back, and returns its result. :func:`run` drives one on a
``psycopg.Connection``, :func:`arun` on an ``AsyncConnection``; only those two do I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Generator, Sequence, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from .errors import JobNotFound
from .job import Job
from .migrate import check_version
from .sql import queries

T = TypeVar("T")
Rows = list[dict[str, Any]]
Operation = Generator["tuple[sql.Composable, dict[str, Any] | None]", Rows, T]


def run(conn: psycopg.Connection[Any], operation: Operation[T]) -> T:
    """Run an operation on a sync connection."""
    try:
        statement = next(operation)
        while True:
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(*statement)
                rows = cur.fetchall() if cur.description else []
            statement = operation.send(rows)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def arun(conn: psycopg.AsyncConnection[Any], operation: Operation[T]) -> T:
    """Run an operation on an async connection."""
    try:
        statement = next(operation)
        while True:
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(*statement)
                rows = await cur.fetchall() if cur.description else []
            statement = operation.send(rows)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def channel(schema: str) -> str:
    """The one LISTEN/NOTIFY channel of a schema; payloads are queue names."""
    return f"{schema}_jobs"


# --- producers -------------------------------------------------------------------------


@dataclass(frozen=True)
class NewJob:
    """A validated job ready to insert: data already encoded as JSON text."""

    type: str
    queue: str
    data: str
    priority: int
    max_attempts: int
    run_at: Any = None
    delay: float | None = None
    retry_delay: float | None = None
    retry_backoff: bool | None = None
    retry_delay_max: float | None = None
    timeout: float | None = None
    unique_key: str | None = None


_NEW_JOB_FIELDS = tuple(NewJob.__dataclass_fields__)


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
    """Insert jobs in one statement; return their ids in input order (None where a unique key was taken)."""
    if not jobs:
        return []
    params: dict[str, Any] = {name: [getattr(job, name) for job in jobs] for name in _NEW_JOB_FIELDS}
    params["channel"] = channel(schema)
    params["notify"] = notify
    rows = yield queries(schema).insert_jobs, params
    if len(rows) == len(jobs):
        return [row["id"] for row in rows]
    # Some unique keys were taken: match the rows that were inserted back to their jobs.
    by_key = {row["unique_key"]: row["id"] for row in rows if row["unique_key"] is not None}
    plain = iter(row["id"] for row in rows if row["unique_key"] is None)
    ids: list[int | None] = []
    for job in jobs:
        if job.unique_key is None:
            ids.append(next(plain))
        else:
            ids.append(by_key.pop(job.unique_key, None))
    return ids


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
        text = json.dumps({"repr": repr(value)[:10_000]}, ensure_ascii=False)
    text = _SURROGATE.sub("\ufffd", text)
    return _ESCAPED_NUL.sub(lambda m: m.group(1) + "\\ufffd", text)


def workers(schema: str) -> Operation[Rows]:
    """The rows of the worker registry, newest first."""
    return (yield queries(schema).workers, None)
