"""Enqueueing: in the caller's transaction or on the pool, with options, in bulk, unique, and the wake-ups."""

from __future__ import annotations

import asyncio
import os
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import psycopg_pool
import pytest

import pgqueue
from pgqueue import JobNotFound, JobState, migrate

Notifications = Callable[..., "list[tuple[str, str]]"]
HOSTILE = "'; DROP TABLE pgqueue.job; --"


# --- the caller's transaction ------------------------------------------------------------


def test_sync_enqueue_follows_the_callers_transaction(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any], count_jobs: Callable[..., int]
) -> None:
    @app.task("send-welcome-email", queue="emails")
    def send(user_id: int) -> None: ...

    with psycopg.connect(dsn) as caller:
        assert send.enqueue(conn=caller, user_id=1) is not None
        assert count_jobs() == 0  # not visible before commit
        caller.rollback()
        assert count_jobs() == 0
        with caller.transaction():
            caller.execute("SELECT 1")
            job_id = send.enqueue(conn=caller, user_id=2)
        assert conn.execute("SELECT id, type, queue, data FROM pgqueue.job").fetchall() == [
            (job_id, "send-welcome-email", "emails", {"user_id": 2})
        ]


def test_sync_enqueue_rolled_back_by_an_error_leaves_no_job(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any], count_jobs: Callable[..., int]
) -> None:
    with pytest.raises(RuntimeError), psycopg.connect(dsn) as caller, caller.transaction():
        app.enqueue("t", {"a": 1}, conn=caller)
        raise RuntimeError("the request failed")
    assert count_jobs() == 0


async def test_async_enqueue_follows_the_callers_transaction(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any], count_jobs: Callable[..., int]
) -> None:
    @app.task("notify-slack")
    async def notify(user_id: int) -> None: ...

    async with await psycopg.AsyncConnection.connect(dsn) as caller:
        await notify.aenqueue(conn=caller, user_id=1)
        await app.aenqueue("notify-slack", {"user_id": 1}, conn=caller)
        await notify.aenqueue_many([{"user_id": 1}], conn=caller)
        await caller.rollback()
        assert count_jobs() == 0
        job_id = await notify.using(priority=3).aenqueue(conn=caller, user_id=2)
        ids = await app.aenqueue_many([("notify-slack", {"user_id": 3})], conn=caller)
        await caller.commit()
    assert conn.execute("SELECT id, priority, data FROM pgqueue.job ORDER BY id").fetchall() == [
        (job_id, 3, {"user_id": 2}),
        (ids[0], 0, {"user_id": 3}),
    ]


def test_enqueue_without_conn_commits_on_the_pool(app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    @app.task("t")
    def handler() -> None: ...

    first = handler.enqueue()
    second = app.enqueue("t", {"x": 1})
    assert conn.execute("SELECT id, data FROM pgqueue.job ORDER BY id").fetchall() == [
        (first, {}),
        (second, {"x": 1}),
    ]


async def test_aenqueue_without_conn_commits_on_the_async_pool(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    @app.task("t")
    async def handler(x: int) -> None: ...

    try:
        first = await handler.aenqueue(x=1)
        second = await app.aenqueue("t", {"x": 2})
        many = await app.aenqueue_many([("t", {"x": 3}), ("t", {"x": 4})])
        assert (await app.aget_job(first)).data == {"x": 1}
    finally:
        await app.aclose()
    assert conn.execute("SELECT id, data FROM pgqueue.job ORDER BY id").fetchall() == [
        (first, {"x": 1}),
        (second, {"x": 2}),
        (many[0], {"x": 3}),
        (many[1], {"x": 4}),
    ]


def _pool_backends(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'pgqueue'"
    ).fetchone()
    return row[0] if row else 0


def test_the_pool_connections_kept_between_enqueues_are_closed_with_the_app(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    app = pgqueue.App(dsn, notify=False)
    with ThreadPoolExecutor(4) as threads:
        ids = list(threads.map(lambda n: app.enqueue("t", {"n": n}), range(200)))
    assert len(set(ids)) == 200
    assert 1 <= _pool_backends(conn) <= app.pool_size
    app.close()
    deadline = time.monotonic() + 5
    while _pool_backends(conn) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _pool_backends(conn) == 0
    assert app.enqueue("t", {"n": 200}) is not None  # a closed App opens a new pool when used again
    app.close()


def test_pool_connections_the_server_ended_are_replaced_before_use(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    """A restart or pg_terminate_backend ends idle pool connections; the next enqueues must not
    fail on them (a web request would): a dead one is noticed on checkout, without a round trip."""
    with ThreadPoolExecutor(4) as threads:
        list(threads.map(lambda n: app.enqueue("t", {"n": n}), range(40)))
    killed = conn.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'pgqueue'"
    ).fetchone()
    assert killed is not None and killed[0] >= 1
    time.sleep(0.2)  # the goodbyes reach the sockets
    for n in range(killed[0] + 2):
        assert app.enqueue("t", {"n": n}) is not None  # no OperationalError
    # Each went back to the pool, which replaced it.
    assert [app.get_job(app.enqueue("t", {"n": n}) or 0).data for n in range(3)] == [{"n": n} for n in range(3)]


def test_a_kept_connection_goes_back_to_its_pool_in_time(dsn: str) -> None:
    from pgqueue.db.pool import PooledConnection, Stash

    stash: Stash[PooledConnection] = Stash(size=2, hold=0.2)
    with psycopg_pool.ConnectionPool(
        dsn, min_size=1, max_size=2, kwargs={"autocommit": True}, connection_class=PooledConnection
    ) as pool:
        lent = stash.lent(pool.getconn(), pool)
        assert stash.keep(lent) and stash.take() is lent
        lent.execute("BEGIN")
        assert not stash.keep(lent)  # not idle: back to the pool, which rolls it back
        lent.execute("ROLLBACK")
        time.sleep(0.25)
        assert not stash.keep(lent)  # held long enough: back to the pool, whose rules apply
        pool.putconn(lent)
        full = [stash.lent(pool.getconn(), pool) for _ in range(2)]
        assert [stash.keep(c) for c in full] == [True, True]
        assert sorted(map(id, stash.drain())) == sorted(map(id, full)) and stash.take() is None
        for c in full:
            pool.putconn(c)


# --- options -----------------------------------------------------------------------------


def test_using_writes_every_option(app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any]) -> None:
    @app.task("report", queue="reports", max_attempts=3, timeout=60, priority=1)
    def report(report_id: int) -> None: ...

    with psycopg.connect(dsn) as caller:
        now = caller.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        delayed = report.using(
            delay=timedelta(minutes=5),
            priority=10,
            queue="urgent",
            max_attempts=9,
            retry_delay=2,
            retry_backoff=False,
            retry_delay_max=30,
            timeout=5,
            unique_key="r-1",
        ).enqueue(conn=caller, report_id=1)
        plain = report.enqueue(conn=caller, report_id=2)
        seconds = report.using(delay=90).enqueue(conn=caller, report_id=3)
        caller.commit()

    rows = {
        row[0]: row[1:]
        for row in conn.execute(
            "SELECT id, queue, priority, max_attempts, run_at, retry_delay, retry_backoff, retry_delay_max, "
            "timeout, unique_key, state::text, attempts FROM pgqueue.job"
        ).fetchall()
    }
    # run_at comes from the enqueueing transaction's now(), not from this process's clock.
    assert rows[delayed] == (
        "urgent",
        10,
        9,
        now + timedelta(minutes=5),
        2.0,
        False,
        30.0,
        5.0,
        "r-1",
        "created",
        0,
    )
    # The task's own options; retry settings it leaves unset stay NULL (the worker applies its
    # task's, else the app's, defaults), so rows stay narrow.
    assert rows[plain] == ("reports", 1, 3, now, None, None, None, 60.0, None, "created", 0)
    assert rows[seconds][3] == now + timedelta(seconds=90)


def test_run_at_is_stored_as_given(app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    when = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=-5)))
    job_id = app.enqueue("t", {}, run_at=when)
    assert app.get_job(job_id).run_at == when

    # A later using() replaces the earlier one's time: the last word wins, delay or run_at.
    @app.task("u")
    def handler() -> None: ...

    with_run_at = handler.using(delay=3600).using(run_at=when).enqueue()
    assert app.get_job(with_run_at).run_at == when
    with_delay = handler.using(run_at=when).using(delay=0).enqueue()
    db_now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
    assert app.get_job(with_delay).run_at <= db_now


def test_enqueue_by_name_for_an_unregistered_type_uses_the_defaults(app: pgqueue.App, dsn: str) -> None:
    assert "not-registered-here" not in app.tasks
    with psycopg.connect(dsn) as caller:
        now = caller.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        job_id = app.enqueue("not-registered-here", {"x": [1, 2]}, conn=caller)
        job = app.get_job(job_id, conn=caller)
        caller.commit()
    assert (job.type, job.queue, job.data, job.state, job.priority) == (
        "not-registered-here",
        "default",
        {"x": [1, 2]},
        JobState.CREATED,
        0,
    )
    assert (job.attempts, job.max_attempts, job.run_at, job.created_at) == (0, 5, now, now)
    # Unset retry settings stay NULL: the worker's task (or app) defaults apply when it runs.
    assert (job.retry_delay, job.retry_backoff, job.retry_delay_max, job.timeout) == (None, None, None, None)
    assert (job.started_at, job.finished_at, job.output, job.error, job.errors) == (
        None,
        None,
        None,
        None,
        [],
    )
    assert job.success is None


def test_app_defaults_apply_to_every_job(dsn: str) -> None:
    with pgqueue.App(dsn, max_attempts=2, retry_delay=7, retry_backoff=False, retry_delay_max=9) as app:
        job = app.get_job(app.enqueue("t", {}))
    # max_attempts is stored with the job; retry settings are applied by the worker (see test_worker).
    assert (job.max_attempts, job.retry_delay, job.retry_backoff, job.retry_delay_max) == (2, None, None, None)


def test_enqueue_by_name_uses_the_registered_tasks_options(app: pgqueue.App) -> None:
    @app.task("pdf", queue="pdf", max_attempts=2)
    def pdf() -> None: ...

    job = app.get_job(app.enqueue("pdf", {}, priority=4))
    assert (job.queue, job.max_attempts, job.priority) == ("pdf", 2, 4)


# --- bulk --------------------------------------------------------------------------------


def test_enqueue_many_ten_thousand_in_one_statement(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any], notifications: Notifications
) -> None:
    @app.task("bulk", queue="bulk")
    def bulk(i: int) -> None: ...

    # A statement-level trigger fires once per INSERT statement: a row-by-row insert would fire 10,000 times.
    conn.execute("CREATE TABLE insert_statements (n int)")
    conn.execute(
        "CREATE FUNCTION count_insert() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN INSERT INTO insert_statements VALUES (1); RETURN NULL; END $$"
    )
    conn.execute(
        "CREATE TRIGGER count_insert AFTER INSERT ON pgqueue.job "
        "FOR EACH STATEMENT EXECUTE FUNCTION count_insert()"
    )
    with psycopg.connect(dsn, autocommit=True) as listen:
        listen.execute("LISTEN pgqueue_jobs")
        ids = bulk.enqueue_many({"i": i} for i in range(10_000))
        assert notifications(listen, expect=1) == [("pgqueue_jobs", "bulk")]

    assert len(ids) == 10_000
    assert ids == sorted(ids) and len(set(ids)) == 10_000
    rows = conn.execute("SELECT id, data, xmin::text, uid FROM pgqueue.job ORDER BY id").fetchall()
    assert [row[0] for row in rows] == ids
    assert [row[3] for row in rows] == [job_id.uid for job_id in ids]  # made in chunks, beside the COPY
    assert all(row[1] == {"i": i} for i, row in enumerate(rows))
    assert len({row[2] for row in rows}) == 1  # one transaction
    assert conn.execute("SELECT count(*) FROM insert_statements").fetchone() == (1,)


def test_app_enqueue_many_mixes_types_queues_and_options(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(dsn) as caller:
        now = caller.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        ids = app.enqueue_many(
            [
                ("a", {"n": 1}),
                ("b", {"n": 2}, {"queue": "other", "priority": 5, "delay": 10}),
                ["a", None],
                ("c", {"n": 4}, {}),
            ],
            conn=caller,
        )
        caller.commit()
    rows = conn.execute(
        "SELECT id, type, queue, priority, run_at, data FROM pgqueue.job ORDER BY id"
    ).fetchall()
    assert rows == [
        (ids[0], "a", "default", 0, now, {"n": 1}),
        (ids[1], "b", "other", 5, now + timedelta(seconds=10), {"n": 2}),
        (ids[2], "a", "default", 0, now, {}),
        (ids[3], "c", "default", 0, now, {"n": 4}),
    ]
    assert app.enqueue_many([]) == []


def test_task_enqueue_many_takes_any_iterable_and_none_for_no_arguments(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    @app.task("t", queue="q")
    def t(n: int = 0) -> None: ...

    few = t.enqueue_many(iter([{"n": 1}, None]))  # INSERT ... unnest
    many = t.enqueue_many({"n": n} if n % 2 else None for n in range(300))  # COPY
    assert t.enqueue_many(iter([])) == []
    rows = conn.execute("SELECT id, uid, type, queue, data FROM pgqueue.job ORDER BY id").fetchall()
    assert [row[0] for row in rows] == [*few, *many]
    assert [row[1] for row in rows] == [job_id.uid for job_id in [*few, *many]]
    assert [row[4] for row in rows] == [{"n": 1}, {}, *({"n": n} if n % 2 else {} for n in range(300))]
    assert {(row[2], row[3]) for row in rows} == {("t", "q")}


def test_bulk_copy_keeps_each_jobs_options_time_and_awkward_text(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    awkward = ["tab\there", "new\nline", "back\\slash", "\\N", "é 漢 😀", "\\u0000 as text", "'; --"]
    when = datetime(2031, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    options: list[dict[str, Any]] = [
        {},
        {"delay": 10},
        {"run_at": when},
        {"queue": "other", "priority": 5, "max_attempts": 9, "retry_delay": 2, "retry_backoff": False,
         "retry_delay_max": 30, "timeout": 4},
    ]
    items = [("t", {"n": n, "s": awkward[n % len(awkward)]}, options[n % len(options)]) for n in range(100)]
    with psycopg.connect(dsn) as caller:
        now = caller.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        ids = app.enqueue_many(items, conn=caller)
        at_once = app.enqueue_many([("t", {"n": n}) for n in range(100)], conn=caller)
        caller.commit()
    rows = {
        row[0]: row[1:]
        for row in conn.execute(
            "SELECT id, data, queue, priority, max_attempts, run_at, retry_delay, retry_backoff, "
            "retry_delay_max, timeout FROM pgqueue.job"
        )
    }
    run_at = {0: now, 1: now + timedelta(seconds=10), 2: when, 3: now}
    for job_id, (_, data, option) in zip(ids, items):
        kind = data["n"] % len(options)
        expected = ("other", 5, 9, 2.0, False, 30.0, 4.0) if kind == 3 else ("default", 0, 5, None, None, None, None)
        assert rows[job_id] == (data, *expected[:3], run_at[kind], *expected[3:])
    assert all(rows[job_id][:5] == ({"n": n}, "default", 0, 5, now) for n, job_id in enumerate(at_once))


# --- unique keys -------------------------------------------------------------------------


def test_unique_key_admits_one_waiting_or_running_job(
    app: pgqueue.App, conn: psycopg.Connection[Any], count_jobs: Callable[..., int]
) -> None:
    @app.task("sync-user")
    def sync_user(user_id: int) -> None: ...

    once = sync_user.using(unique_key="user:1")
    first = once.enqueue(user_id=1)
    assert first is not None
    assert once.enqueue(user_id=1) is None
    assert app.enqueue("sync-user", {"user_id": 1}, unique_key="user:1") is None
    other_key = sync_user.using(unique_key="user:2").enqueue(user_id=2)
    assert other_key is not None

    conn.execute("UPDATE pgqueue.job SET state = 'active' WHERE id = %s", (first,))
    assert once.enqueue(user_id=1) is None  # still running

    conn.execute("UPDATE pgqueue.job SET state = 'completed', finished_at = now() WHERE id = %s", (first,))
    second = once.enqueue(user_id=1)
    assert second is not None and second != first

    assert app.cancel_job(second) is True
    third = once.enqueue(user_id=1)
    assert third is not None and third not in (first, second)
    assert count_jobs() == 4


def test_unique_key_inside_one_batch(app: pgqueue.App) -> None:
    ids = app.enqueue_many(
        [
            ("t", {"n": 0}),
            ("t", {"n": 1}, {"unique_key": "k"}),
            ("t", {"n": 2}, {"unique_key": "k"}),
            ("t", {"n": 3}),
            ("t", {"n": 4}, {"unique_key": "j"}),
        ]
    )
    assert ids[2] is None
    assert None not in (ids[0], ids[1], ids[3], ids[4])
    assert [app.get_job(i).data["n"] for i in ids if i is not None] == [0, 1, 3, 4]  # type: ignore[arg-type]
    again = app.enqueue_many([("t", {"n": 5}, {"unique_key": "k"}), ("t", {"n": 6})])
    assert again[0] is None and again[1] is not None


def test_unique_key_across_concurrent_transactions(app: pgqueue.App, dsn: str) -> None:
    with psycopg.connect(dsn) as first, psycopg.connect(dsn) as second:
        kept = app.enqueue("t", {"n": 1}, conn=first, unique_key="k")
        with ThreadPoolExecutor(1) as pool:
            # The second insert waits for the first transaction to decide.
            waiting = pool.submit(app.enqueue, "t", {"n": 2}, conn=second, unique_key="k")
            time.sleep(0.2)
            assert not waiting.done()
            first.commit()
            assert waiting.result(timeout=10) is None
        second.commit()

        taken_back = app.enqueue("t", {"n": 3}, conn=first, unique_key="j")
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(app.enqueue, "t", {"n": 4}, conn=second, unique_key="j")
            time.sleep(0.2)
            first.rollback()
            won = waiting.result(timeout=10)
        second.commit()
    assert kept is not None and taken_back is not None and won is not None
    assert app.get_job(won).data == {"n": 4}


def test_unique_key_inside_the_callers_transaction(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any], count_jobs: Callable[..., int]
) -> None:
    with psycopg.connect(dsn) as caller:
        assert app.enqueue("t", {}, conn=caller, unique_key="k") is not None
        assert app.enqueue("t", {}, conn=caller, unique_key="k") is None
        caller.rollback()
    # The rolled-back job does not hold the key.
    assert app.enqueue("t", {}, unique_key="k") is not None
    assert count_jobs() == 1


# --- wake-ups ----------------------------------------------------------------------------


def test_one_notification_per_queue_per_transaction_after_commit(
    app: pgqueue.App, dsn: str, listener: psycopg.Connection[Any], notifications: Notifications
) -> None:
    with psycopg.connect(dsn) as caller:
        for n in range(3):
            app.enqueue("t", {"secret": f"data-{n}"}, conn=caller, queue="emails")
        app.enqueue("t", {"secret": "data-pdf"}, conn=caller, queue="pdf")
        app.enqueue_many(
            [("t", {"secret": "x"}, {"queue": "pdf"}), ("t", {}, {"queue": "emails"})], conn=caller
        )
        assert notifications(listener) == []  # nothing before commit
        caller.commit()
    received = notifications(listener, expect=2)
    assert sorted(received) == [("pgqueue_jobs", "emails"), ("pgqueue_jobs", "pdf")]
    assert not any("secret" in payload or "data" in payload for _, payload in received)


def test_no_notification_after_rollback(
    app: pgqueue.App, dsn: str, listener: psycopg.Connection[Any], notifications: Notifications
) -> None:
    with psycopg.connect(dsn) as caller:
        app.enqueue("t", {}, conn=caller, queue="emails")
        caller.rollback()
    assert notifications(listener) == []
    # A job that was not inserted (its unique key was taken) wakes no one either.
    app.enqueue("t", {}, unique_key="k")
    assert notifications(listener, expect=1) == [("pgqueue_jobs", "default")]
    assert app.enqueue("t", {}, unique_key="k") is None
    assert notifications(listener) == []


def test_each_autocommitted_enqueue_notifies_its_queue(
    app: pgqueue.App, listener: psycopg.Connection[Any], notifications: Notifications
) -> None:
    app.enqueue("t", {}, queue="a")
    app.enqueue("t", {}, queue=HOSTILE)
    assert notifications(listener, expect=2) == [("pgqueue_jobs", "a"), ("pgqueue_jobs", HOSTILE)]


def test_queues_woken_together_arrive_one_notification_each(
    app: pgqueue.App, listener: psycopg.Connection[Any], notifications: Notifications
) -> None:
    queues = ["a", HOSTILE, 'quo"te', "back\\slash", "com,ma", "{braces}", "NULL", "é 漢"]
    app.enqueue_many([("t", {}, {"queue": queue}) for queue in queues])
    assert sorted(notifications(listener, expect=len(queues))) == sorted(("pgqueue_jobs", q) for q in queues)


def test_wake_ups_outlive_the_notifiers_connection(
    app: pgqueue.App, conn: psycopg.Connection[Any], listener: psycopg.Connection[Any],
    notifications: Notifications,
) -> None:
    notifier = app._notifier_for()
    notifier.poke(["before"])  # through the thread (a lone enqueue carries its own wake-up)
    assert notifications(listener, expect=1) == [("pgqueue_jobs", "before")]
    killed = conn.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'pgqueue-notifier'"
    ).fetchone()
    assert killed == (1,)
    # The next wake-up finds its connection gone and is sent again on a new one: not lost.
    notifier.poke(["after"])
    assert notifications(listener, expect=1) == [("pgqueue_jobs", "after")]


def test_a_lone_enqueue_wakes_workers_with_its_commit_and_a_burst_is_coalesced(
    app: pgqueue.App, conn: psycopg.Connection[Any], listener: psycopg.Connection[Any],
    notifications: Notifications,
) -> None:
    """The first enqueue after a quiet spell carries its NOTIFY in its own statement (no wait
    for the notifier thread); a burst sends few wake-ups, and the last one follows the last commit."""
    app.enqueue("t", {}, queue="lone")
    assert notifications(listener, expect=1) == [("pgqueue_jobs", "lone")]
    assert app._notifier is not None and app._notifier._thread is None  # no thread was needed
    started = time.monotonic()
    for n in range(300):
        app.enqueue("t", {"n": n}, queue="burst")
    elapsed = time.monotonic() - started
    received = notifications(listener, expect=1)
    assert set(received) == {("pgqueue_jobs", "burst")}
    assert len(received) <= elapsed / 0.010 + 2  # one per 10 ms at most, whatever the rate
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and app._notifier._pending:
        time.sleep(0.01)
    assert not app._notifier._pending  # nothing left unsent after the last commit


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_sends_its_own_wake_ups(
    app: pgqueue.App, listener: psycopg.Connection[Any], notifications: Notifications
) -> None:
    notifier = app._notifier_for()
    notifier.poke(["parent"])  # the parent's notifier thread is running
    assert notifications(listener, expect=1) == [("pgqueue_jobs", "parent")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads running
        pid = os.fork()
    if pid == 0:  # the child: its notifier starts a thread and a connection of its own
        code = 1
        try:
            notifier.poke(["child"])
            notifier.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert notifications(listener, expect=1) == [("pgqueue_jobs", "child")]
    app.enqueue("t", {}, queue="parent-again")
    assert notifications(listener, expect=1) == [("pgqueue_jobs", "parent-again")]


def test_notify_false_stays_silent(
    dsn: str, listener: psycopg.Connection[Any], notifications: Notifications
) -> None:
    with pgqueue.App(dsn, notify=False) as quiet:
        quiet.enqueue("t", {})
        quiet.enqueue_many([("t", {})])
    assert notifications(listener) == []


def test_a_custom_schema_has_its_own_channel(
    dsn: str, listener: psycopg.Connection[Any], notifications: Notifications
) -> None:
    migrate.upgrade(dsn, "jobs_x")
    listener.execute("LISTEN jobs_x_jobs")
    with pgqueue.App(dsn, schema="jobs_x") as other:
        other.enqueue("t", {}, queue="q")
    assert notifications(listener, expect=1) == [("jobs_x_jobs", "q")]


# --- looking jobs up, cancelling, retrying -----------------------------------------------


def test_get_job_reads_back_what_was_written(app: pgqueue.App, dsn: str) -> None:
    job_id = app.enqueue("t", {"a": 1}, priority=-2, max_attempts=4, timeout=1.5, unique_key="u")
    job = app.get_job(job_id)
    assert isinstance(job, pgqueue.Job)
    assert (job.id, job.type, job.queue, job.data, job.state) == (
        job_id,
        "t",
        "default",
        {"a": 1},
        JobState.CREATED,
    )
    assert (job.priority, job.attempts, job.max_attempts, job.timeout, job.unique_key) == (-2, 0, 4, 1.5, "u")
    assert job.run_at.tzinfo is not None and job.created_at.tzinfo is not None
    with psycopg.connect(dsn) as caller:
        assert app.get_job(job_id, conn=caller) == job


def test_unknown_ids_raise_job_not_found(app: pgqueue.App, dsn: str) -> None:
    for call in (app.get_job, app.cancel_job, app.retry_job):
        with pytest.raises(JobNotFound, match="12345"):
            call(12345)
    with pytest.raises(LookupError):
        app.get_job(2**62)


@pytest.mark.parametrize("job_id", ["1", "abc", 1.0, None, True])
def test_ids_that_are_not_integers_are_not_found(app: pgqueue.App, dsn: str, job_id: Any) -> None:
    existing = app.enqueue("t", {})
    assert existing == 1
    with psycopg.connect(dsn) as caller:
        for call in (app.get_job, app.cancel_job, app.retry_job):
            with pytest.raises(JobNotFound):
                call(job_id, conn=caller)
        assert caller.execute("SELECT count(*) FROM pgqueue.job").fetchone() == (1,)  # still usable


def test_cancel_job(app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    waiting = app.enqueue("t", {})
    running = app.enqueue("t", {})
    done = app.enqueue("t", {})
    conn.execute(
        "UPDATE pgqueue.job SET state = 'active', attempts = 1, lease_id = gen_random_uuid(), "
        "lease_expires_at = now() + interval '1 minute' WHERE id = %s",
        (running,),
    )
    conn.execute("UPDATE pgqueue.job SET state = 'completed', finished_at = now() WHERE id = %s", (done,))

    assert app.cancel_job(waiting) is True
    assert app.cancel_job(running) is True
    assert app.cancel_job(done) is False
    assert app.cancel_job(waiting) is False  # already cancelled

    for job_id in (waiting, running):
        job = app.get_job(job_id)
        assert job.state is JobState.CANCELLED and job.finished_at is not None
        assert job.lease_id is None and job.success is False  # a running job's worker is fenced out
    assert app.get_job(done).state is JobState.COMPLETED


def test_retry_job(
    app: pgqueue.App,
    conn: psycopg.Connection[Any],
    listener: psycopg.Connection[Any],
    notifications: Notifications,
) -> None:
    failed = app.enqueue("t", {}, max_attempts=2, queue="q1")
    cancelled = app.enqueue("t", {}, queue="q2")
    waiting = app.enqueue("t", {})
    notifications(listener, expect=3)
    conn.execute(
        "UPDATE pgqueue.job SET state = 'failed', attempts = 2, finished_at = now(), "
        "run_at = now() - interval '1 day', error = 'boom' WHERE id = %s",
        (failed,),
    )
    assert app.cancel_job(cancelled) is True

    assert app.retry_job(failed) is True
    assert notifications(listener, expect=1) == [("pgqueue_jobs", "q1")]
    assert app.retry_job(cancelled) is True
    assert notifications(listener, expect=1) == [("pgqueue_jobs", "q2")]
    assert app.retry_job(waiting) is False
    assert notifications(listener) == []

    job = app.get_job(failed)
    now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
    assert job.state is JobState.RETRY and job.finished_at is None
    assert job.max_attempts == 3  # one more attempt than it had used
    assert job.run_at <= now and job.run_at > now - timedelta(minutes=1)
    assert app.get_job(cancelled).state is JobState.RETRY


def test_counts(app: pgqueue.App) -> None:
    assert app.counts() == {}
    app.enqueue_many([("t", {}, {"queue": "a"}), ("t", {}, {"queue": "a"}), ("t", {}, {"queue": "b"})])
    app.cancel_job(app.enqueue("t", {}, queue="b"))
    assert app.counts() == {"a": {"created": 2}, "b": {"cancelled": 1, "created": 1}}


# --- data and names ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {"text": "héllo ✓ 日本語 🎉 \u202e reversed", "empty": "", "": "empty key", "a.b": {"$": 1}},
        {"big": 2**100, "negative": -(2**80), "int64": 2**63 - 1, "beyond": 10**40 + 1},
        {"floats": [0.1, -2.5, 1e-300, 1e300, 1e16, 1.7976931348623157e308, 5e-324]},
        {"nested": {"a": [{"b": [[[{"c": None}]]]}, True, False]}},
        {"hostile": HOSTILE, "backslash": "\\u0000 \\", "quote": "\"'`", "newline": "a\nb\r\tc"},
        {HOSTILE: HOSTILE},
        {"long": "x" * 100_000},
    ],
)
def test_data_round_trips_exactly(app: pgqueue.App, data: dict[str, Any]) -> None:
    job = app.get_job(app.enqueue("t", data))
    assert job.data == data
    assert {key: type(value) for key, value in job.data.items()} == {
        key: type(value) for key, value in data.items()
    }


def test_floats_come_back_as_floats(app: pgqueue.App) -> None:
    data = {"a": 1e300, "b": 1e16, "c": 123456789012345678.0, "d": 1.0}
    back = app.get_job(app.enqueue("t", data)).data
    assert back == data
    assert all(isinstance(value, float) for value in back.values())


def test_tuples_come_back_as_lists(app: pgqueue.App) -> None:
    assert app.get_job(app.enqueue("t", {"t": (1, (2, "3"))})).data == {"t": [1, [2, "3"]]}


@pytest.mark.parametrize(
    "name",
    [HOSTILE, "a" * 128, "日本語 queue", "with \"quotes\" and 'apostrophes'", "a\\b", "%(x)s {schema}"],
)
def test_hostile_type_and_queue_names_are_just_names(
    app: pgqueue.App, conn: psycopg.Connection[Any], name: str
) -> None:
    @app.task(name, queue=name)
    def handler() -> None: ...

    first = handler.enqueue()
    second = app.enqueue(name, {"q": name}, queue=name)
    assert conn.execute("SELECT type, queue FROM pgqueue.job ORDER BY id").fetchall() == [
        (name, name),
        (name, name),
    ]
    assert app.get_job(second).data == {"q": name}
    assert app.counts() == {name: {"created": 2}}
    assert first is not None
    assert conn.execute("SELECT to_regclass('pgqueue.job') IS NOT NULL").fetchone() == (True,)


def test_handler_arguments_may_have_any_name_but_conn(app: pgqueue.App) -> None:
    @app.task("t")
    def handler(**kwargs: Any) -> None: ...

    first = handler.enqueue(self=1, data=2, type=3, options=4)
    second = handler.using(priority=1).enqueue(self=5)
    assert app.get_job(first).data == {"self": 1, "data": 2, "type": 3, "options": 4}  # type: ignore[arg-type]
    assert app.get_job(second).data == {"self": 5}  # type: ignore[arg-type]
    assert handler(self=6) is None


@pytest.mark.timeout(60)
def test_more_threads_than_pool_connections_never_wait_on_idle_kept_connections(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """Connections kept between enqueues must go back to the pool while another thread waits on
    it: a thread waiting on an exhausted pool while idle connections sit aside would time out."""
    app = pgqueue.App(dsn, notify=False, pool_size=2)
    app._pool.pool().timeout = 5.0  # a stranded waiter fails in 5 s instead of 30
    try:
        with ThreadPoolExecutor(16) as threads:
            ids = list(threads.map(lambda n: app.enqueue("t", {"n": n}), range(3000)))
        assert len(set(ids)) == 3000
        assert _pool_backends(conn) <= 2
    finally:
        app.close()


@pytest.mark.timeout(60)
async def test_more_tasks_than_async_pool_connections_never_wait_on_idle_kept_connections(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    app = pgqueue.App(dsn, notify=False, pool_size=2)
    # A waiter stranded beside idle kept connections would wait forever: the timeout only has
    # to outlast 3,000 enqueues through two connections on a busy machine.
    (await app._apool.pool()).timeout = 30.0
    try:
        ids = await asyncio.gather(*(app.aenqueue("t", {"n": n}) for n in range(3000)))
        assert len(set(ids)) == 3000
        assert _pool_backends(conn) <= 2
    finally:
        await app.aclose()
