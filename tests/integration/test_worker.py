"""The worker runtime, in-process against a real database."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
import pytest
import worker_handlers

import pgqueue
from pgqueue.worker import Worker, WorkerConfig

pytestmark = pytest.mark.timeout(60)


async def run_until(app: pgqueue.App, done: Callable[[], bool], timeout: float = 20, **config: Any) -> Worker:
    """Run a worker until ``done()`` holds (checked every 50 ms), then stop it gracefully."""
    worker = Worker(app.runtime(), WorkerConfig(**{"poll_interval": 0.2, **config}))
    running = asyncio.create_task(worker.run())
    deadline = time.monotonic() + timeout
    try:
        while not done():
            if running.done():
                running.result()
                raise AssertionError("the worker stopped on its own")
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached in time")
            await asyncio.sleep(0.05)
    finally:
        worker.stop()
        await asyncio.wait_for(running, timeout=15)
    return worker


def states(conn: psycopg.Connection[Any]) -> dict[str, int]:
    return dict(conn.execute("SELECT state::text, count(*) FROM pgqueue.job GROUP BY 1").fetchall())


def all_final(conn: psycopg.Connection[Any]) -> Callable[[], bool]:
    return lambda: (
        not conn.execute(
            "SELECT 1 FROM pgqueue.job WHERE state NOT IN ('completed', 'failed', 'cancelled') LIMIT 1"
        ).fetchone()
    )


async def test_burst_runs_everything_and_stores_outputs(app, conn):
    seen: list[int] = []

    @app.task("square")
    async def square(n: int) -> dict:
        seen.append(n)
        return {"square": n * n}

    @app.task("sync-square")
    def sync_square(n: int) -> int:
        return n * n

    ids = square.enqueue_many([{"n": n} for n in range(300)])
    sync_id = sync_square.enqueue(n=7)
    await app.arun_worker(burst=True, concurrency=25)
    assert sorted(seen) == list(range(300))
    assert states(conn) == {"completed": 301}
    job = app.get_job(ids[12])
    assert job.output == {"square": 144} and job.success is True and job.attempts == 1
    assert job.duration is not None and job.duration >= 0 and job.lease_id is None
    assert app.get_job(sync_id).output == 49


async def test_the_jobs_of_one_claim_start_highest_priority_first_then_oldest(app, conn):
    """One claim takes all six; the statement returns them in the order its update met them (by
    id), and the worker starts them in priority order."""
    started: list[int] = []

    @app.task("ordered")
    async def ordered(n: int) -> None:
        started.append(n)

    priorities = [0, 5, 0, 10, 5, -1]  # job n has priorities[n]; ids follow n
    app.enqueue_many([("ordered", {"n": n}, {"priority": p}) for n, p in enumerate(priorities)])
    await app.arun_worker(burst=True, concurrency=10)
    assert started == [3, 1, 4, 0, 2, 5]
    assert states(conn) == {"completed": 6}


async def test_retry_then_success_counts_attempts_and_spaces_retries(app, conn):
    calls = {"n": 0}

    @app.task("flaky", max_attempts=5, retry_delay=0.3, retry_backoff=False)
    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise RuntimeError(f"failure {calls['n']}")
        return "ok"

    job_id = flaky.enqueue()
    await run_until(app, all_final(conn))
    job = app.get_job(job_id)
    assert (job.state, job.attempts, job.output) == (pgqueue.JobState.COMPLETED, 3, "ok")
    assert [e["attempt"] for e in job.errors] == [1, 2]
    assert "failure 2" in job.errors[1]["error"]
    # The database's own timestamps show each retry waited its delay.
    gaps = conn.execute(
        """SELECT extract(epoch FROM (e2.at::timestamptz - e1.at::timestamptz))
           FROM pgqueue.job j,
                LATERAL (SELECT j.errors->0->>'at' AS at) e1,
                LATERAL (SELECT j.errors->1->>'at' AS at) e2
           WHERE j.id = %s""",
        (job_id,),
    ).fetchone()[0]
    assert float(gaps) >= 0.3


async def test_always_failing_job_fails_after_max_attempts_with_errors_kept(app, conn):
    @app.task("doomed", max_attempts=3, retry_delay=0)
    async def doomed() -> None:
        raise ValueError("bad input, always")

    job_id = doomed.enqueue()
    await run_until(app, all_final(conn))
    job = app.get_job(job_id)
    assert job.state is pgqueue.JobState.FAILED and job.attempts == 3
    assert "ValueError: bad input, always" in job.error
    assert len(job.errors) == 3 and job.finished_at is not None


async def test_exponential_backoff_grows(app, conn):
    @app.task("backoff", max_attempts=4, retry_delay=0.2, retry_backoff=True, retry_delay_max=10)
    def backoff() -> None:
        raise RuntimeError("again")

    job_id = backoff.enqueue()
    await run_until(app, all_final(conn), timeout=30)
    rows = conn.execute(
        """SELECT extract(epoch FROM (e.value->>'at')::timestamptz)
           FROM pgqueue.job, jsonb_array_elements(errors) e WHERE id = %s ORDER BY 1""",
        (job_id,),
    ).fetchall()
    at = [float(r[0]) for r in rows]
    gaps = [b - a for a, b in zip(at, at[1:])]
    # attempt n waits retry_delay * 2**(n-1), jittered down by at most a half
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.4


async def test_unknown_type_fails_at_once_without_looping(app, conn):
    job_id = app.enqueue("nobody-handles-this", {"x": 1}, max_attempts=10)

    @app.task("known")
    async def known() -> None: ...

    await app.arun_worker(burst=True)
    job = app.get_job(job_id)
    assert job.state is pgqueue.JobState.FAILED and job.attempts == 1
    assert "no handler is registered for job type 'nobody-handles-this'" in job.error


async def test_timeouts_free_the_slot_for_async_sync_and_stubborn_handlers(app, conn):
    release = threading.Event()

    @app.task("slow-async", timeout=0.3, max_attempts=1)
    async def slow_async() -> None:
        await asyncio.sleep(30)

    @app.task("slow-sync", timeout=0.3, max_attempts=1)
    def slow_sync() -> None:
        release.wait(30)

    @app.task("stubborn", timeout=0.3, max_attempts=1)
    async def stubborn() -> None:
        for _ in range(300):
            if release.is_set():  # the test is over (else the loop's closing waits for it)
                return
            try:
                await asyncio.sleep(0.1)
            except asyncio.CancelledError:
                pass  # ignores its cancellation

    @app.task("quick")
    async def quick() -> None: ...

    slow_ids = [slow_async.enqueue(), slow_sync.enqueue(), stubborn.enqueue()]
    quick_ids = quick.enqueue_many([{} for _ in range(20)])
    started = time.monotonic()
    # concurrency 3: the three slow jobs fill every slot; the quick ones run only once timeouts free them.
    try:
        await run_until(app, all_final(conn), concurrency=3)
    finally:
        release.set()
    assert time.monotonic() - started < 10
    for job_id in slow_ids:
        job = app.get_job(job_id)
        assert job.state is pgqueue.JobState.FAILED and "timed out after 0.3 s" in job.error
    assert all(app.get_job(i).state is pgqueue.JobState.COMPLETED for i in quick_ids)


async def test_base_exceptions_in_handlers_do_not_stop_the_worker(app, conn):
    @app.task("sys-exit-sync", max_attempts=1)
    def sys_exit_sync() -> None:
        raise SystemExit(3)

    @app.task("sys-exit-async", max_attempts=1)
    async def sys_exit_async() -> None:
        raise SystemExit(4)

    @app.task("interrupt", max_attempts=1)
    async def interrupt() -> None:
        raise KeyboardInterrupt

    @app.task("after")
    async def after() -> str:
        return "still running"

    bad = [sys_exit_sync.enqueue(), sys_exit_async.enqueue(), interrupt.enqueue()]
    good = after.enqueue_many([{} for _ in range(10)])
    await app.arun_worker(burst=True, concurrency=4)
    for job_id, name in zip(bad, ["SystemExit: 3", "SystemExit: 4", "KeyboardInterrupt"]):
        job = app.get_job(job_id)
        assert job.state is pgqueue.JobState.FAILED and name in job.error
    assert all(app.get_job(i).output == "still running" for i in good)


@pytest.mark.timeout(90)
async def test_process_executor_runs_kills_and_survives_dead_children(app, conn):
    square = app.task("cpu-square", executor="process")(worker_handlers.cpu_square)
    app.task("exit-hard", executor="process", max_attempts=2, retry_delay=0)(worker_handlers.exit_hard)
    app.task("sleep-forever", executor="process", timeout=1, max_attempts=1)(worker_handlers.sleep_forever)
    ids = square.enqueue_many([{"n": n} for n in range(6)])
    crash = app.enqueue("exit-hard", {"code": 7})
    hung = app.enqueue("sleep-forever")
    await run_until(app, all_final(conn), timeout=60, concurrency=4)
    outputs = [app.get_job(i).output for i in ids]
    assert [o["square"] for o in outputs] == [n * n for n in range(6)]
    import os

    assert all(o["pid"] != os.getpid() for o in outputs)
    crashed = app.get_job(crash)
    assert crashed.state is pgqueue.JobState.FAILED and crashed.attempts == 2
    assert "exited with code 7" in crashed.error
    hung_job = app.get_job(hung)
    assert hung_job.state is pgqueue.JobState.FAILED and "timed out" in hung_job.error


async def test_per_task_concurrency_cap_is_respected(app, conn):
    active = {"now": 0, "max": 0}

    @app.task("capped", concurrency=2)
    async def capped() -> None:
        active["now"] += 1
        active["max"] = max(active["max"], active["now"])
        await asyncio.sleep(0.05)
        active["now"] -= 1

    @app.task("free")
    async def free() -> None:
        await asyncio.sleep(0.05)

    capped.enqueue_many([{} for _ in range(20)])
    free.enqueue_many([{} for _ in range(20)])
    await run_until(app, all_final(conn), concurrency=10)
    assert active["max"] == 2
    assert states(conn) == {"completed": 40}


async def test_expired_lease_is_rescued_and_counts_the_attempt(app, conn):
    ran: list[int] = []

    @app.task("orphan", max_attempts=3)
    async def orphan() -> None:
        ran.append(1)

    job_id = orphan.enqueue()
    # As if a worker claimed it and died: active, attempt counted, lease long expired.
    conn.execute(
        """UPDATE pgqueue.job SET state = 'active', attempts = 1, lease_id = gen_random_uuid(),
           lease_expires_at = now() - interval '1 minute', worker_id = 'dead-worker' WHERE id = %s""",
        (job_id,),
    )
    await run_until(app, all_final(conn), rescue_interval=0.2)
    job = app.get_job(job_id)
    assert job.state is pgqueue.JobState.COMPLETED and job.attempts == 2 and ran == [1]
    assert "dead-worker" in job.errors[0]["error"]


async def test_rescue_of_a_job_out_of_attempts_fails_it(app, conn):
    @app.task("poison", max_attempts=2)
    async def poison() -> None: ...

    job_id = poison.enqueue()
    conn.execute(
        """UPDATE pgqueue.job SET state = 'active', attempts = 2, lease_id = gen_random_uuid(),
           lease_expires_at = now() - interval '1 second' WHERE id = %s""",
        (job_id,),
    )
    await run_until(app, all_final(conn), rescue_interval=0.2)
    job = app.get_job(job_id)
    assert job.state is pgqueue.JobState.FAILED and job.attempts == 2 and "lease expired" in job.error


async def test_completion_is_fenced_when_the_lease_changed(app, conn):
    gate = asyncio.Event()

    @app.task("fenced")
    async def fenced() -> str:
        await gate.wait()
        return "stale result"

    job_id = fenced.enqueue()
    worker = Worker(app.runtime(), WorkerConfig(poll_interval=0.2))
    running = asyncio.create_task(worker.run())
    while not worker.running:
        await asyncio.sleep(0.02)
    # Another worker took the job over and finished it (new lease, final state).
    conn.execute(
        "UPDATE pgqueue.job SET lease_id = gen_random_uuid(), output = '\"winner\"' WHERE id = %s", (job_id,)
    )
    gate.set()
    while worker.stats["fenced"] == 0:
        await asyncio.sleep(0.02)
    worker.stop()
    await running
    job = app.get_job(job_id)
    assert job.output == "winner" and job.state is pgqueue.JobState.ACTIVE


async def test_notify_wakes_an_idle_worker_long_before_the_poll(app, conn):
    @app.task("ping")
    async def ping() -> None: ...

    worker = Worker(app.runtime(), WorkerConfig(poll_interval=30))
    running = asyncio.create_task(worker.run())
    await asyncio.sleep(1.0)  # idle, listening
    job_id = ping.enqueue()
    deadline = time.monotonic() + 5
    while app.get_job(job_id).state is not pgqueue.JobState.COMPLETED:
        assert time.monotonic() < deadline, "a notification should have woken the worker"
        await asyncio.sleep(0.02)
    job = app.get_job(job_id)
    assert (job.started_at - job.created_at).total_seconds() < 2
    worker.stop()
    await running


async def test_listener_is_reestablished_after_its_backend_is_terminated(app, conn):
    @app.task("ping")
    async def ping() -> None: ...

    worker = Worker(app.runtime(), WorkerConfig(poll_interval=30))
    running = asyncio.create_task(worker.run())
    await asyncio.sleep(1.0)
    killed = conn.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = 'pgqueue-listener' AND datname = current_database()"
    ).fetchone()[0]
    assert killed == 1
    await asyncio.sleep(2.0)  # reconnect backoff
    job_id = ping.enqueue()
    deadline = time.monotonic() + 8
    while app.get_job(job_id).state is not pgqueue.JobState.COMPLETED:
        assert time.monotonic() < deadline, "the listener should be back well before the 30 s poll"
        await asyncio.sleep(0.05)
    listening = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgqueue-listener' "
        "AND datname = current_database()"
    ).fetchone()[0]
    assert listening == 1
    worker.stop()
    await running


async def test_polling_only_picks_up_within_the_poll_interval(app, conn):
    @app.task("ping")
    async def ping() -> None: ...

    worker = Worker(app.runtime(), WorkerConfig(poll_interval=0.5, listen=False))
    running = asyncio.create_task(worker.run())
    await asyncio.sleep(0.7)
    job_ids = [ping.enqueue() for _ in range(3)]
    await asyncio.sleep(1.5)
    worker.stop()
    await running
    for job_id in job_ids:
        job = app.get_job(job_id)
        assert job.state is pgqueue.JobState.COMPLETED
        assert (job.started_at - job.created_at).total_seconds() <= 0.5 + 0.3


async def test_terminated_worker_backends_are_survived(app, conn):
    @app.task("step")
    async def step() -> None:
        await asyncio.sleep(0.01)

    step.enqueue_many([{} for _ in range(400)])
    worker = Worker(app.runtime(), WorkerConfig(poll_interval=0.2, concurrency=5))
    running = asyncio.create_task(worker.run())
    for _ in range(3):
        await asyncio.sleep(0.3)
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name LIKE 'pgqueue-%%' AND datname = current_database()"
        )
    deadline = time.monotonic() + 40
    while not all_final(conn)():
        assert time.monotonic() < deadline, states(conn)
        await asyncio.sleep(0.1)
    worker.stop()
    await running
    assert states(conn) == {"completed": 400}


async def test_graceful_stop_hands_back_jobs_that_overrun_the_grace(app, conn):
    @app.task("long")
    async def long() -> None:
        await asyncio.sleep(30)

    @app.task("short")
    async def short() -> str:
        await asyncio.sleep(0.3)
        return "done"

    long_id = long.enqueue()
    short_id = short.enqueue()
    worker = Worker(app.runtime(), WorkerConfig(poll_interval=0.2, shutdown_grace=1.0))
    running = asyncio.create_task(worker.run())
    while len(worker.running) < 2:
        await asyncio.sleep(0.02)
    stopped_at = time.monotonic()
    worker.stop()
    await asyncio.wait_for(running, timeout=10)
    assert time.monotonic() - stopped_at < 3
    assert app.get_job(short_id).output == "done"
    handed_back = app.get_job(long_id)
    # Handed back at once, and the interrupted attempt is not counted.
    assert handed_back.state is pgqueue.JobState.CREATED and handed_back.attempts == 0
    assert handed_back.lease_id is None


async def test_worker_refuses_an_unmigrated_database(empty_dsn):
    app = pgqueue.App(empty_dsn)
    try:
        with pytest.raises(pgqueue.SchemaOutOfDate, match="pgqueue migrate"):
            await app.arun_worker(burst=True)
    finally:
        await app.aclose()


@pytest.mark.parametrize(
    "config",
    [
        {"concurrency": 0},
        {"concurrency": -1},
        {"poll_interval": 0},
        {"queues": "emails"},
        {"queues": [""]},
        {"lease_seconds": 0.1},
        {"concurrency": 10_001},
        {"worker_id": ""},
        {"worker_id": "a\x00b"},
        {"worker_id": "x" * 500},
    ],
)
def test_bad_worker_config_is_refused(app, config):
    with pytest.raises(pgqueue.ConfigurationError):
        WorkerConfig(**config).validated()


async def test_current_job_is_known_to_every_kind_of_handler(app, conn):
    @app.task("who-async")
    async def who_async() -> dict:
        job = pgqueue.current_job()
        return {"id": job.id, "attempt": job.attempt, "type": job.type}

    @app.task("who-thread")
    def who_thread() -> dict:
        job = pgqueue.current_job()
        return {"id": job.id, "attempt": job.attempt, "type": job.type}

    app.task("who-process", executor="process")(worker_handlers.whoami)
    ids = [who_async.enqueue(), who_thread.enqueue(), app.enqueue("who-process")]
    await run_until(app, all_final(conn), timeout=40)
    for job_id, name in zip(ids, ["who-async", "who-thread", "who-process"]):
        assert app.get_job(job_id).output == {"id": job_id, "attempt": 1, "type": name}
    with pytest.raises(RuntimeError, match="inside a running job"):
        pgqueue.current_job()


async def test_app_retry_defaults_apply_when_neither_job_nor_task_sets_them(dsn, conn):
    app = pgqueue.App(dsn, max_attempts=2, retry_delay=1.5, retry_backoff=False)

    @app.task("fails-once")
    async def fails_once() -> None:
        raise RuntimeError("no")

    job_id = fails_once.enqueue()
    try:
        await run_until(app, lambda: app.get_job(job_id).state is pgqueue.JobState.RETRY)
        job = app.get_job(job_id)
        waited = (job.run_at - datetime.fromisoformat(job.errors[0]["at"])).total_seconds()
        assert abs(waited - 1.5) < 0.01 and job.max_attempts == 2
    finally:
        await app.aclose()


async def test_a_listen_that_never_hears_its_probe_falls_back_to_polling(app, conn, empty_dsn, caplog):
    """LISTEN on another database never hears this one's NOTIFYs, like LISTEN behind a pooler in
    transaction mode: the worker notices, warns, and keeps working by polling."""

    @app.task("ping")
    async def ping() -> None: ...

    worker = Worker(app.runtime(), WorkerConfig(poll_interval=0.3, listen_database_url=empty_dsn))
    running = asyncio.create_task(worker.run())
    try:
        deadline = time.monotonic() + 30
        while "LISTEN/NOTIFY does not work" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            await asyncio.sleep(0.1)
        job_id = ping.enqueue()
        deadline = time.monotonic() + 5
        while app.get_job(job_id).state is not pgqueue.JobState.COMPLETED:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    finally:
        worker.stop()
        await running



async def test_a_transaction_holding_the_xmin_horizon_is_reported(app, dsn, caplog):
    @app.task("ping")
    async def ping() -> None: ...

    with psycopg.connect(dsn) as holder:
        holder.execute("SET application_name = 'long-report'")
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT count(*) FROM pgqueue.job")  # takes the snapshot that pins the horizon
        holder_pid = holder.info.backend_pid
        worker = Worker(app.runtime(), WorkerConfig(poll_interval=0.2, rescue_interval=0.2, xmin_warning=1.0))
        running = asyncio.create_task(worker.run())
        try:
            deadline = time.monotonic() + 15
            # Other sessions on a shared server may be reported too; wait for this one.
            while f"backend {holder_pid} " not in caplog.text:
                assert time.monotonic() < deadline, caplog.text[-2000:]
                await asyncio.sleep(0.1)
        finally:
            worker.stop()
            await running
        holder.rollback()
    assert f"backend {holder_pid} " in caplog.text and "long-report" in caplog.text


async def test_async_commit_sets_the_worker_connections_only_and_runs_jobs(app, conn):
    @app.task("add")
    async def add(a: int, b: int) -> int:
        return a + b

    ids = add.enqueue_many([{"a": n, "b": 1} for n in range(50)])
    seen: list[str] = []

    worker = Worker(app.runtime(), WorkerConfig(poll_interval=0.2, async_commit=True))
    running = asyncio.create_task(worker.run())
    try:
        deadline = time.monotonic() + 20
        while not all_final(conn)():
            assert time.monotonic() < deadline and not running.done()
            await asyncio.sleep(0.05)
        async with worker.db.pool.connection() as wconn:
            seen.append((await (await wconn.execute("SHOW synchronous_commit")).fetchone())[0])
    finally:
        worker.stop()
        await asyncio.wait_for(running, timeout=15)
    assert seen == ["off"]
    assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "on"  # producers are untouched
    assert [app.get_job(i).output for i in ids] == [n + 1 for n in range(50)]


async def test_burst_runs_retries_that_are_due_at_once(app, conn):
    """A failure with no retry delay is recorded in the same statement as the next claim, which
    cannot see the retry: a burst worker must claim once more rather than exit with it waiting."""
    attempts: list[int] = []

    @app.task("flaky", max_attempts=3, retry_delay=0)
    async def flaky() -> str:
        attempts.append(pgqueue.current_job().attempt)
        if len(attempts) < 3:
            raise RuntimeError("not yet")
        return "done"

    job_id = app.enqueue("flaky")
    await asyncio.wait_for(app.arun_worker(burst=True, poll_interval=5.0, listen=False), timeout=30)
    assert attempts == [1, 2, 3]
    assert app.get_job(job_id).state.value == "completed"


async def test_a_burst_worker_whose_last_jobs_end_while_it_claims_stops_at_once(app, conn):
    """The last jobs of a burst end together, while the claim their first slot freed is in
    flight: the wait after that claim must see those slots freed, not sleep a poll interval
    (30 s here) before the claim that records them and finds the queue empty."""

    @app.task("together")
    async def together(n: int) -> None:
        await asyncio.sleep(0.2)

    together.enqueue_many([{"n": n} for n in range(300)])
    started = time.monotonic()
    await asyncio.wait_for(app.arun_worker(burst=True, concurrency=1000, poll_interval=30.0), timeout=40)
    assert time.monotonic() - started < 10
    assert conn.execute("SELECT state::text, count(*) FROM pgqueue.job GROUP BY 1").fetchall() == [
        ("completed", 300)
    ]
