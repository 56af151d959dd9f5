"""pgqueue's operations on the job table, written once for sync and async connections.

Each is a generator (see :mod:`pgqueue.db.operation`): :func:`pgqueue.db.driver.run` drives
one on a ``psycopg.Connection``, :func:`~pgqueue.db.driver.arun` on an ``AsyncConnection``.
Enqueueing lives in :mod:`pgqueue.db.insert`.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

from ..codec import encode_output
from ..errors import JobNotFound, LeaseLost
from ..job import Job, job_ref, uid_job_id
from .insert import COPY_MIN_JOBS, JobTemplate, NewJob, Unencoded, insert_jobs
from .operation import Operation, Rows
from .sql import channel, queries
from .version import check_version

__all__ = [
    "COPY_MIN_JOBS",
    "JobTemplate",
    "NewJob",
    "SchemaGate",
    "Unencoded",
    "cancel_job",
    "check_schema",
    "complete_job",
    "counts",
    "get_job",
    "insert_jobs",
    "resolve_job_id",
    "retry_job",
    "schema_version",
    "workers",
]

R = TypeVar("R")


# --- the schema's version ----------------------------------------------------------------


def schema_version(schema: str) -> Operation[str | None]:
    """The revision the schema is at, or None if pgqueue was never migrated there.

    Reads the catalog first, so a missing schema never aborts the caller's transaction.
    """
    rows = yield queries(schema).schema_version_table, {"schema": schema}
    if not rows[0]["present"]:
        return None
    rows = yield queries(schema).schema_version, None
    return rows[0]["version_num"] if rows else None


def check_schema(schema: str) -> Operation[None]:
    """Raise SchemaOutOfDate unless the schema is at the version this code expects."""
    check_version((yield from schema_version(schema)), schema)


class SchemaGate:
    """Checks the schema's version once, ahead of the first operation that passes through it
    (on whichever connection that runs), and lets later ones through untouched."""

    __slots__ = ("passed", "schema")

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.passed = False

    def checked(self, operation: Operation[R]) -> Operation[R]:
        if self.passed:
            return operation
        return self._checking(operation)

    def _checking(self, operation: Operation[R]) -> Generator[Any, Rows, R]:
        yield from check_schema(self.schema)
        self.passed = True
        return (yield from operation)


def replanned(schema: str, operation: Operation[R]) -> Generator[Any, Rows, R]:
    """``operation``, after the connection has dropped its plans (``DISCARD PLANS``).

    PostgreSQL keeps the generic plan it made for a prepared statement until its table is
    analyzed again. Made while the job table was a page or two, the plan of a look-up by id reads
    the whole table: once it held 100,000 jobs, ``get_job`` took 8.8 ms instead of 0.3 ms, on
    every connection of a long-lived App (a web server's), where autovacuum was off or had not
    analyzed the table yet. So each connection of the App's pool drops its plans every
    ``PLANS_KEPT`` seconds, and plans its statements again for the tables as they are."""
    yield queries(schema).discard_plans, ()
    return (yield from operation)


# --- look-ups and admin ------------------------------------------------------------------


def resolve_job_id(schema: str, job: Any) -> Operation[int]:
    """The id of the job named by its id (an int) or its uid (a UUID, or its text).

    Checked before any statement: a malformed reference would reach PostgreSQL as a failed cast
    and abort the caller's transaction. A uid costs one look-up; JobNotFound if no job has it.
    """
    ref = job_ref(job)
    if isinstance(ref, int):
        return ref
    rows = yield queries(schema).job_id_of, {"uid": ref, "id": uid_job_id(ref)}
    if not rows:
        raise JobNotFound(f"no job with uid {ref}")
    return int(rows[0]["id"])


def get_job(schema: str, job: Any) -> Operation[Job]:
    """The job with that id or uid; JobNotFound if there is none."""
    job_id = yield from resolve_job_id(schema, job)
    rows = yield queries(schema).get_job, {"id": job_id}
    if not rows:
        raise JobNotFound(f"no job with id {job_id}")
    return Job.from_row(rows[0])


def cancel_job(schema: str, job: Any) -> Operation[bool]:
    """Cancel a job that has not finished; False if it had already finished."""
    job_id = yield from resolve_job_id(schema, job)
    rows = yield queries(schema).cancel, {"id": job_id}
    if not rows:
        yield from get_job(schema, job_id)  # raises JobNotFound for an unknown id
    return bool(rows)


def retry_job(schema: str, job: Any, notify: bool = True) -> Operation[bool]:
    """Run a failed or cancelled job again; False if it was in another state."""
    job_id = yield from resolve_job_id(schema, job)
    rows = yield queries(schema).retry, {"id": job_id}
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
    rows = yield (
        queries(schema).complete,
        {
            "id": job_id,
            "lease_id": str(lease_id),
            "output": encode_output(output),
            "duration": duration,
        },
    )
    if not rows:
        raise LeaseLost(
            f"job {job_id}: this attempt no longer holds the job (rescued after its lease expired, "
            "cancelled, or completed already); roll back so that its effects are not written"
        )
