"""An app for acceptance tests: every execution is written to a ledger table.

The ledger's unique (job_id, attempt) constraint turns a double execution of the same
claim into a visible failure.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import psycopg

import pgqueue

app = pgqueue.App()

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS ledger (
    job_id  bigint NOT NULL,
    attempt integer NOT NULL,
    pid     integer NOT NULL,
    at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (job_id, attempt)
)
"""

_conn: psycopg.AsyncConnection[Any] | None = None


async def _ledger() -> psycopg.AsyncConnection[Any]:
    global _conn
    if _conn is None or _conn.closed:
        _conn = await psycopg.AsyncConnection.connect(app.database_url, autocommit=True)
    return _conn


async def _record() -> pgqueue.JobContext:
    job = pgqueue.current_job()
    conn = await _ledger()
    await conn.execute(
        "INSERT INTO ledger (job_id, attempt, pid) VALUES (%s, %s, %s)", (job.id, job.attempt, os.getpid())
    )
    return job


@app.task("record", queue="acceptance")
async def record(n: int) -> int:
    await _record()
    return n


@app.task("loop", queue="acceptance")
async def loop() -> str:
    """The package of the event loop the worker runs its handlers on: asyncio or uvloop."""
    await _record()
    return type(asyncio.get_running_loop()).__module__.partition(".")[0]


@app.task("hold", queue="acceptance", max_attempts=5, retry_delay=0)
async def hold(first_attempt_sleep: float, later_sleep: float = 0.0) -> dict:
    """Sleeps long on the first attempt (to be killed or stalled there), briefly after."""
    job = await _record()
    await asyncio.sleep(first_attempt_sleep if job.attempt == 1 else later_sleep)
    return {"attempt": job.attempt, "pid": os.getpid()}
