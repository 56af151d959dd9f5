"""Bounded under churn: 200,000 jobs enqueued, run and pruned (retention 0, the vacuum duty on,
as on this suite's server without autovacuum) leave the job table within a fixed size, far below
what those jobs' rows take."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue.worker import Worker, WorkerConfig

TOTAL = 200_000
BATCH = 5_000
BACKLOG = 20_000
BOUND = 48 * 1024 * 1024
"""The job table with its indexes stays under 48 MiB (with a backlog of up to 25,000 waiting jobs):
200,000 of these jobs take 39 MiB waiting, 72 MiB once completed if never pruned (measured on
PostgreSQL 15). Where it levels off depends on the machine: the dead rows a vacuum pass finds are
the jobs of one vacuum interval, so a faster machine leaves a larger table (21-38 MiB at
15,000-20,000 jobs a second on 2 cores)."""
GROWTH = 1.5
"""The second 100,000 jobs leave the table at most half as large again as the first 100,000 did:
one whose dead rows were never reclaimed would grow with every job, to twice its size or more."""


def sizes(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    row = conn.execute(
        "SELECT pg_total_relation_size('pgqueue.job'), (SELECT count(*) FROM pgqueue.job WHERE state < 'active')"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_the_job_table_stays_bounded_through_200000_jobs_of_churn(
    app: pgqueue.App, conn: psycopg.Connection[Any], dsn: str
) -> None:
    if conn.execute("SHOW autovacuum").fetchone() == ("on",):
        conn.execute("ALTER TABLE pgqueue.job SET (autovacuum_enabled = off)")

    @app.task("churn")
    async def churn(n: int) -> None: ...

    enqueued = [0]

    def produce() -> None:
        with psycopg.connect(dsn, autocommit=True) as watch:
            while enqueued[0] < TOTAL:
                if sizes(watch)[1] > BACKLOG:
                    time.sleep(0.05)
                    continue
                churn.enqueue_many([{"n": enqueued[0] + i} for i in range(BATCH)])
                enqueued[0] += BATCH

    producer = threading.Thread(target=produce, daemon=True)
    config = WorkerConfig(
        poll_interval=0.2, concurrency=200, completed_retention=0, prune_interval=0.5, vacuum_interval=1
    )
    worker = Worker(app.runtime(), config)
    running = asyncio.create_task(worker.run())
    started = time.monotonic()
    producer.start()
    largest = [0, 0]  # over the first 100,000 jobs enqueued, and over the rest
    try:
        while True:
            size, waiting = sizes(conn)
            half = int(enqueued[0] > TOTAL // 2)
            largest[half] = max(largest[half], size)
            done = conn.execute("SELECT count(*) FROM pgqueue.job WHERE state < 'completed'").fetchone()
            if enqueued[0] >= TOTAL and done == (0,):
                break
            assert not running.done(), running.result()
            assert time.monotonic() - started < 540, f"{enqueued[0]} enqueued, {waiting} waiting"
            await asyncio.sleep(0.25)
    finally:
        worker.stop()
        await asyncio.wait_for(running, timeout=30)
        producer.join(30)
    elapsed = time.monotonic() - started
    completed = worker.stats.get("completed", 0)
    first, second = (size / 2**20 for size in largest)
    print(f"churn: {completed} jobs in {elapsed:.1f} s, job table at most {first:.1f} MiB, then {second:.1f}")
    assert completed == TOTAL
    assert max(largest) < BOUND, f"the job table reached {max(first, second):.1f} MiB"
    assert second < GROWTH * first, f"the job table kept growing: {first:.1f} MiB, then {second:.1f} MiB"
