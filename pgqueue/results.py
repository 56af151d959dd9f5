"""Waiting for a job's result (mixed into :class:`pgqueue.App`): woken by a notification when
jobs finish, never by polling in a loop.

Each wait LISTENs on ``<schema>_done`` on a connection of its own, registers as a waiter
(workers announce finished jobs only while one is registered), then reads the job: a job that
finished before the registration is seen by that read, one that finishes after by the
notification its finishing statement sends on commit. Every ``RECHECK`` seconds without a
notification for the job, the row is read again anyway (a job deleted meanwhile gives
JobNotFound).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import psycopg

from .db.driver import arun, run
from .db.ops import resolve_job_id
from .db.results import PENDING, announces, job_result, listen_done

RECHECK = 30.0
"""Seconds a wait goes without a notification for its job before it reads the job's row again."""


class _Host(Protocol):
    schema: str

    @property
    def database_url(self) -> str: ...

    def connect_kwargs(self, application_name: str = ...) -> dict[str, Any]: ...


def _left(deadline: float | None, job_id: int, timeout: float | None) -> float:
    if deadline is None:
        return RECHECK
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"job {job_id} did not finish within {timeout:g} s")
    return min(left, RECHECK)


class ResultMethods:
    """:meth:`wait_for` and :meth:`await_result`."""

    def wait_for(self: _Host, job: Any, timeout: float | None = None) -> Any:
        """Wait until the job (its id or uid) finishes and return its output.

        Raises :class:`pgqueue.JobFailed` (its ``error`` is the recorded error) when it failed for
        good, :class:`pgqueue.JobCancelled` when it was cancelled, :class:`pgqueue.JobNotFound` for
        an unknown id, and ``TimeoutError`` after ``timeout`` seconds (the job is left alone). A job
        waiting to be retried has not finished. Holds one database connection while it waits.

        >>> job_id = render.enqueue(doc=7)
        >>> app.wait_for(job_id, timeout=60)
        {'pages': 10}
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with psycopg.connect(self.database_url, **self.connect_kwargs("pgqueue-wait")) as conn:
            job_id = run(conn, resolve_job_id(self.schema, job))
            run(conn, listen_done(self.schema))
            while True:
                output = run(conn, job_result(self.schema, job_id))
                if output is not PENDING:
                    return output
                for note in conn.notifies(timeout=_left(deadline, job_id, timeout)):
                    if announces(note.payload, job_id):
                        break

    async def await_result(self: _Host, job: Any, timeout: float | None = None) -> Any:
        """:meth:`wait_for` for async code.

        >>> output = await app.await_result(job_id, timeout=60)
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        conn = await psycopg.AsyncConnection.connect(self.database_url, **self.connect_kwargs("pgqueue-wait"))
        async with conn:
            job_id = await arun(conn, resolve_job_id(self.schema, job))
            await arun(conn, listen_done(self.schema))
            while True:
                output = await arun(conn, job_result(self.schema, job_id))
                if output is not PENDING:
                    return output
                async for note in conn.notifies(timeout=_left(deadline, job_id, timeout)):
                    if announces(note.payload, job_id):
                        break
