"""Schedules in the database: the App's methods, the tick guard under racing transactions, catch-up
and daylight-saving changes through the scheduler's own statements."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import ConfigurationError, InvalidJob
from pgqueue.cron import CATCH_UP_LIMIT, Spec, due_ticks, tick_key
from pgqueue.db.driver import run
from pgqueue.db.insert import JobTemplate
from pgqueue.db.schedules import enqueue_ticks, save_schedules
from pgqueue.db.sql import queries
from pgqueue.worker.scheduler import Scheduler
from pgqueue.worker.service import Lane

pytestmark = pytest.mark.timeout(60)

TEMPLATE = JobTemplate(type="report", queue="reports", priority=0, max_attempts=3)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def schedule_rows(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT name, task, cron, every, tz, catch_up FROM pgqueue.schedule ORDER BY name"
    ).fetchall()


def keys(conn: psycopg.Connection[Any]) -> list[str]:
    return [row[0] for row in conn.execute("SELECT unique_key FROM pgqueue.job ORDER BY run_at, id")]


def test_schedule_unschedule_and_list(app, conn):
    @app.task("report", queue="reports")
    def report(kind: str) -> None: ...

    app.schedule("daily", "report", {"kind": "daily"}, cron="0 8 * * *", tz="Europe/Berlin")
    app.schedule("often", "report", {"kind": "often"}, every=timedelta(seconds=30), catch_up=True)
    assert schedule_rows(conn) == [
        ("daily", "report", "0 8 * * *", None, "Europe/Berlin", False),
        ("often", "report", None, 30.0, "UTC", True),
    ]
    # Adding one of the same name replaces it, keeping its last tick.
    conn.execute("UPDATE pgqueue.schedule SET last_tick = '2026-01-01Z' WHERE name = 'daily'")
    app.schedule("daily", "report", {"kind": "later"}, cron="0 9 * * *", tz="Europe/Berlin")
    listed = {s.name: s for s in app.schedules()}
    assert listed["daily"].cron == "0 9 * * *" and listed["daily"].data == {"kind": "later"}
    assert listed["daily"].last_tick == utc(2026, 1, 1)
    assert listed["often"].every == 30.0 and listed["often"].catch_up
    assert app.unschedule("daily") is True
    assert app.unschedule("daily") is False
    assert [s.name for s in app.schedules()] == ["often"]


@pytest.mark.parametrize(
    "options",
    [
        {"cron": "0 25 * * *"},
        {"cron": "every day"},
        {"every": 0},
        {"every": -1.5},
        {"every": timedelta(seconds=-1)},
        {"cron": "* * * * *", "every": 5},
        {},
        {"every": 5, "tz": "Europe/Nowhere"},
        {"every": 5, "task_name": "no-such-task"},
        {"every": 5, "data": {"x": object()}},
        {"every": 5, "data": ["not", "a", "mapping"]},
    ],
)
def test_bad_options_raise_before_anything_is_written(app, conn, options):
    @app.task("report")
    def report(**kwargs: Any) -> None: ...

    task_name = options.pop("task_name", "report")
    with pytest.raises((ConfigurationError, InvalidJob)):
        app.schedule("bad", task_name, **options)
    assert schedule_rows(conn) == []


def test_periodic_decorates_the_task_above_or_the_function_below(app):
    @app.periodic(cron="0 8 * * *", tz="Europe/Berlin", data={"kind": "daily"})
    @app.task("report")
    def report(kind: str) -> None: ...

    @app.task("cleanup")
    @app.periodic(every=timedelta(minutes=5), name="cleanup-often")
    def cleanup() -> None: ...

    assert isinstance(report, pgqueue.Task)
    specs = {spec.name: spec for spec in app.periodic_schedules()}
    assert specs["report"] == Spec(
        "report", "report", "0 8 * * *", None, "Europe/Berlin", False, {"kind": "daily"}
    )
    assert specs["cleanup-often"] == Spec("cleanup-often", "cleanup", None, 300.0, "UTC", False, {})
    assert [spec.name for spec in app.runtime().schedules] == ["report", "cleanup-often"]

    with pytest.raises(ConfigurationError):
        app.periodic(every=0)
    with pytest.raises(ConfigurationError):
        app.periodic(cron="* * * * *", tz="Nowhere/Special")

    @app.periodic(every=1)
    def never_registered() -> None: ...

    with pytest.raises(ConfigurationError, match="not a registered task"):
        app.periodic_schedules()


def test_racing_transactions_enqueue_one_tick_once(dsn, conn):
    run(conn, save_schedules("pgqueue", [Spec.build("race", "report", every=1)]))
    tick = utc(2026, 6, 1, 12)
    with psycopg.connect(dsn) as first, psycopg.connect(dsn) as second:
        # The first transaction advances the schedule and holds its row until it commits...
        assert len(run(first, enqueue_ticks("pgqueue", "race", TEMPLATE, "{}", [tick]))) == 1
        result: list[Any] = []
        racer = threading.Thread(
            target=lambda: result.append(
                run(second, enqueue_ticks("pgqueue", "race", TEMPLATE, "{}", [tick]))
            )
        )
        racer.start()
        racer.join(0.5)
        assert racer.is_alive(), "the second transaction should wait for the schedule's row"
        first.commit()
        racer.join(10)
        second.commit()
    # ...and the second, having waited, finds the tick taken and enqueues nothing.
    assert result == [[]]
    assert keys(conn) == [tick_key("race", tick)]
    # Once the job has finished its unique key is free again: the last tick still guards.
    conn.execute("UPDATE pgqueue.job SET state = 'completed', finished_at = now()")
    assert run(conn, enqueue_ticks("pgqueue", "race", TEMPLATE, "{}", [tick])) == []
    assert run(conn, enqueue_ticks("pgqueue", "race", TEMPLATE, "{}", [tick - timedelta(seconds=5)])) == []
    assert len(keys(conn)) == 1


def test_a_daily_job_across_both_daylight_saving_changes_enqueues_one_job_a_day(conn):
    spec = Spec.build("night", "report", cron="30 2 * * *", tz="Europe/Berlin")
    run(conn, save_schedules("pgqueue", [spec]))
    # A worker checking once a minute across the spring-forward and the fall-back nights.
    for start in (utc(2026, 3, 28, 12), utc(2026, 10, 24, 12)):
        after = start
        for minute in range(0, 48 * 60):
            now = start + timedelta(minutes=minute)
            due = due_ticks(spec, after, now)
            if due:
                for _ in range(2):  # a second worker racing for it finds it taken
                    with conn.transaction():
                        run(conn, enqueue_ticks("pgqueue", "night", TEMPLATE, "{}", due))
                after = due[-1]
    run_at = [row[0] for row in conn.execute("SELECT run_at FROM pgqueue.job ORDER BY run_at")]
    # 02:30 local: on 29 March, skipped by the clock change, it runs at 03:00 CEST; on 25 October once.
    assert run_at == [
        utc(2026, 3, 29, 1, 0),
        utc(2026, 3, 30, 0, 30),
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 26, 1, 30),
    ]
    assert keys(conn) == [tick_key("night", t) for t in run_at]


async def scheduler_pass(app: pgqueue.App) -> Scheduler:
    scheduler = Scheduler(Lane(None, queries(app.schema)), app.runtime())  # type: ignore[arg-type]
    async with await psycopg.AsyncConnection.connect(app.database_url, autocommit=True) as aconn:
        await scheduler.tick(aconn)
    return scheduler


def test_the_scheduler_writes_code_schedules_and_catches_up_a_bounded_number_of_ticks(app, conn):
    @app.periodic(every=1, catch_up=True, name="caught-up")
    @app.periodic(every=1, name="skipping")
    @app.task("report", queue="reports", max_attempts=7)
    def report() -> None: ...

    app.schedule("other-worker", "report", every=1)
    conn.execute("DELETE FROM pgqueue.schedule WHERE name = 'other-worker'")
    asyncio.run(scheduler_pass(app))
    assert [row[0] for row in schedule_rows(conn)] == ["caught-up", "skipping"]
    conn.execute("DELETE FROM pgqueue.job")
    # Down for 500 seconds: the skipping schedule enqueues the latest tick, the other the last 100.
    conn.execute("UPDATE pgqueue.schedule SET last_tick = now() - interval '500 seconds'")
    asyncio.run(scheduler_pass(app))
    counts = dict(
        conn.execute("SELECT split_part(unique_key, ':', 2), count(*) FROM pgqueue.job GROUP BY 1").fetchall()
    )
    assert counts["skipping"] == 1
    assert CATCH_UP_LIMIT <= counts["caught-up"] <= CATCH_UP_LIMIT + 1
    assert conn.execute("SELECT DISTINCT queue, max_attempts, type FROM pgqueue.job").fetchall() == [
        ("reports", 7, "report")
    ]
    # Nothing due twice: a second pass right away enqueues at most the tick of the next second.
    before = conn.execute("SELECT count(*) FROM pgqueue.job").fetchone()[0]
    asyncio.run(scheduler_pass(app))
    assert conn.execute("SELECT count(*) FROM pgqueue.job").fetchone()[0] - before <= 2


def test_a_schedule_of_a_task_this_worker_does_not_run_is_left_to_others(app, conn):
    @app.task("report")
    def report() -> None: ...

    conn.execute("INSERT INTO pgqueue.schedule (name, task, every) VALUES ('elsewhere', 'other-task', 1)")
    conn.execute("UPDATE pgqueue.schedule SET created_at = now() - interval '10 seconds'")
    asyncio.run(scheduler_pass(app))
    assert keys(conn) == []


def test_drain_enqueues_no_ticks(app, conn):
    @app.periodic(every=0.01)
    @app.task("report")
    def report() -> None: ...

    app.enqueue("report")
    assert app.drain()["completed"] == 1
    assert keys(conn) == [None]
