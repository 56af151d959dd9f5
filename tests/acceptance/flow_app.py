"""An app for the flow-control acceptance tests: every run is written to a spans table, with its
start and end on the database's clock, so that a test can sweep them for overlaps."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import psycopg

import pgqueue

app = pgqueue.App()

SPANS_DDL = """
CREATE TABLE IF NOT EXISTS spans (
    job_id  bigint NOT NULL,
    attempt integer NOT NULL,
    type    text NOT NULL,
    key     text,
    pid     integer NOT NULL,
    started timestamptz NOT NULL,
    ended   timestamptz
)
"""

_conn: psycopg.AsyncConnection[Any] | None = None


async def _spans() -> psycopg.AsyncConnection[Any]:
    global _conn
    if _conn is None or _conn.closed:
        _conn = await psycopg.AsyncConnection.connect(app.database_url, autocommit=True)
    return _conn


async def _span(key: str | None, seconds: float) -> None:
    """Record the run's start, sleep, record its end (both on the database's clock)."""
    job = pgqueue.current_job()
    conn = await _spans()
    await conn.execute(
        "INSERT INTO spans (job_id, attempt, type, key, pid, started) "
        "VALUES (%s, %s, %s, %s, %s, clock_timestamp())",
        (job.id, job.attempt, job.type, key, os.getpid()),
    )
    await asyncio.sleep(seconds)
    await conn.execute(
        "UPDATE spans SET ended = clock_timestamp() WHERE job_id = %s AND attempt = %s", (job.id, job.attempt)
    )


@app.task("scarce", queue="flow", global_concurrency=4)
async def scarce(seconds: float = 0.2) -> None:
    await _span(None, seconds)


@app.task("tenant", queue="flow", key_concurrency=2)
async def tenant(key: str, seconds: float = 0.2) -> None:
    await _span(key, seconds)


@app.task("plenty", queue="flow")
async def plenty() -> None:
    await _span(None, 0.0)


@app.task("paced", queue="paced", rate_limit="20/s")
async def paced() -> None:
    pass


@app.task("stuck", queue="stuck", global_concurrency=2, max_attempts=3, retry_delay=0)
async def stuck(first_attempt_sleep: float) -> None:
    """Sleeps long on its first attempt (to be killed there), not after."""
    await _span(None, first_attempt_sleep if pgqueue.current_job().attempt == 1 else 0.0)


@app.task("fair-sync", queue="fair", fair=True)
async def fair_sync(key: str) -> None:
    await _span(key, 0.01)
