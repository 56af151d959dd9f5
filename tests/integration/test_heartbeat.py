"""The heartbeat when the database is slow to answer it."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from inprocess import Running, until

import pgqueue

pytestmark = pytest.mark.timeout(60)

HEARTBEAT = """
SELECT pid, wait_event_type FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'pgqueue-heartbeat'
"""


def heartbeat_backend(conn: psycopg.Connection[Any]) -> tuple[int, str | None] | None:
    row = conn.execute(HEARTBEAT).fetchone()
    return (row[0], row[1]) if row else None


def renewed(conn: psycopg.Connection[Any], job_id: int) -> bool:
    return bool(conn.execute(
        "SELECT lease_expires_at - now() > interval '5 s' FROM pgqueue.job WHERE id = %s", (job_id,)
    ).fetchone()[0])


async def test_a_beat_held_up_past_its_interval_waits_for_its_answer_and_renews(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any], warnings_logged: Any
) -> None:
    """Leases of 6 s, renewed every 2 s: a beat held up for 3 s (behind a lock here; in a pooler's
    queue or on a starved machine in production) is still in time for its leases, which lapse 4 s
    after it starts. It waits for its answer: it is not cancelled after one interval, its connection
    is not replaced, nothing is logged, and the job it renews runs once."""
    release = asyncio.Event()

    @app.task("long")
    async def long() -> str:
        await asyncio.wait_for(release.wait(), 30)
        return "done"

    job_id = long.enqueue()
    async with Running(app, lease_seconds=6, rescue_interval=0.2) as worker:
        await until(lambda: app.get_job(job_id).state is pgqueue.JobState.ACTIVE)
        await until(lambda: heartbeat_backend(conn) is not None)
        before = heartbeat_backend(conn)
        assert before is not None
        async with await psycopg.AsyncConnection.connect(dsn) as blocker:
            # The beat's first statement updates the worker's row: it waits behind this lock.
            await blocker.execute("SELECT FROM pgqueue.worker WHERE id = %s FOR UPDATE", (worker.worker_id,))
            await until(lambda: heartbeat_backend(conn) == (before[0], "Lock"), timeout=5)
            await asyncio.sleep(3.0)
        # The beat that waited renews the lease (to 6 s from now) on the connection it waited on.
        await until(lambda: renewed(conn, job_id), timeout=2)
        assert heartbeat_backend(conn) == (before[0], "Client")
        release.set()
        await until(lambda: app.get_job(job_id).state is pgqueue.JobState.COMPLETED)
    job = app.get_job(job_id)
    assert job.attempts == 1 and job.errors == [] and job.output == "done"
    assert warnings_logged() == []
