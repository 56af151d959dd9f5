"""A worker that claims a job it still holds: its earlier claim was lost (after a failover the
new primary never saw it, and the job waits there again) or taken back (cancelled, then retried).
The job must not run twice at once, nor twice where once will do. In-process workers against a
real database; the lost claim is made as a failed-over server shows it: the row as before the
claim."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psycopg
import pytest
from inprocess import Running, until

import pgqueue
from pgqueue.worker import Worker, WorkerConfig
from pgqueue.worker.executors import Outcome
from pgqueue.worker.records import Result

pytestmark = pytest.mark.timeout(60)

UNCLAIM = (
    "UPDATE pgqueue.job SET state = 'created', attempts = attempts - 1, lease_id = NULL, "
    "lease_expires_at = NULL, started_at = NULL, worker_id = NULL WHERE id = %s"
)
"""The job's row as a standby that never received its claim has it."""


def row(conn: psycopg.Connection[Any], job_id: int) -> tuple[Any, ...]:
    found = conn.execute(
        "SELECT state::text, attempts, output, lease_id FROM pgqueue.job WHERE id = %s", (job_id,)
    ).fetchone()
    assert found is not None
    return found


async def test_a_running_job_claimed_again_carries_on_under_the_new_lease(app, conn):
    runs: list[str] = []
    gate = asyncio.Event()

    @app.task("slow")
    async def slow() -> str:
        runs.append(str(pgqueue.current_job().lease_id))
        await gate.wait()
        return "done once"

    job_id = slow.enqueue()
    # No heartbeat in the way: had it looked at the lease between the two claims, it would have
    # found it gone and stopped the run (then the job runs again after it: the next test).
    async with Running(
        app, poll_interval=0.1, concurrency=4, listen=False, lease_seconds=60, shutdown_grace=1
    ) as worker:
        await until(lambda: runs and conn.execute("SELECT count(*) FROM pgqueue.worker").fetchone()[0] == 1)
        await asyncio.sleep(0.2)  # the first beat is over
        first_lease = row(conn, job_id)[3]
        conn.execute(UNCLAIM, (job_id,))
        await until(lambda: row(conn, job_id)[0] == "active")  # claimed again, by the same worker
        second_lease = row(conn, job_id)[3]
        assert second_lease != first_lease
        await asyncio.sleep(0.3)  # a second run would have started by now
        assert len(runs) == 1
        assert worker.running[job_id].job.lease_id == str(second_lease)
        gate.set()
        await until(lambda: row(conn, job_id)[0] == "completed")
    state, attempts, output, _ = row(conn, job_id)
    assert (state, attempts, output, len(runs)) == ("completed", 1, "done once", 1)
    assert worker.stats["fenced"] == 0


async def test_a_job_claimed_again_while_its_stopped_run_goes_on_starts_after_it(app, conn):
    """Cancelled while running (its thread does not stop at once), then retried: the same worker
    claims it again. The second run starts when the first has ended, not beside it."""
    spans: list[list[float]] = []
    release_first = threading.Event()

    @app.task("stubborn", executor="thread")
    def stubborn() -> str:
        span = [time.monotonic(), 0.0]
        spans.append(span)
        if len(spans) == 1:
            release_first.wait(20)  # ignores the cancellation for a while
        span[1] = time.monotonic()
        return f"run {len(spans)}"

    job_id = stubborn.enqueue()
    async with Running(app, poll_interval=0.1, concurrency=4, shutdown_grace=1) as worker:
        await until(lambda: spans)
        assert app.cancel_job(job_id)
        await until(lambda: worker.running.get(job_id) is not None and worker.running[job_id].lost)
        assert app.retry_job(job_id)
        await until(lambda: worker.running[job_id].then is not None)  # claimed again, held back
        await asyncio.sleep(0.3)
        assert len(spans) == 1
        release_first.set()
        await until(lambda: row(conn, job_id)[0] == "completed")
    assert len(spans) == 2
    assert spans[1][0] >= spans[0][1]  # one after the other
    assert row(conn, job_id)[:3] == ("completed", 2, "run 2")  # a retry keeps the attempts made


async def test_an_outcome_waiting_when_its_job_is_claimed_again_is_recorded_under_the_new_claim(app, conn):
    """The job ran; before its outcome was recorded its claim vanished (a failover), and the
    statement that would record it claims the job again: the outcome goes with the new claim."""

    @app.task("quick")
    async def quick() -> None:
        return None

    job_id = quick.enqueue()
    worker = Worker(app.runtime(), WorkerConfig(poll_interval=0.1, concurrency=4))
    await worker.db.open()
    try:
        [first] = await worker._claim(4)
        conn.execute(UNCLAIM, (job_id,))
        worker.completer.add(Result(first, Outcome(True, output="ran once"), 0.01, False))
        assert await worker._claim(4) == []  # claimed again, not to run again
        [carried] = worker.completer.results
        assert carried.job.lease_id != first.lease_id
        assert str(row(conn, job_id)[3]) == carried.job.lease_id
        await worker.completer.flush()
    finally:
        await worker.db.close()
    assert row(conn, job_id)[:3] == ("completed", 1, "ran once")
    assert worker.stats["fenced"] == 0


async def test_notifications_that_come_with_the_listeners_probe_are_not_dropped(app, conn):
    """The listener's probe and a cancel notice arrive in one read: the cancel is passed on too
    (leaving the read at the probe dropped what came after it, and the running job was only
    stopped by the next heartbeat)."""
    from pgqueue.worker.listener import Listener

    worker = Worker(app.runtime(), WorkerConfig())
    listener = next(service for service in worker.services if isinstance(service, Listener))
    cancels: list[tuple[int, str]] = []
    listener.cancel = lambda job_id, lease: cancels.append((job_id, lease))
    await worker.db.open()
    listening = await worker.db.dedicated("pgqueue-listener")
    try:
        await listening.execute(worker.q.listen)
        with conn.transaction():  # one commit: delivered together, the probe first
            conn.execute(
                "SELECT pg_notify(%s, %s), pg_notify(%s, ' cancel 7 lease-7')",
                (worker.channel, listener.probe, worker.channel),
            )
        assert await listener._listen_for(listening, 0)
        assert cancels == [(7, "lease-7")]
    finally:
        await listening.close()
        await worker.db.close()
