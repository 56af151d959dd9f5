"""Cancelling running jobs, waiting for results, and progress: real workers on a real database."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import lifecycle_handlers
import psycopg
import pytest
from inprocess import Running, until

import pgqueue
from pgqueue.db.sql import queries

pytestmark = pytest.mark.timeout(60)


def listening(conn: psycopg.Connection[Any]) -> bool:
    """Whether a worker's listener has issued its LISTEN."""
    found = conn.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE application_name = 'pgqueue-listener' AND query ILIKE 'LISTEN%%'"
    ).fetchone()
    return found is not None and found[0] > 0


def row(conn: psycopg.Connection[Any], job_id: int) -> tuple[Any, ...]:
    found = conn.execute(
        "SELECT state::text, attempts, output, progress FROM pgqueue.job WHERE id = %s", (job_id,)
    ).fetchone()
    assert found is not None
    return found


# --- cancelling a running job --------------------------------------------------------------


def register_cancellable(app: pgqueue.App, executor: str, seen: dict[str, Any], path: Path) -> Any:
    """A handler of the executor that records when it starts and how it learnt of the cancellation."""
    if executor == "async":

        @app.task("cancellable", max_attempts=3, retry_delay=0)
        async def cancellable_async() -> str:
            seen["started"] = True
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                seen["seen"] = time.monotonic()
                raise
            return "not cancelled"

        return cancellable_async
    if executor == "thread":

        @app.task("cancellable", max_attempts=3, retry_delay=0)
        def cancellable_thread() -> str:
            seen["started"] = True
            job = pgqueue.current_job()
            deadline = time.monotonic() + 30
            while not job.cancelled and time.monotonic() < deadline:
                time.sleep(0.02)
            seen["seen"] = time.monotonic()
            try:
                job.check_cancelled()
            except pgqueue.JobCancelled:
                seen["raised"] = True
                raise
            return "not cancelled"

        return cancellable_thread
    return app.task("cancellable", executor="process", max_attempts=3, retry_delay=0)(
        lifecycle_handlers.wait_for_cancel
    )


@pytest.mark.parametrize("executor", ["async", "thread", "process"])
@pytest.mark.parametrize("listen", [True, False], ids=["notified", "heartbeat"])
async def test_cancelling_a_running_job_stops_its_handler(app, conn, tmp_path, executor, listen):
    seen: dict[str, Any] = {}
    path = tmp_path / "job"
    task = register_cancellable(app, executor, seen, path)
    job_id = task.enqueue(path=str(path)) if executor == "process" else task.enqueue()
    started = (lambda: Path(str(path) + ".started").exists()) if executor == "process" else (lambda: "started" in seen)
    # Without the listener, only the heartbeat (every third of the lease) finds the lease gone.
    async with Running(app, listen=listen, lease_seconds=1.5):
        await until(started)
        assert app.cancel_job(job_id) is True
        cancelled_at = time.monotonic()
        if executor == "process":
            took = await until(lambda: Path(str(path) + ".seen").exists())
            assert Path(str(path) + ".seen").read_text() == "True"
        else:
            await until(lambda: "seen" in seen)
            took = seen["seen"] - cancelled_at
        # The notice arrives on commit; the heartbeat renews every 0.5 s here.
        assert took < 1.0
        if executor == "thread":
            assert seen.get("raised") is True
        await asyncio.sleep(0.3)  # time for a wrongly recorded outcome or retry to land
    state, attempts, output, _ = row(conn, job_id)
    assert (state, attempts, output) == ("cancelled", 1, None)


async def test_cancelling_jobs_in_bulk_stops_the_running_ones(app, conn):
    seen: dict[int, bool] = {}

    @app.task("bulk-cancellable", max_attempts=3, retry_delay=0)
    def bulk_cancellable(n: int) -> None:
        job = pgqueue.current_job()
        deadline = time.monotonic() + 30
        while not job.cancelled and time.monotonic() < deadline:
            time.sleep(0.02)
        seen[n] = job.cancelled

    ids = bulk_cancellable.enqueue_many([{"n": n} for n in range(3)])
    async with Running(app, concurrency=2) as worker:
        await until(lambda: len(worker.running) == 2)
        # The cancel notices reach a worker that listens: its LISTEN may come after its first claim.
        await until(lambda: listening(conn))
        # A bulk cancel skips rows locked at that instant (a heartbeat renewing them): ask again.
        cancelled = app.cancel_jobs(type="bulk-cancellable")
        for _ in range(20):
            if cancelled == 3:
                break
            await asyncio.sleep(0.05)
            cancelled += app.cancel_jobs(type="bulk-cancellable")
        assert cancelled == 3  # two running, one waiting
        await until(lambda: len(seen) == 2, timeout=2)
    assert seen == {0: True, 1: True}
    assert {row(conn, job_id)[:2] for job_id in ids} == {("cancelled", 1), ("cancelled", 0)}


async def test_a_cancel_sent_while_the_listener_reconnects_stops_the_handler_at_once(app, conn):
    """The listener's connection is dropped and the job cancelled before it listens again: the
    notice is lost, and the heartbeat the reconnected listener asks for stops the handler, not the
    one due a third of a lease later (10 s here)."""
    told: list[float] = []

    @app.task("waits-for-cancel")
    def waits_for_cancel() -> None:
        job = pgqueue.current_job()
        deadline = time.monotonic() + 30
        while not job.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        told.append(time.monotonic())

    job_id = waits_for_cancel.enqueue()
    async with Running(app, lease_seconds=30) as worker:
        await until(lambda: job_id in worker.running and listening(conn))
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgqueue-listener'"
        )
        await until(lambda: not listening(conn))
        cancelled_at = time.monotonic()
        assert app.cancel_job(job_id)
        await until(lambda: told, timeout=8)
    assert told[0] - cancelled_at < 5  # the heartbeat's own turn would be 10 s after the last one
    assert row(conn, job_id)[0] == "cancelled"


async def test_a_handler_that_returns_after_its_cancel_is_fenced_out(app, conn):
    """No listener and a long lease: the worker learns nothing before the handler returns, so the
    late outcome reaches the exchange, whose lease guard leaves the cancelled job alone."""
    gate = threading.Event()

    @app.task("ignores-cancel", max_attempts=3, retry_delay=0)
    def ignores_cancel() -> str:
        gate.wait(10)
        return "late"

    job_id = ignores_cancel.enqueue()
    async with Running(app, listen=False, lease_seconds=60) as worker:
        await until(lambda: job_id in worker.running)
        # The heartbeat's first beat (at start, then every 20 s) must be over before the cancel:
        # one that came after it would find the lease gone and tell the worker.
        seen = "SELECT count(*) FROM pgqueue.worker WHERE id = %s"
        await until(lambda: conn.execute(seen, (worker.worker_id,)).fetchone()[0] == 1)
        await asyncio.sleep(0.3)
        assert app.cancel_job(job_id) is True
        gate.set()
        await until(lambda: worker.stats["fenced"] == 1)
        await asyncio.sleep(0.3)
    assert row(conn, job_id)[:3] == ("cancelled", 1, None)


async def test_a_cancel_notice_for_another_lease_is_ignored(app, conn):
    gate = threading.Event()

    @app.task("gated")
    def gated() -> str:
        gate.wait(10)
        return "done"

    job_id = gated.enqueue()
    async with Running(app) as worker:
        await until(lambda: job_id in worker.running)
        # A notice for an older attempt of the job (another lease) must not stop this one.
        conn.execute("SELECT pg_notify('pgqueue_jobs', %s)", (f" cancel {job_id} 00000000-0000-0000-0000-000000000000",))
        await asyncio.sleep(0.3)
        assert not worker.running[job_id].lost
        gate.set()
        await until(lambda: row(conn, job_id)[0] == "completed")
    assert row(conn, job_id)[2] == "done"


# --- waiting for results -----------------------------------------------------------------------


async def test_wait_for_results_errors_and_cancels_sync_and_async(app, conn):
    @app.task("slow-square")
    async def slow_square(n: int) -> int:
        await asyncio.sleep(0.3)
        return n * n

    @app.task("broken", max_attempts=2, retry_delay=0.1, retry_backoff=False)
    async def broken() -> None:
        await asyncio.sleep(0.1)
        raise ValueError("no good")

    square_id = slow_square.enqueue(n=7)
    square2_id = slow_square.enqueue(n=8)
    broken_id = broken.enqueue()
    async with Running(app):
        started = time.monotonic()
        assert await asyncio.to_thread(app.wait_for, square_id, 10) == 49
        assert await app.await_result(square2_id, timeout=10) == 64
        # Woken by the notification, not by the 30 s recheck.
        assert time.monotonic() - started < 5
        with pytest.raises(pgqueue.JobFailed) as failed:
            await app.await_result(broken_id, timeout=10)
        assert "ValueError: no good" in (failed.value.error or "") and failed.value.job_id == broken_id
        assert row(conn, broken_id)[:2] == ("failed", 2)  # the retry was waited through
        with pytest.raises(pgqueue.JobFailed):
            await asyncio.to_thread(app.wait_for, broken_id, 10)
    # Finished before the wait began: seen by the read after LISTEN.
    assert app.wait_for(square_id, timeout=1) == 49


async def test_wait_for_a_cancel_a_timeout_and_an_unknown_job(app, conn):
    @app.task("later")
    async def later() -> str:
        return "ran"

    waiting_id = later.enqueue(delay=3600)
    other_id = later.enqueue(delay=3600)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        app.wait_for(waiting_id, timeout=0.5)
    with pytest.raises(TimeoutError):
        await app.await_result(waiting_id, timeout=0.5)
    assert time.monotonic() - started < 3
    assert row(conn, waiting_id)[0] == "created"  # a timeout leaves the job alone

    async def cancel_soon(job_id: int) -> None:
        await asyncio.sleep(0.3)
        await asyncio.to_thread(app.cancel_job, job_id)

    canceller = asyncio.create_task(cancel_soon(waiting_id))
    with pytest.raises(pgqueue.JobCancelled):
        await app.await_result(waiting_id, timeout=10)
    await canceller
    canceller = asyncio.create_task(cancel_soon(other_id))
    with pytest.raises(pgqueue.JobCancelled):
        await asyncio.to_thread(app.wait_for, other_id, 10)
    await canceller
    with pytest.raises(pgqueue.JobNotFound):
        app.wait_for(10**12, timeout=1)
    with pytest.raises(pgqueue.JobNotFound):
        await app.await_result(10**12, timeout=1)


def exchange_params(done: list[tuple[int, str]]) -> dict[str, Any]:
    """The exchange's parameters for completing ``done`` (id, lease) and claiming nothing."""
    ids = ",".join(str(job_id) for job_id, _ in done)
    leases = ",".join(lease for _, lease in done)
    empty = {f"failed_{name}": "{}" for name in ("id", "lease", "error", "retry_in", "duration")}
    return {
        "done_id": f"{{{ids}}}",
        "done_lease": f"{{{leases}}}",
        "done_output": "{}",
        "done_duration": "{" + ",".join("0.001" for _ in done) + "}",
        **empty,
        "queues": "{}",
        "limit": 0,
        "full": "{}",
        "capped": "{}",
        "caps": "{}",
        "lease_seconds": 60.0,
        "worker_id": "test",
    }


def claim_by_hand(conn: psycopg.Connection[Any], job_id: int) -> str:
    """Make the job active with a lease, as a claim would; its lease id."""
    found = conn.execute(
        "UPDATE pgqueue.job SET state = 'active', attempts = attempts + 1, lease_id = gen_random_uuid(),"
        " lease_expires_at = now() + interval '60 s', started_at = now() WHERE id = %s RETURNING lease_id::text",
        (job_id,),
    ).fetchone()
    assert found is not None
    return str(found[0])


async def test_exchanges_announce_finished_jobs_only_while_someone_waits(app, conn, dsn):
    @app.task("echo")
    async def echo(n: int) -> int:
        return n

    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN pgqueue_done")

        def heard() -> list[str]:
            return [n.payload for n in listener.notifies(timeout=0.3)]

        first = echo.enqueue(n=1)
        await app.adrain()
        assert row(conn, first)[0] == "completed"
        assert heard() == []  # nobody waited: no NOTIFY, no lock on every commit
        with psycopg.connect(dsn, autocommit=True) as waiter:
            waiter.execute(queries("pgqueue").wait_register)
            second = echo.enqueue(n=2)
            await app.adrain()
            assert heard() == [str(second)]
        third = echo.enqueue(n=3)
        await app.adrain()
        assert row(conn, third)[0] == "completed"
        assert heard() == []  # the waiter's locks went with its connection


async def test_a_wait_that_begins_during_an_unannounced_exchange_reads_what_it_wrote(app, conn, dsn):
    @app.task("echo")
    async def echo(n: int) -> int:
        return n

    job_id = echo.enqueue(n=5)
    lease = claim_by_hand(conn, job_id)
    with psycopg.connect(dsn) as worker:  # a transaction: the exchange stays uncommitted
        completed = worker.execute(
            queries("pgqueue").exchange, exchange_params([(job_id, lease)])
        ).fetchone()
        assert completed is not None and completed[0] == [job_id] and completed[3] is None  # unannounced
        waiting = asyncio.create_task(app.await_result(job_id, timeout=20))
        # The wait registers only once that transaction ends: it cannot read the job before.
        await until(
            lambda: conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = 'pgqueue-wait' AND wait_event_type = 'Lock'"
            ).fetchone()
            == (1,)
        )
        await asyncio.sleep(0.2)
        assert not waiting.done()
        worker.commit()
    # Read after the commit: not left to the 30 s recheck for a notification that never comes.
    started = time.monotonic()
    assert await asyncio.wait_for(waiting, 10) is None  # echo's output was not recorded by hand
    assert time.monotonic() - started < 5


# --- progress ------------------------------------------------------------------------------------


def register_progress(app: pgqueue.App, executor: str) -> Any:
    if executor == "process":
        return app.task("progress", executor="process")(lifecycle_handlers.report_progress)
    if executor == "thread":
        return app.task("progress")(lifecycle_handlers.report_progress)

    @app.task("progress")
    async def report_progress_async(path: str) -> str:
        job = pgqueue.current_job()
        for step in range(1, 51):
            job.set_progress(step / 100, message=f"step {step}")
            await asyncio.sleep(0.001)  # let the writer run between reports, as real work would
        Path(path + ".started").write_text("started")
        deadline = time.monotonic() + 30
        while not Path(path + ".go").exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        job.set_progress(1.0, message="done")
        return "finished"

    return report_progress_async


PROGRESS_LOG = """
CREATE TABLE progress_log (at timestamptz NOT NULL, progress jsonb);
CREATE FUNCTION log_progress() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO progress_log VALUES (clock_timestamp(), NEW.progress);
    RETURN NEW;
END $$;
CREATE TRIGGER log_progress AFTER UPDATE OF progress ON pgqueue.job
FOR EACH ROW WHEN (NEW.progress IS DISTINCT FROM OLD.progress) EXECUTE FUNCTION log_progress();
"""


@pytest.mark.parametrize("executor", ["async", "thread", "process"])
async def test_progress_is_seen_mid_run_throttled_and_last_value_kept(app, conn, tmp_path, executor):
    conn.execute(PROGRESS_LOG)  # every write of the column, timed by the database
    task = register_progress(app, executor)
    path = str(tmp_path / "job")
    job_id = task.enqueue(path=path)
    async with Running(app, shutdown_grace=1.0):
        await until(lambda: Path(path + ".started").exists())
        # 50 reports within a moment: the first is written at once, the rest coalesced into the
        # last, written a second after the first. Seen mid-run from another connection.
        await until(lambda: row(conn, job_id)[3] == {"value": 0.5, "message": "step 50"}, timeout=5)
        assert app.get_job(job_id).progress == {"value": 0.5, "message": "step 50"}
        assert row(conn, job_id)[0] == "active"
        Path(path + ".go").write_text("go")
        # The last report, held back by the throttle, is written before the outcome.
        await until(lambda: row(conn, job_id)[0] == "completed")
    job = app.get_job(job_id)
    assert job.output == "finished" and job.progress == {"value": 1.0, "message": "done"}
    writes = conn.execute(
        "SELECT extract(epoch FROM at)::float8, progress FROM progress_log WHERE progress IS NOT NULL ORDER BY at"
    ).fetchall()
    assert 2 <= len(writes) <= 3, writes  # never one per report
    assert writes[-1][1] == {"value": 1.0, "message": "done"}
    assert writes[-2][1] == {"value": 0.5, "message": "step 50"}
    # At most one write per second while the handler runs; its last report is written when it returns.
    gaps = [b[0] - a[0] for a, b in zip(writes[:-1], writes[1:-1])]
    assert all(gap >= 0.9 for gap in gaps), gaps


def test_set_progress_checks_its_value() -> None:
    job = pgqueue.JobContext(1, "t", "default", 1, 1)
    for bad in (-0.1, 1.5, float("nan"), True, "half"):
        with pytest.raises(ValueError):
            job.set_progress(bad)  # type: ignore[arg-type]
    job.set_progress(0.5, message="outside a worker: nothing is written")
    assert not job.cancelled
    job.check_cancelled()


def test_show_prints_progress(app, conn, dsn) -> None:
    from typer.testing import CliRunner

    from pgqueue.cli import cli

    job_id = app.enqueue("render", {"doc": 7})
    conn.execute(
        """UPDATE pgqueue.job SET progress = '{"value": 0.4, "message": "page 4 of 10"}' WHERE id = %s""",
        (job_id,),
    )
    result = CliRunner().invoke(cli, ["show", str(job_id), "--database-url", dsn])
    assert result.exit_code == 0, result.output
    assert "progress   40% (page 4 of 10)" in result.output
    as_json = CliRunner().invoke(cli, ["show", str(job_id), "--database-url", dsn, "--json"])
    assert '"message": "page 4 of 10"' in as_json.output


@pytest.mark.timeout(240)
async def test_cancelling_a_hundred_thousand_waiting_jobs_holds_no_long_lock(app, conn):
    """A bulk cancel works in batches, each its own short transaction that skips rows a worker
    holds: the worker serving the same queue keeps claiming jobs while it runs."""
    jobs = 100_000

    @app.task("mass")
    async def mass(n: int) -> None:
        await asyncio.sleep(0.001)

    mass.enqueue_many({"n": n} for n in range(jobs))
    clock = "SELECT clock_timestamp()"
    async with Running(app, concurrency=20) as worker:
        await until(lambda: worker.stats["completed"] >= 200, timeout=60)
        began = conn.execute(clock).fetchone()[0]
        cancelled = await asyncio.to_thread(app.cancel_jobs, type="mass")
        ended = conn.execute(clock).fetchone()[0]
        left = "SELECT count(*) FROM pgqueue.job WHERE type = 'mass' AND state < 'completed'"
        await until(lambda: conn.execute(left).fetchone()[0] == 0, timeout=60)
    states = dict(
        conn.execute("SELECT state::text, count(*) FROM pgqueue.job WHERE type = 'mass' GROUP BY 1").fetchall()
    )
    assert set(states) <= {"completed", "cancelled"} and sum(states.values()) == jobs
    assert states["cancelled"] == cancelled and cancelled > jobs // 2
    # Claims went on while the cancel ran (the jobs they took may have been cancelled by its next
    # batch before their outcomes were recorded: a bulk cancel stops running jobs too).
    during = conn.execute(
        "SELECT count(*) FROM pgqueue.job WHERE type = 'mass' AND started_at BETWEEN %s AND %s",
        (began, ended),
    ).fetchone()[0]
    assert during > 0, "the worker claimed nothing while the bulk cancel ran"
