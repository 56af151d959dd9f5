"""An app for the lifecycle acceptance tests: each step writes when it started and finished."""

from __future__ import annotations

import asyncio
import os

from ledger_app import _ledger

import pgqueue

app = pgqueue.App()

STEPS_DDL = """
CREATE TABLE IF NOT EXISTS steps (
    job_id   bigint PRIMARY KEY,
    name     text NOT NULL,
    pid      integer NOT NULL,
    started  timestamptz NOT NULL,
    finished timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


@app.task("step", queue="flow", max_attempts=1)
async def step(name: str, fail: bool = False, sleep: float = 0.01) -> str:
    conn = await _ledger()  # ledger_app's connection: the same database
    started = (await (await conn.execute("SELECT clock_timestamp()")).fetchone() or [None])[0]
    await asyncio.sleep(sleep)
    if fail:
        raise RuntimeError(f"step {name} failed")
    job = pgqueue.current_job()
    await conn.execute(
        "INSERT INTO steps (job_id, name, pid, started) VALUES (%s, %s, %s, %s)",
        (job.id, name, os.getpid(), started),
    )
    return name


@app.task("flaky", queue="flow", max_attempts=2, retry_delay=0, dead_letter="flow-dead")
async def flaky(n: int) -> int:
    raise RuntimeError(f"flaky {n} failed")
