"""Running without autovacuum (this suite's server has it off): the warning at worker start, and the
opt-in vacuum duty, from one worker at a time, and only for the table's owner."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue.db.sql import grants, queries
from pgqueue.worker import Worker, WorkerConfig
from pgqueue.worker.database import WorkerDatabase
from pgqueue.worker.vacuum import (
    ANALYZED,
    BUSY,
    CLEAN,
    HAS_STATISTICS,
    NOT_OWNER,
    PENDING,
    VACUUMED,
    StatisticsWatch,
    VacuumDuty,
)

pytestmark = pytest.mark.timeout(60)

WARNING = "autovacuum is off for "
NOT_OWNER_LINE = "the vacuum duty stops"


def job_stats(conn: psycopg.Connection[Any]) -> tuple[int, Any]:
    row = conn.execute(
        "SELECT n_dead_tup, greatest(last_vacuum, last_autovacuum) FROM pg_stat_user_tables "
        "WHERE relid = 'pgqueue.job'::regclass"
    ).fetchone()
    assert row is not None
    return int(row[0]), row[1]


def make_dead_rows(dsn: str, conn: psycopg.Connection[Any], n: int = 3000) -> None:
    """Insert and delete ``n`` jobs, and wait until the statistics count their dead rows."""
    with psycopg.connect(dsn, autocommit=True) as churn:  # its statistics are flushed when it ends
        churn.execute(
            "INSERT INTO pgqueue.job (type, queue, data) "
            "SELECT 'noop', 'default', '{}'::jsonb FROM generate_series(1, %s)",
            (n,),
        )
        churn.execute("DELETE FROM pgqueue.job")
    deadline = time.monotonic() + 15
    while job_stats(conn)[0] < n:
        assert time.monotonic() < deadline, "the statistics never counted the dead rows"
        time.sleep(0.1)


def database(app: pgqueue.App) -> WorkerDatabase:
    return WorkerDatabase(app.runtime(), io_timeout=5.0, async_commit=False)


async def run_while(worker: Worker, condition: Any, timeout: float = 20) -> None:
    running = asyncio.create_task(worker.run())
    deadline = time.monotonic() + timeout
    try:
        while not condition():
            assert not running.done(), running.result()
            assert time.monotonic() < deadline, "condition not reached in time"
            await asyncio.sleep(0.1)
    finally:
        worker.stop()
        await asyncio.wait_for(running, timeout=15)


@pytest.fixture(autouse=True)
def no_autovacuum_on_the_job_table(conn: psycopg.Connection[Any]) -> None:
    """Where the server runs autovacuum (the embedded one does; the local one has it off), keep it
    off the job table, so that only the duty under test vacuums it, and the warning has a cause."""
    if conn.execute("SHOW autovacuum").fetchone() == ("on",):
        conn.execute("ALTER TABLE pgqueue.job SET (autovacuum_enabled = off)")


async def test_the_worker_warns_once_at_start_that_autovacuum_is_off(app, conn, caplog):
    started = time.monotonic()
    worker = Worker(app.runtime(), WorkerConfig(poll_interval=0.2, rescue_interval=0.2, prune_interval=0.2))
    await run_while(worker, lambda: time.monotonic() - started > 1.5)
    warnings = [r for r in caplog.records if WARNING in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert warnings[0].levelname == "WARNING"
    assert "--vacuum-interval" in warnings[0].getMessage()


async def test_the_warning_names_a_table_whose_autovacuum_is_disabled(app, conn, caplog):
    conn.execute("ALTER TABLE pgqueue.job SET (autovacuum_enabled = off)")
    await run_while(Worker(app.runtime(), WorkerConfig(poll_interval=0.2)), lambda: "autovacuum is off" in caplog.text)
    assert "table job" in caplog.text


async def test_the_vacuum_duty_vacuums_a_churned_job_table(app, conn, caplog):
    @app.task("noop")
    async def noop() -> None: ...

    caplog.set_level(logging.INFO, "pgqueue.worker")
    noop.enqueue_many([{} for _ in range(6000)])
    assert job_stats(conn)[1] is None
    config = WorkerConfig(
        poll_interval=0.2, concurrency=50, completed_retention=0, prune_interval=0.2, vacuum_interval=1
    )
    worker = Worker(app.runtime(), config)

    most_dead = [0]

    def vacuumed_after_the_churn() -> bool:
        left = conn.execute("SELECT count(*) FROM pgqueue.job").fetchone()
        dead, last_vacuum = job_stats(conn)
        most_dead[0] = max(most_dead[0], dead)
        return left == (0,) and last_vacuum is not None and dead < 1000

    await run_while(worker, vacuumed_after_the_churn, timeout=40)
    assert "vacuumed the job table" in caplog.text
    # 6,000 completions and deletions leave thousands of dead rows; the vacuums reclaim them.
    assert most_dead[0] > 1000
    assert "this worker's vacuum duty (every 1s) vacuums the job table" in caplog.text


async def test_one_worker_at_a_time_runs_the_vacuum(app, dsn, conn):
    make_dead_rows(dsn, conn)
    first, second = VacuumDuty(database(app), "pgqueue", 1.0), VacuumDuty(database(app), "pgqueue", 1.0)
    a, b = await first.connect(), await second.connect()
    try:
        # A lock that makes VACUUM wait (as a long vacuum would) while the first duty holds its turn.
        with psycopg.connect(dsn) as blocker:
            blocker.execute("LOCK TABLE pgqueue.job IN SHARE UPDATE EXCLUSIVE MODE")
            turn = asyncio.create_task(first.tick(a))
            deadline = time.monotonic() + 10
            while not conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
                (a.info.backend_pid,),
            ).fetchone():
                assert time.monotonic() < deadline and not turn.done()
                await asyncio.sleep(0.05)
            assert await second.tick(b) == BUSY
            assert job_stats(conn)[1] is None
            blocker.rollback()
            assert await asyncio.wait_for(turn, 15) == VACUUMED
        assert job_stats(conn)[1] is not None
        assert await second.tick(b) == CLEAN  # the lock was released; nothing is left to vacuum
        assert (first.vacuums, second.vacuums) == (1, 0)
    finally:
        await a.close()
        await b.close()


@pytest.fixture
def worker_role(dsn: str, conn: psycopg.Connection[Any]) -> Iterator[str]:
    """A role with the worker privileges of `pgqueue grants`, that does not own the job table."""
    role = f"pgq_vac_{uuid.uuid4().hex[:8]}"
    conn.execute(f'CREATE ROLE "{role}" LOGIN')
    conn.execute(f'GRANT CONNECT ON DATABASE "{conn.info.dbname}" TO "{role}"')
    conn.execute(grants("pgqueue", role, role))
    yield role
    conn.execute(f'DROP OWNED BY "{role}"')
    conn.execute(f'DROP ROLE "{role}"')


async def test_a_role_that_does_not_own_the_table_is_told_once_and_keeps_working(
    dsn, conn, worker_role, caplog
):
    make_dead_rows(dsn, conn)
    app = pgqueue.App(psycopg.conninfo.make_conninfo(dsn, user=worker_role, password=""))
    ran: list[int] = []

    @app.task("work")
    async def work(n: int) -> None:
        ran.append(n)

    try:
        work.enqueue_many([{"n": n} for n in range(20)])
        worker = Worker(app.runtime(), WorkerConfig(poll_interval=0.2, vacuum_interval=1))
        told: list[float] = []

        def told_and_more_turns_passed() -> bool:
            if NOT_OWNER_LINE in caplog.text and not told:
                told.append(time.monotonic())
            return len(ran) == 20 and bool(told) and time.monotonic() - told[0] > 2.5

        await run_while(worker, told_and_more_turns_passed)
        assert caplog.text.count(NOT_OWNER_LINE) == 1
        assert "it is not the job table's owner" in caplog.text
        assert job_stats(conn)[1] is None

        # Past the look-up, the server's own refusal (a warning, not an error) is caught too.
        duty = VacuumDuty(database(app), "pgqueue", 1.0)
        theirs = await duty.connect()
        try:
            assert await duty._vacuum(theirs, {"dead": 3000, "live": 0}) == NOT_OWNER
        finally:
            await theirs.close()
        assert caplog.text.count(NOT_OWNER_LINE) == 2 and "skipping" in caplog.text
        assert job_stats(conn)[1] is None
    finally:
        app.close()


def explain_claim(conn: psycopg.Connection[Any]) -> str:
    """The plan of the one-queue claim for the queue "default" (EXPLAIN only: nothing is claimed)."""
    params = {"queue": "default", "limit": 10, "lease_seconds": 60.0, "worker_id": "w"}
    statement = psycopg.ClientCursor(conn).mogrify(queries("pgqueue").claim_one, params)
    return "\n".join(row[0] for row in conn.execute("EXPLAIN " + statement).fetchall())


def has_statistics(conn: psycopg.Connection[Any]) -> bool:
    return conn.execute(
        "SELECT EXISTS (SELECT FROM pg_stats WHERE schemaname = 'pgqueue' AND tablename = 'job')"
    ).fetchone() == (True,)


async def test_a_worker_starting_on_jobs_in_a_table_never_analyzed_analyzes_it(app, conn, caplog):
    @app.task("noop")
    async def noop(n: int) -> None: ...

    caplog.set_level(logging.INFO, "pgqueue.worker")
    noop.enqueue_many([{"n": n} for n in range(5000)])
    # Without statistics PostgreSQL expects a handful of waiting jobs in a queue: from about
    # 100,000 of them on, it plans a bitmap scan and a sort of all of them, each claim.
    assert not has_statistics(conn)
    result = await app.adrain()
    assert result["completed"] == 5000
    assert has_statistics(conn)
    plan = explain_claim(conn)
    assert "Index Scan using job_fetch on job" in plan, plan  # the fetch index, read in its order
    assert "Sort Key: job.priority" not in plan, plan
    assert caplog.text.count("analyzed the job table: it had jobs but no statistics") == 1


async def test_jobs_arriving_after_start_get_the_table_analyzed_at_the_next_look(app, conn, caplog):
    caplog.set_level(logging.INFO, "pgqueue.worker")
    watch = StatisticsWatch(database(app), "pgqueue", interval=0.2)
    await watch.db.open()
    try:
        assert await watch.check() == PENDING  # an empty table: nothing to analyze yet
        watching = asyncio.create_task(watch.run())
        await asyncio.sleep(0.5)
        assert not watching.done() and not has_statistics(conn)
        app.enqueue_many([("noop", {"n": n}, {}) for n in range(300)])
        await asyncio.wait_for(watching, timeout=10)  # it stops once the table has statistics
        assert watch.state == ANALYZED and has_statistics(conn)
        assert await watch.check() == HAS_STATISTICS
    finally:
        await watch.db.close()
    assert caplog.text.count("analyzed the job table") == 1


async def test_a_worker_starting_on_an_empty_table_or_an_analyzed_one_does_not_analyze(app, conn, caplog):
    @app.task("noop")
    async def noop(n: int) -> None: ...

    caplog.set_level(logging.INFO, "pgqueue.worker")
    await app.adrain()
    assert not has_statistics(conn)  # nothing to analyze in an empty table
    noop.enqueue_many([{"n": n} for n in range(100)])
    conn.execute("ANALYZE pgqueue.job")
    noop.enqueue_many([{"n": n} for n in range(100)])
    await app.adrain()
    assert "analyzed the job table" not in caplog.text


async def test_a_role_that_may_not_analyze_the_table_is_told_what_to_do(dsn, conn, worker_role, caplog):
    owner = pgqueue.App(dsn)
    owner.enqueue_many([("work", {"n": n}, {}) for n in range(50)])
    owner.close()
    app = pgqueue.App(psycopg.conninfo.make_conninfo(dsn, user=worker_role, password=""))

    @app.task("work")
    async def work(n: int) -> None: ...

    try:
        assert (await app.adrain())["completed"] == 50
    finally:
        app.close()
    assert not has_statistics(conn)
    assert caplog.text.count("has jobs but no statistics") == 1
    assert "Run ANALYZE pgqueue.job as its owner, or turn autovacuum on" in caplog.text
