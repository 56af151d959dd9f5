"""Publish/subscribe fan-out in the caller's transaction, the job history paged by key, and
per-queue retention."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue.db.sql import queries
from pgqueue.errors import ConfigurationError, InvalidJob

pytestmark = pytest.mark.timeout(60)


def subscribers(app: pgqueue.App, ran: list[tuple[str, int]]) -> None:
    for name, queue in (
        ("send-welcome-email", "emails"),
        ("create-crm-contact", "crm"),
        ("grant-trial", "billing"),
    ):

        def handler(user_id: int, _name: str = name) -> None:
            ran.append((_name, user_id))

        app.task(name, queue=queue, priority=3 if queue == "crm" else None, dead_letter=f"{queue}-dead")(
            handler
        )
        app.subscribe("user.registered", name)


def test_publish_enqueues_one_job_per_subscriber_in_the_callers_transaction(
    app: pgqueue.App, conn: psycopg.Connection[Any], dsn: str
) -> None:
    ran: list[tuple[str, int]] = []
    subscribers(app, ran)
    app.subscribe("user.registered", "grant-trial")  # twice: still one subscription
    assert app.subscriptions() == {
        "user.registered": ["create-crm-contact", "grant-trial", "send-welcome-email"]
    }
    with psycopg.connect(dsn) as tx:
        rolled_back = app.publish("user.registered", {"user_id": 1}, conn=tx)
        assert len(rolled_back) == 3
        tx.rollback()
    assert conn.execute("SELECT count(*) FROM pgqueue.job").fetchone() == (0,)
    with psycopg.connect(dsn) as tx:
        ids = app.publish("user.registered", {"user_id": 2}, conn=tx)
    jobs = [app.get_job(job_id) for job_id in ids]
    assert [(j.type, j.queue, j.priority, j.data) for j in jobs] == [
        ("create-crm-contact", "crm", 3, {"user_id": 2}),
        ("grant-trial", "billing", 0, {"user_id": 2}),
        ("send-welcome-email", "emails", 0, {"user_id": 2}),
    ]
    dead = conn.execute("SELECT dead_letter FROM pgqueue.job ORDER BY id").fetchall()
    assert dead == [("crm-dead",), ("billing-dead",), ("emails-dead",)]
    app.drain()
    assert sorted(ran) == [("create-crm-contact", 2), ("grant-trial", 2), ("send-welcome-email", 2)]
    assert app.publish("nobody.listens", {"x": 1}) == []


def test_unsubscribe_and_async_publish(app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    subscribers(app, [])
    assert app.unsubscribe("user.registered", "grant-trial") == 1
    assert app.unsubscribe("user.registered", "grant-trial") == 0

    async def publish() -> list[int]:
        try:
            return await app.apublish("user.registered", {"user_id": 3})
        finally:
            await app.aclose()

    assert len(asyncio.run(publish())) == 2
    assert app.unsubscribe("user.registered") == 2
    assert app.subscriptions() == {}
    with pytest.raises(ConfigurationError, match="no task named"):
        app.subscribe("user.registered", "not-a-task")
    with pytest.raises(InvalidJob, match="event name"):
        app.publish(" bad ", {})


def test_history_pages_by_key_with_filters(app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    @app.task("h", queue="hq")
    def h(n: int) -> None:
        if n % 3 == 0:
            raise ValueError("three")

    ids = h.using(max_attempts=1).enqueue_many([{"n": n} for n in range(1, 31)])
    app.enqueue("other", {"n": 0})
    app.drain()
    seen: list[int] = []
    after = None
    pages = 0
    while True:
        page = app.jobs(queue="hq", limit=7, after=after)
        if not page:
            break
        pages += 1
        seen += [job.id for job in page]
        after = page[-1].id
    assert seen == ids and pages == 5
    failed = app.jobs(queue="hq", state="failed", type="h")
    assert [job.data["n"] for job in failed] == [3, 6, 9, 12, 15, 18, 21, 24, 27, 30]
    assert app.jobs(since=datetime.now(timezone.utc) + timedelta(hours=1)) == []
    assert len(app.jobs(since=datetime.now(timezone.utc) - timedelta(hours=1), limit=1000)) == 31
    for bad in (
        {"limit": 0},
        {"limit": 1001},
        {"after": "x"},
        {"since": datetime(2020, 1, 1)},
        {"state": "gone"},
    ):
        with pytest.raises(InvalidJob):
            app.jobs(**bad)


def prune(conn: psycopg.Connection[Any]) -> None:
    """The worker's prune statement, as its pruner runs it, with an hour's retention by default."""
    params = {"completed_seconds": 3600.0, "failed_seconds": 3600.0, "batch": 1000}
    conn.execute(queries("pgqueue").prune, params)


def test_queue_retention_overrides_the_workers_defaults(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    @app.task("keep", queue="kept")
    def keep() -> None: ...

    @app.task("drop", queue="dropped")
    def drop() -> None: ...

    keep.enqueue_many([{}] * 5)
    drop.enqueue_many([{}] * 5)
    app.drain()
    conn.execute("UPDATE pgqueue.job SET finished_at = now() - interval '2 hours'")
    settings = app.set_queue_retention("kept", completed=timedelta(days=30))
    assert settings["completed_retention"] == 30 * 86400.0 and settings["failed_retention"] is None
    app.set_queue_retention("kept", failed=60)  # the other setting is kept
    assert app.set_queue_retention("kept")["completed_retention"] == 30 * 86400.0
    # The workers' default (an hour here) prunes the other queue's two-hour-old jobs.
    prune(conn)
    assert app.counts() == {"kept": {"completed": 5}}
    app.set_queue_retention("kept", completed=None)
    prune(conn)
    assert app.counts() == {}
    with pytest.raises(InvalidJob):
        app.set_queue_retention("kept", completed=-1)
