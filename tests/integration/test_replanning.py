"""The worker plans its statements again as the job table grows: a generic plan made while the
table was a few pages reads the whole table for each claim's and each outcome's rows."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
import pytest
from inprocess import Running, until

import pgqueue
from pgqueue.db import _pool_sync
from pgqueue.db.sql import queries
from pgqueue.worker import Worker, WorkerConfig
from pgqueue.worker.database import SMALLEST, Replanning
from pgqueue.worker.vacuum import PlanWatch

pytestmark = pytest.mark.timeout(90)


def seq_tuples_read(conn: psycopg.Connection[Any]) -> int:
    """Rows of the job table read by sequential scans, as far as the statistics have them."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT seq_tup_read FROM pg_stat_user_tables WHERE relid = 'pgqueue.job'::regclass"
    ).fetchone()
    assert row is not None
    return int(row[0])


def completed(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM pgqueue.job WHERE state = 'completed'").fetchone()
    assert row is not None
    return int(row[0])


async def test_a_worker_plans_again_once_the_job_table_has_grown(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    """One job at a time on a near-empty table: the worker's statements are prepared, and their
    generic plans made for a table of a page or two. Then 100,000 finished jobs are kept: the
    worker notices the growth, its connections drop their plans, and the 2,000 jobs that follow
    are claimed and completed without reading the table whole (with the old plans, every claim
    and every outcome read all 100,000 rows)."""

    @app.task("noop")
    async def noop(n: int) -> None: ...

    # Rescue and pruning look at the table once, at start: their plans for a table without
    # statistics may rightly read it whole.
    async with Running(app, concurrency=10, rescue_interval=3600, prune_interval=3600) as worker:
        for n in range(40):
            noop.enqueue(n=n)
            await until(lambda n=n: worker.stats["completed"] == n + 1)
        epoch = worker.db.replanning.epoch
        before = seq_tuples_read(conn)
        conn.execute(
            "INSERT INTO pgqueue.job (type, queue, data, state, attempts, finished_at) "
            "SELECT 'noop', 'default', '{}'::jsonb, 'completed', 1, now() FROM generate_series(1, 100000)"
        )
        await until(lambda: worker.db.replanning.epoch > epoch)
        noop.enqueue_many([{"n": n} for n in range(2000)])
        await until(lambda: worker.stats["completed"] == 2040, timeout=60)
    # The worker's connections are closed: their statistics are all in.
    await asyncio.sleep(0.5)
    # A claim that set out before the worker noticed may still read the table whole (twice); with
    # the old plans, each of the 200-odd claims and outcomes of the 2,000 jobs did.
    read = seq_tuples_read(conn) - before
    assert read < 1_000_000, f"{read} rows read by sequential scans: plans kept for a tiny table"
    assert completed(conn) == 102_040


def test_a_worker_looks_at_the_table_size_every_poll_interval_at_most_every_second(app: pgqueue.App) -> None:
    """As often as it polls (every second at most): a fleet of hundreds polling every 5 s through a
    pooler had half its idle load on this one query when every worker looked every second."""

    @app.task("noop")
    async def noop() -> None: ...

    for poll, every in ((0.2, 1.0), (1.0, 1.0), (5.0, 5.0)):
        worker = Worker(app.runtime(), WorkerConfig(poll_interval=poll, listen=False))
        (watch,) = [service for service in worker.services if isinstance(service, PlanWatch)]
        assert watch.interval == every, poll


def test_the_table_must_double_past_its_smallest_size_to_plan_again() -> None:
    replanning = Replanning(queries("pgqueue").discard_plans)
    page = 8192
    sizes = [page, 2 * page, 31 * page, SMALLEST, SMALLEST + page, 2 * SMALLEST - page, 2 * SMALLEST]
    assert [replanning.table_size(size) for size in sizes] == [False, False, False, True, False, False, True]
    assert replanning.epoch == 2
    # Shrunk (pruned), then grown again: twice its smallest size since the last time is enough.
    again = [replanning.table_size(size) for size in (SMALLEST, SMALLEST // 2, SMALLEST)]
    assert again == [False, False, True]
    assert replanning.epoch == 3


async def test_a_connection_drops_its_plans_once_per_growth(dsn: str) -> None:
    """Each connection runs DISCARD PLANS once after the table has grown, before its next
    statement, and not again until it grows once more; a connection new to the worker has no
    plans to drop."""
    replanning = Replanning(queries("pgqueue").discard_plans)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("PREPARE one AS SELECT count(*) FROM pgqueue.job")
        for _ in range(7):  # a generic plan, kept by the statement
            await conn.execute("EXECUTE one")

        async def generic_plans() -> int:
            cur = await conn.execute("SELECT generic_plans FROM pg_prepared_statements WHERE name = 'one'")
            return int((await cur.fetchone())[0])  # type: ignore[index]

        await replanning.refresh(conn)  # first seen: nothing to drop
        await conn.execute("EXECUTE one")
        kept = await generic_plans()
        assert replanning.table_size(8192) is False and replanning.table_size(SMALLEST) is True
        await replanning.refresh(conn)
        await replanning.refresh(conn)  # once only
        await conn.execute("EXECUTE one")
        assert await generic_plans() == kept + 1  # the plan was made again, not reused


def test_the_apps_connections_plan_again_after_a_while(
    dsn: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A web server's App looks jobs up for as long as it runs. Its connections' plans for
    get_job, made while the table held three jobs, read the table whole once it holds 100,000;
    a connection drops its plans every PLANS_KEPT seconds, and then looks up by the index again."""
    app = pgqueue.App(dsn)
    try:
        ids = [app.enqueue("t", {"n": n}) for n in range(3)]
        conn.execute("ANALYZE pgqueue.job")  # as autovacuum, or a worker's statistics watch, would
        for _ in range(12):  # prepared, and a generic plan made for a one-page table
            assert app.get_job(ids[0]).id == ids[0]  # type: ignore[union-attr]
        conn.execute(
            "INSERT INTO pgqueue.job (type, queue, data, state, attempts, finished_at) "
            "SELECT 't', 'default', '{}'::jsonb, 'completed', 1, now() FROM generate_series(1, 100000)"
        )
        before = seq_tuples_read(conn)
        monkeypatch.setattr(_pool_sync, "PLANS_KEPT", 0.0)  # the time has come
        for _ in range(20):
            assert app.get_job(ids[1]).id == ids[1]  # type: ignore[union-attr]
    finally:
        app.close()  # its connections' statistics are all in once they end
    time.sleep(0.5)
    read = seq_tuples_read(conn) - before
    assert read < 100_000, f"{read} rows read by sequential scans: get_job kept its plan for a tiny table"
