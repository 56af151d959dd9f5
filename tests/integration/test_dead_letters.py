"""Dead letters: a job that fails for good is copied to its dead-letter queue in the transaction
that failed it, whichever path failed it; redrive puts the copies back on their queue."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue.errors import InvalidJob
from pgqueue.worker import Worker, WorkerConfig

pytestmark = pytest.mark.timeout(60)


def dead_letters(conn: psycopg.Connection[Any], queue: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        """SELECT type, data, attempts, origin_id, origin_queue, error, jsonb_array_length(errors), state::text
           FROM pgqueue.job WHERE queue = %s ORDER BY origin_id, id""",
        (queue,),
    ).fetchall()


def test_a_job_out_of_attempts_is_copied_to_its_dead_letter_queue_and_redriven(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    fail = {"on": True}
    ran: list[int] = []

    @app.task("charge", queue="billing", max_attempts=2, retry_delay=0, dead_letter="billing-dead")
    def charge(order: int) -> str:
        ran.append(order)
        if fail["on"]:
            raise RuntimeError(f"card declined for {order}")
        return "charged"

    zeroth = charge.enqueue(order=0)
    first, second = charge.enqueue(order=1), charge.enqueue(order=2)
    app.drain()
    assert app.get_job(first).state is pgqueue.JobState.FAILED
    copies = dead_letters(conn, "billing-dead")
    assert [(c[0], c[1], c[2], c[3], c[4], c[6], c[7]) for c in copies] == [
        ("charge", {"order": 0}, 2, zeroth, "billing", 2, "created"),
        ("charge", {"order": 1}, 2, first, "billing", 2, "created"),
        ("charge", {"order": 2}, 2, second, "billing", 2, "created"),
    ]
    assert "card declined for 1" in copies[1][5]
    # A drain of the app's queues leaves the dead letters alone: no worker serves that queue.
    assert app.counts()["billing-dead"] == {"created": 3}

    assert app.redrive("billing-dead", dry_run=True) == 3
    assert app.counts()["billing-dead"] == {"created": 3}
    fail["on"] = False
    ran.clear()
    assert app.redrive("billing-dead") == 3
    assert app.counts().get("billing-dead") is None
    app.drain()
    assert sorted(ran) == [0, 1, 2]
    redriven = app.jobs(queue="billing", state="completed")
    assert sorted((job.data["order"], job.attempts, job.output) for job in redriven) == [
        (0, 1, "charged"),
        (1, 1, "charged"),
        (2, 1, "charged"),
    ]
    # Fresh attempts; the error history of the failed attempts stays with the job.
    assert all(len(job.errors) == 2 for job in redriven)
    assert sorted(job.origin_id for job in redriven) == [zeroth, first, second]
    assert all(job.origin_queue is None and job.dead_letter == "billing-dead" for job in redriven)
    assert app.redrive("billing-dead") == 0


def test_redrive_filters_by_type_and_a_failing_redriven_job_goes_back(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    @app.task("a", max_attempts=1, dead_letter="dead")
    def a() -> None:
        raise ValueError("a broke")

    @app.task("b", max_attempts=1, dead_letter="dead")
    def b() -> None:
        raise ValueError("b broke")

    a.enqueue(), b.enqueue()
    app.drain()
    assert app.redrive("dead", type="b", dry_run=True) == 1
    assert app.redrive("dead", type="b") == 1
    assert [c[0] for c in dead_letters(conn, "dead")] == ["a"]
    app.drain()  # b fails again for good: a new copy goes to the dead-letter queue
    assert sorted(c[0] for c in dead_letters(conn, "dead")) == ["a", "b"]


async def test_rescue_past_max_attempts_dead_letters_the_job(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    @app.task("crashy", max_attempts=1, dead_letter="crashy-dead")
    def crashy() -> None: ...

    job_id = crashy.enqueue()
    conn.execute(
        """UPDATE pgqueue.job SET state = 'active', attempts = 1, lease_id = gen_random_uuid(),
           lease_expires_at = now() - interval '1 second', worker_id = 'gone' WHERE id = %s""",
        (job_id,),
    )
    worker = Worker(app.runtime(), WorkerConfig(poll_interval=0.2, rescue_interval=0.2))
    running = asyncio.create_task(worker.run())
    try:
        deadline = time.monotonic() + 20
        while not dead_letters(conn, "crashy-dead"):
            assert time.monotonic() < deadline and not running.done(), "no dead letter after the rescue"
            await asyncio.sleep(0.05)
    finally:
        worker.stop()
        await asyncio.wait_for(running, timeout=15)
    copies = dead_letters(conn, "crashy-dead")
    assert len(copies) == 1 and copies[0][3] == job_id and "lease expired" in copies[0][5]


def test_dead_letter_is_written_in_the_failing_transaction(app: pgqueue.App, dsn: str) -> None:
    @app.task("t", max_attempts=1, dead_letter="t-dead")
    def t() -> None: ...

    job_id = t.enqueue()
    with psycopg.connect(dsn) as other:
        other.execute("UPDATE pgqueue.job SET state = 'failed', finished_at = now() WHERE id = %s", (job_id,))
        assert other.execute("SELECT count(*) FROM pgqueue.job WHERE queue = 't-dead'").fetchone() == (1,)
        other.rollback()
        assert other.execute("SELECT count(*) FROM pgqueue.job WHERE queue = 't-dead'").fetchone() == (0,)


def test_a_bad_dead_letter_queue_is_refused_before_anything_is_written(app: pgqueue.App) -> None:
    with pytest.raises(InvalidJob, match="dead_letter queue"):
        app.task("x", dead_letter=" spaced ")
    with pytest.raises(InvalidJob, match="dead_letter queue"):
        app.enqueue("x", {}, dead_letter="")
