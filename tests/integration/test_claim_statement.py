"""The one-queue claim statement: it locks only the jobs it takes, PostgreSQL keeps one plan
for it, and no claim asks for more than CLAIM_MOST jobs."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue.db.sql import CLAIM_MOST, queries
from pgqueue.worker import Worker, WorkerConfig

pytestmark = pytest.mark.timeout(60)

NO_OUTCOMES = {
    name: "{}"
    for name in (
        "done_id",
        "done_lease",
        "done_output",
        "done_duration",
        "failed_id",
        "failed_lease",
        "failed_error",
        "failed_retry_in",
        "failed_duration",
    )
}


def claim_params(limit: int) -> dict[str, Any]:
    return {"queue": "default", "limit": limit, "lease_seconds": 30.0, "worker_id": "test-worker"}


@pytest.mark.parametrize("statement", ["claim_one", "exchange_one"])
def test_a_one_queue_claim_locks_only_the_jobs_it_takes(app: pgqueue.App, dsn: str, statement: str) -> None:
    """The claim walks the fetch index under a constant limit and takes the first ``limit`` rows:
    the rows past them must not be locked, or other workers would skip jobs nobody runs."""
    app.enqueue_many([("t", {"n": n}) for n in range(50)])
    params = {**NO_OUTCOMES, **claim_params(3)} if statement == "exchange_one" else claim_params(3)
    with psycopg.connect(dsn) as claimer, psycopg.connect(dsn, autocommit=True) as other:
        claimed = claimer.execute(getattr(queries("pgqueue"), statement), params).fetchone()[2]  # type: ignore[index]
        assert len(claimed) == 3
        # The claim's transaction is still open: the rows it holds are locked, no others.
        free = other.execute(
            "SELECT count(*) FROM (SELECT id FROM pgqueue.job WHERE state < 'active' "
            "FOR UPDATE SKIP LOCKED) AS f"
        ).fetchone()
        assert free == (47,)
        claimer.rollback()


def test_postgresql_keeps_one_generic_plan_for_the_one_queue_claim(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """With the limit a parameter of the index walk, the generic plan was costed for a tenth of
    the table and never chosen: every claim was planned again."""
    app.enqueue_many([("t", {"n": n}) for n in range(20)])
    with psycopg.connect(dsn, autocommit=True) as claimer:
        for limit in (1, 2, 1, 3, 1, 2, 1, 4, 1, 2):
            claimer.execute(queries("pgqueue").claim_one, claim_params(limit), prepare=True)
        generic, custom = claimer.execute(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE '%SKIP LOCKED%'"
        ).fetchone()  # type: ignore[misc]
    assert generic >= 4 and custom <= 5, (generic, custom)
    assert conn.execute("SELECT count(*) FROM pgqueue.job WHERE state = 'active'").fetchone() == (18,)


async def test_a_worker_with_more_slots_than_a_claim_takes_keeps_claiming(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    """A claim asks for at most CLAIM_MOST jobs, and a claim that got that many is a full one:
    the worker claims again at once instead of waiting for a wake-up or its poll."""
    limits: list[int] = []

    @app.task("quick")
    async def quick(n: int) -> None:
        await asyncio.sleep(0.2)  # slots stay taken while the next claims go out

    quick.enqueue_many([{"n": n} for n in range(CLAIM_MOST + 300)])
    worker = Worker(app.runtime(), WorkerConfig(concurrency=CLAIM_MOST + 500, burst=True, poll_interval=30))
    exchange = worker.completer.exchange

    async def recorded(batch: Any, claim: Any, conn: Any = None) -> Any:
        if claim is not None:
            limits.append(claim["limit"])
        return await exchange(batch, claim, conn)

    worker.completer.exchange = recorded  # type: ignore[method-assign]
    await asyncio.wait_for(worker.run(), 10)  # well inside the 30 s poll: no claim waited for it
    assert conn.execute("SELECT state::text, count(*) FROM pgqueue.job GROUP BY 1").fetchall() == [
        ("completed", CLAIM_MOST + 300)
    ]
    assert max(limits) == CLAIM_MOST and limits[0] == CLAIM_MOST


def test_a_job_updated_while_the_claim_waits_is_claimed_in_its_newest_version(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """The exchange records outcomes before it claims: when it waits for the lock of a job it
    completes, a waiting job may be updated and committed meanwhile. The claim's scan sees that
    job as it was when the statement began and locks its newest version: the update must claim
    that one. (Found by the ctid the scan returns, the newest version's, it was missed: that
    version is not in the statement's snapshot, so the update's TID scan skipped it.)"""
    first, second = app.enqueue_many([("t", {"n": 1}, {"priority": 5}), ("t", {"n": 2})])
    claimed = conn.execute(queries("pgqueue").claim_one, claim_params(1)).fetchone()[2]  # type: ignore[index]
    assert [job[0] for job in claimed] == [first]
    lease = claimed[0][11]
    params = {
        **NO_OUTCOMES,
        **claim_params(1),
        "done_id": f"{{{first}}}",
        "done_lease": f"{{{lease}}}",
        "done_duration": "{0.1}",
    }
    with psycopg.connect(dsn) as holder, psycopg.connect(dsn, autocommit=True) as exchanger:
        holder.execute("SELECT FROM pgqueue.job WHERE id = %s FOR UPDATE", (first,))
        pid = exchanger.info.backend_pid
        with ThreadPoolExecutor(1) as pool:
            exchange = queries("pgqueue").exchange_one
            result = pool.submit(lambda: exchanger.execute(exchange, params).fetchone())
            # The exchange waits for the completed job's lock; update the waiting job meanwhile.
            deadline = time.monotonic() + 10
            while conn.execute(
                "SELECT wait_event_type IS DISTINCT FROM 'Lock' FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone() != (False,):
                assert time.monotonic() < deadline, "the exchange never waited for the lock"
                time.sleep(0.01)
            conn.execute("UPDATE pgqueue.job SET priority = 1 WHERE id = %s", (second,))
            holder.commit()
            completed, _, claimed_now, _ = result.result(timeout=10)
    assert completed == [first]
    assert [job[0] for job in claimed_now] == [second]
    assert conn.execute(
        "SELECT id, state::text, attempts, priority FROM pgqueue.job ORDER BY id"
    ).fetchall() == [(first, "completed", 1, 5), (second, "active", 1, 1)]
