"""Completing a job in the handler's own transaction: its writes and the job's completion commit together."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import pgqueue
from pgqueue.db.sql import queries
from pgqueue.worker import Worker, WorkerConfig

import worker_handlers
from test_orm import sqlalchemy_url
from test_worker import all_final, run_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def payments(conn: psycopg.Connection[Any]) -> Any:
    """A business table, and ``payments()``: its rows as (order_id, job_id, attempt)."""
    conn.execute("CREATE TABLE payments (order_id int PRIMARY KEY, job_id bigint, attempt int)")
    return lambda: conn.execute("SELECT order_id, job_id, attempt FROM payments ORDER BY 1").fetchall()


def insert_payment(conn: psycopg.Connection[Any], order_id: int) -> None:
    job = pgqueue.current_job()
    conn.execute("INSERT INTO payments VALUES (%s, %s, %s)", (order_id, job.id, job.attempt))


async def test_async_thread_and_process_handlers_complete_in_their_own_transaction(
    app, dsn, conn, payments, warnings_logged, caplog
):
    @app.task("pay-async")
    async def pay_async(order_id: int) -> str:
        async with await psycopg.AsyncConnection.connect(dsn) as aconn:
            job = pgqueue.current_job()
            await aconn.execute("INSERT INTO payments VALUES (%s, %s, %s)", (order_id, job.id, job.attempt))
            await job.acomplete(aconn, output={"paid": order_id})
        return "not stored"

    @app.task("pay-thread")
    def pay_thread(order_id: int) -> str:
        with psycopg.connect(dsn) as tconn:
            insert_payment(tconn, order_id)
            pgqueue.current_job().complete(tconn, output={"paid": order_id})
        return "not stored"

    app.task("pay-process", executor="process")(worker_handlers.pay_in_own_transaction)
    ids = [pay_async.enqueue(order_id=1), pay_thread.enqueue(order_id=2),
           app.enqueue("pay-process", {"dsn": dsn, "order_id": 3})]
    worker = await run_until(app, all_final(conn), timeout=40)
    assert payments() == [(1, ids[0], 1), (2, ids[1], 1), (3, ids[2], 1)]
    for order_id, job_id in enumerate(ids, start=1):
        job = app.get_job(job_id)
        assert job.state is pgqueue.JobState.COMPLETED and job.attempts == 1 and job.errors == []
        assert job.output["paid"] == order_id and job.lease_id is None
        assert job.duration is not None and 0 <= job.duration < 30
    assert app.get_job(ids[2]).output["pid"] != __import__("os").getpid()
    assert warnings_logged() == []
    assert worker.stats["completed"] == 3 and worker.stats["fenced"] == 0
    assert caplog.text.count("(in its handler's transaction)") == 3


async def test_a_sqlalchemy_session_completes_with_its_own_commit(app, dsn, conn, payments, warnings_logged):
    engine = create_engine(sqlalchemy_url(dsn))

    @app.task("pay-orm")
    def pay_orm(order_id: int) -> None:
        job = pgqueue.current_job()
        with Session(engine) as session:
            session.execute(text("INSERT INTO payments VALUES (:o, :j, :a)"),
                            {"o": order_id, "j": job.id, "a": job.attempt})
            job.complete(session, output="charged through the ORM")
            session.commit()

    try:
        job_id = pay_orm.enqueue(order_id=7)
        await run_until(app, all_final(conn))
    finally:
        engine.dispose()
    assert payments() == [(7, job_id, 1)]
    assert app.get_job(job_id).output == "charged through the ORM"
    assert warnings_logged() == []


async def test_an_async_sqlalchemy_session_completes_with_its_own_commit(app, dsn, conn, payments,
                                                                         warnings_logged):
    engine = create_async_engine(sqlalchemy_url(dsn))

    @app.task("pay-async-orm")
    async def pay_async_orm(order_id: int) -> None:
        job = pgqueue.current_job()
        async with AsyncSession(engine) as session:
            await session.execute(text("INSERT INTO payments VALUES (:o, :j, :a)"),
                                  {"o": order_id, "j": job.id, "a": job.attempt})
            await job.acomplete(session, output="charged through the async ORM")
            await session.commit()

    try:
        job_id = pay_async_orm.enqueue(order_id=8)
        await run_until(app, all_final(conn))
    finally:
        await engine.dispose()
    assert payments() == [(8, job_id, 1)]
    assert app.get_job(job_id).output == "charged through the async ORM"
    assert warnings_logged() == []


async def test_a_handler_that_raises_after_its_completion_committed_leaves_the_job_completed(
    app, dsn, conn, payments, caplog
):
    @app.task("raises-afterwards", max_attempts=3)
    def raises_afterwards(order_id: int) -> None:
        with psycopg.connect(dsn) as tconn:
            insert_payment(tconn, order_id)
            pgqueue.current_job().complete(tconn, output="paid")
        raise RuntimeError("the receipt e-mail could not be sent")

    job_id = raises_afterwards.enqueue(order_id=3)
    worker = await run_until(app, all_final(conn))
    job = app.get_job(job_id)
    assert job.state is pgqueue.JobState.COMPLETED and job.output == "paid" and job.attempts == 1
    assert payments() == [(3, job_id, 1)]
    assert worker.stats["completed"] == 1 and worker.stats["fenced"] == 0 and worker.stats["failed"] == 0
    assert "then raised (the job stays completed): RuntimeError: the receipt e-mail" in caplog.text
    assert "outcome discarded" not in caplog.text


async def test_a_rolled_back_completion_leaves_the_worker_its_usual_outcome(app, dsn, conn, payments,
                                                                             warnings_logged):
    @app.task("changes-its-mind")
    def changes_its_mind(order_id: int) -> str:
        with psycopg.connect(dsn) as tconn:
            insert_payment(tconn, order_id)
            pgqueue.current_job().complete(tconn, output="from the handler's transaction")
            tconn.rollback()
        return "returned by the handler"

    @app.task("changes-its-mind-then-raises", max_attempts=1)
    async def then_raises(order_id: int) -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as aconn:
            await aconn.execute("INSERT INTO payments VALUES (%s, 0, 0)", (order_id,))
            await pgqueue.current_job().acomplete(aconn, output="from the handler's transaction")
            raise ValueError("the payment provider said no")  # the with block rolls back

    returned = changes_its_mind.enqueue(order_id=1)
    raised = then_raises.enqueue(order_id=2)
    worker = await run_until(app, all_final(conn))
    assert payments() == []
    job = app.get_job(returned)
    assert job.state is pgqueue.JobState.COMPLETED and job.output == "returned by the handler"
    job = app.get_job(raised)
    assert job.state is pgqueue.JobState.FAILED and job.output is None
    assert "the payment provider said no" in job.error
    assert worker.stats["completed"] == 1 and worker.stats["failed"] == 1 and worker.stats["fenced"] == 0
    assert [m for m in warnings_logged() if "payment provider" not in m] == []


@pytest.mark.parametrize("how", ["cancelled", "rescued"])
async def test_complete_after_the_lease_was_lost_raises_and_writes_nothing(app, dsn, conn, payments, how):
    started, proceed = threading.Event(), threading.Event()
    seen: list[BaseException] = []

    @app.task("late-payment", max_attempts=1)  # a rescue then fails the job: it does not run again
    def late_payment(order_id: int) -> None:
        started.set()
        proceed.wait(20)
        try:
            with psycopg.connect(dsn) as tconn:
                insert_payment(tconn, order_id)
                pgqueue.current_job().complete(tconn, output="too late")
        except pgqueue.LeaseLost as exc:
            seen.append(exc)
            raise

    job_id = late_payment.enqueue(order_id=1)
    worker = Worker(app.runtime(), WorkerConfig(poll_interval=0.2))
    running = asyncio.create_task(worker.run())
    try:
        while not started.is_set():
            await asyncio.sleep(0.02)
        if how == "cancelled":
            assert app.cancel_job(job_id)
        else:  # its lease expires and a sweep rescues it, as if the worker had stalled
            with conn.transaction():
                conn.execute("UPDATE pgqueue.job SET lease_expires_at = now() - interval '1 s' WHERE id = %s",
                             (job_id,))
                assert conn.execute(queries("pgqueue").rescue, {"lock_key": 1}).fetchall()
        proceed.set()
        deadline = time.monotonic() + 20
        while not seen:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    finally:
        proceed.set()
        worker.stop()
        await asyncio.wait_for(running, 15)
    assert isinstance(seen[0], pgqueue.PgQueueError) and "no longer holds" in str(seen[0])
    assert payments() == []
    job = app.get_job(job_id)
    assert job.output != "too late"
    assert job.state is (pgqueue.JobState.CANCELLED if how == "cancelled" else pgqueue.JobState.FAILED)


async def test_an_uncommitted_completion_neither_blocks_the_heartbeat_nor_loses_the_job(
    app, dsn, conn, payments, warnings_logged
):
    # Leases of 1 s, renewed every third of a second, swept for every 0.2 s: the handler holds
    # its job's row locked (complete() done, commit not yet) for three leases, while a plain job
    # beside it needs its lease renewed all along.
    @app.task("slow-commit")
    def slow_commit(order_id: int) -> None:
        with psycopg.connect(dsn) as tconn:
            insert_payment(tconn, order_id)
            pgqueue.current_job().complete(tconn, output="committed late")
            time.sleep(3.0)

    @app.task("beside")
    async def beside() -> str:
        await asyncio.sleep(3.5)
        return "renewed all along"

    slow = slow_commit.enqueue(order_id=1)
    plain = beside.enqueue()
    worker = await run_until(app, all_final(conn), lease_seconds=1, rescue_interval=0.2)
    assert payments() == [(1, slow, 1)]
    for job_id, output in ((slow, "committed late"), (plain, "renewed all along")):
        job = app.get_job(job_id)
        assert job.state is pgqueue.JobState.COMPLETED and job.attempts == 1 and job.errors == []
        assert job.output == output
    assert warnings_logged() == []
    assert worker.stats["completed"] == 2


async def test_complete_refuses_a_connection_that_would_commit_at_once(app, dsn, conn, payments):
    seen: list[BaseException] = []

    @app.task("autocommit")
    def autocommit() -> str:
        with psycopg.connect(dsn, autocommit=True) as tconn:
            try:
                pgqueue.current_job().complete(tconn)
            except pgqueue.ConfigurationError as exc:
                seen.append(exc)
            with tconn.transaction():  # an explicit transaction block is fine
                insert_payment(tconn, 5)
                pgqueue.current_job().complete(tconn, output="in a block")
        return "not stored"

    job_id = autocommit.enqueue()
    await run_until(app, all_final(conn))
    assert "autocommit" in str(seen[0])
    assert app.get_job(job_id).output == "in a block" and payments() == [(5, job_id, 1)]


def test_heartbeat_and_rescue_pass_by_a_row_held_by_an_uncommitted_completion(app, dsn, conn):
    q = queries("pgqueue")
    job_id = app.enqueue("held", {})
    lease = conn.execute(
        "UPDATE pgqueue.job SET state = 'active', attempts = 1, lease_id = gen_random_uuid(), "
        "lease_expires_at = now() - interval '1 s' WHERE id = %s RETURNING lease_id", (job_id,)
    ).fetchone()[0]
    context = pgqueue.JobContext(job_id, "held", "default", 1, 5, lease_id=lease, started=time.monotonic())

    def heartbeat(attempt: int = 1) -> list[int]:
        rows = conn.execute(q.heartbeat, {"id": [job_id], "lease_id": [lease], "attempt": [attempt],
                                          "lease_seconds": 60}).fetchall()
        return [row[0] for row in rows]

    def expired() -> bool:
        row = conn.execute("SELECT lease_expires_at < now() FROM pgqueue.job WHERE id = %s",
                           (job_id,)).fetchone()
        return bool(row[0])

    conn.execute("SET lock_timeout = '2s'")  # waiting behind the handler's lock would fail the test
    with psycopg.connect(dsn) as handler:
        context.complete(handler, output="pending")
        started = time.monotonic()
        assert heartbeat() == [job_id]  # still held: the completion has not committed
        assert expired()  # not renewed either: the row is locked
        assert conn.execute(q.rescue, {"lock_key": 1}).fetchall() == []
        assert time.monotonic() - started < 1.0
        handler.commit()
    assert heartbeat() == [job_id]  # completed by this very attempt: still the worker's own
    assert heartbeat(attempt=2) == []  # another attempt's completion would not be
    assert conn.execute(q.rescue, {"lock_key": 1}).fetchall() == []
    job = app.get_job(job_id)
    assert job.state is pgqueue.JobState.COMPLETED and job.output == "pending" and job.duration >= 0
    with psycopg.connect(dsn) as handler, pytest.raises(pgqueue.LeaseLost):
        context.complete(handler, output="twice")
    assert app.get_job(job_id).output == "pending"
