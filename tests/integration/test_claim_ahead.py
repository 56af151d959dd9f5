"""Claiming ahead: a worker of short jobs claims its next jobs while its running ones finish.
In-process workers against a real database."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue.worker import Worker, WorkerConfig

pytestmark = pytest.mark.timeout(60)


class Deepest(collections.deque):  # type: ignore[type-arg]
    """A deque that remembers its greatest length."""

    deepest = 0

    def append(self, item: Any) -> None:
        super().append(item)
        self.deepest = max(self.deepest, len(self))


def watched(app: pgqueue.App, **config: Any) -> Worker:
    worker = Worker(app.runtime(), WorkerConfig(**{"poll_interval": 0.2, "claim_ahead": True, **config}))
    worker.ahead.waiting = Deepest()
    return worker


async def until(check: Callable[[], Any], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def states(conn: psycopg.Connection[Any]) -> dict[str, int]:
    return dict(conn.execute("SELECT state::text, count(*) FROM pgqueue.job GROUP BY 1").fetchall())


@pytest.mark.parametrize("ahead", [True, False])
async def test_short_jobs_are_claimed_ahead_without_running_more_than_the_concurrency(app, conn, ahead):
    now = {"running": 0, "most": 0}

    @app.task("short")
    async def short(n: int) -> int:
        now["running"] += 1
        now["most"] = max(now["most"], now["running"])
        await asyncio.sleep(0)
        now["running"] -= 1
        return n

    short.enqueue_many([{"n": n} for n in range(600)])
    worker = watched(app, concurrency=10, burst=True, claim_ahead=ahead)
    await asyncio.wait_for(worker.run(), 40)
    assert states(conn) == {"completed": 600}
    assert now["most"] <= 10  # jobs claimed ahead wait for a slot
    waited = worker.ahead.waiting.deepest  # type: ignore[attr-defined]
    if ahead:
        assert waited > 0  # some claims brought more jobs than free slots
        # Each claim counted one attempt: none was claimed twice, nor lost on the way.
        assert conn.execute("SELECT max(attempts) FROM pgqueue.job").fetchone() == (1,)
    else:
        assert waited == 0


def register(app: pgqueue.App, gate: asyncio.Event, started: list[int]) -> tuple[Any, Any]:
    @app.task("quick")
    async def quick(n: int) -> None:
        return None

    @app.task("gated")
    async def gated(n: int) -> int:
        started.append(n)
        await gate.wait()
        return n

    return quick, gated


async def claim_ahead_behind_two_gated_jobs(worker: Worker, conn: Any, gated: Any) -> list[int]:
    """Teach the worker that its jobs are quick, then give it gated ones: two run (blocked), and
    it claims more ahead. The ids of those waiting, in order."""
    await until(lambda: states(conn) == {"completed": 40})
    ids = gated.enqueue_many([{"n": n} for n in range(6)])
    await until(lambda: len(worker.ahead.waiting) > 0 and worker.ahead.started() == 2)
    waiting = [r.job.id for r in worker.ahead.waiting]
    assert set(waiting) <= set(ids[2:])
    return waiting


async def test_a_job_cancelled_while_it_waits_for_a_slot_never_starts(app, conn):
    gate, started = asyncio.Event(), []
    quick, gated = register(app, gate, started)
    quick.enqueue_many([{"n": n} for n in range(40)])
    worker = watched(app, concurrency=2)
    running = asyncio.create_task(worker.run())
    try:
        waiting = await claim_ahead_behind_two_gated_jobs(worker, conn, gated)
        await asyncio.to_thread(app.cancel_job, waiting[0])
        await until(lambda: worker.running[waiting[0]].lost)
        gate.set()
        await until(lambda: states(conn).get("completed") == 45)
    finally:
        gate.set()
        worker.stop()
        await asyncio.wait_for(running, 15)
    cancelled = conn.execute("SELECT data->>'n' FROM pgqueue.job WHERE id = %s", (waiting[0],)).fetchone()
    assert cancelled is not None and int(cancelled[0]) not in started  # it never ran
    assert len(started) == 5
    assert states(conn) == {"completed": 45, "cancelled": 1}


async def test_jobs_claimed_ahead_are_handed_back_at_once_when_the_worker_stops(app, conn):
    gate, started = asyncio.Event(), []
    quick, gated = register(app, gate, started)
    quick.enqueue_many([{"n": n} for n in range(40)])
    worker = watched(app, concurrency=2, shutdown_grace=30.0)
    running = asyncio.create_task(worker.run())
    try:
        waiting = await claim_ahead_behind_two_gated_jobs(worker, conn, gated)
        worker.stop()
        # Back in the queue before the running ones finish, their attempt uncounted.
        await until(
            lambda: conn.execute(
                "SELECT count(*) FROM pgqueue.job WHERE id = ANY(%s) AND state = 'created' AND attempts = 0",
                (waiting,),
            ).fetchone()
            == (len(waiting),)
        )
        assert len(started) == 2
    finally:
        gate.set()
        await asyncio.wait_for(running, 15)
    assert len(started) == 2
    assert states(conn) == {"completed": 42, "created": 4}


async def test_jobs_claimed_ahead_do_not_start_once_a_connection_was_lost(app, conn):
    """A lost connection may be a server failing over, whose standby never saw the claims: the
    jobs waiting for a slot are dropped, not started, and handed back by the next claim."""
    gate, started = asyncio.Event(), []
    quick, gated = register(app, gate, started)
    quick.enqueue_many([{"n": n} for n in range(40)])
    worker = watched(app, concurrency=2)
    running = asyncio.create_task(worker.run())
    try:
        waiting = await claim_ahead_behind_two_gated_jobs(worker, conn, gated)
        worker.ahead.enabled = False  # the next claims take only free slots
        assert worker.db.outage.failed("a part", psycopg.OperationalError("server closed the connection"))
        assert not worker.ahead.waiting and all(job_id not in worker.running for job_id in waiting)
        worker.wake.set()
        # Handed back (attempt uncounted) by the claim loop's next round trip.
        await until(
            lambda: (
                conn.execute(
                    "SELECT count(*) FROM pgqueue.job WHERE id = ANY(%s) AND attempts = 0", (waiting,)
                ).fetchone()
                == (len(waiting),)
            )
        )
        assert len(started) == 2
        gate.set()
        await until(lambda: states(conn).get("completed") == 46)
    finally:
        gate.set()
        worker.stop()
        await asyncio.wait_for(running, 15)
    assert sorted(started) == list(range(6))  # each ran once, the dropped ones later


async def test_a_second_stop_abandons_a_claim_stuck_in_the_database(app, conn, dsn):
    @app.task("quick")
    async def quick(n: int) -> None:
        return None

    worker = watched(app, concurrency=2)
    running = asyncio.create_task(worker.run())
    await until(lambda: conn.execute("SELECT count(*) FROM pgqueue.worker").fetchone() == (1,))
    with psycopg.connect(dsn) as blocker:
        blocker.execute("LOCK TABLE pgqueue.job IN ACCESS EXCLUSIVE MODE")
        worker.wake.set()  # a claim now waits for the lock
        await until(lambda: bool(worker.claiming))
        await asyncio.sleep(0.2)
        worker.stop()
        worker.stop()  # the second stop gives the round trip up at once
        started = time.monotonic()
        await asyncio.wait_for(running, 10)
        assert time.monotonic() - started < 5
        blocker.rollback()


def count_claims_in_flight(worker: Worker) -> dict[str, int]:
    """Wrap the worker's exchange to record how many claims were in flight at once, at most."""
    seen = {"now": 0, "most": 0, "claims": 0}
    exchange = worker.completer.exchange

    async def counted(batch: Any, claim: Any, conn: Any = None) -> Any:
        if claim is None:
            return await exchange(batch, claim, conn)
        seen["now"] += 1
        seen["claims"] += 1
        seen["most"] = max(seen["most"], seen["now"])
        try:
            return await exchange(batch, claim, conn)
        finally:
            seen["now"] -= 1

    worker.completer.exchange = counted  # type: ignore[method-assign]
    return seen


async def test_a_second_claim_goes_out_beside_the_first_while_the_queue_has_a_backlog(app, conn):
    @app.task("short")
    async def short(n: int) -> None:
        return None

    short.enqueue_many([{"n": n} for n in range(3000)])
    worker = watched(app, concurrency=20, burst=True)
    seen = count_claims_in_flight(worker)
    await asyncio.wait_for(worker.run(), 40)
    assert states(conn) == {"completed": 3000}
    # Each job claimed once (one attempt), none recorded under a lease it no longer held.
    assert conn.execute("SELECT max(attempts) FROM pgqueue.job").fetchone() == (1,)
    assert worker.stats["fenced"] == 0 and worker.stats["completed"] == 3000
    assert worker.second.claims > 0 and seen["most"] == 2


async def test_an_idle_worker_woken_by_one_job_at_a_time_sends_one_claim_for_each(app, conn):
    @app.task("quick")
    async def quick(n: int) -> None:
        return None

    worker = watched(app, concurrency=5)
    seen = count_claims_in_flight(worker)
    running = asyncio.create_task(worker.run())
    try:
        await until(lambda: conn.execute("SELECT count(*) FROM pgqueue.worker").fetchone() == (1,))
        for n in range(5):
            quick.enqueue(n=n)
            await until(lambda n=n: states(conn).get("completed") == n + 1)
    finally:
        worker.stop()
        await asyncio.wait_for(running, 15)
    assert worker.second.claims == 0 and seen["most"] == 1
