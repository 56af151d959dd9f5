"""Queue settings kept in the database: pausing a queue stops every worker claiming from it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue.worker import Worker, WorkerConfig

pytestmark = pytest.mark.timeout(60)


def _state(conn: psycopg.Connection[Any], job_id: int | None) -> str:
    return str(conn.execute("SELECT state FROM pgqueue.job WHERE id = %s", (job_id,)).fetchone()[0])


async def test_a_paused_queue_is_not_claimed_until_resumed_and_other_queues_flow(app, conn):
    ran: list[str] = []

    @app.task("mail", queue="emails")
    async def mail() -> None:
        ran.append("mail")

    @app.task("pdf", queue="pdf")
    async def pdf() -> None:
        ran.append("pdf")

    worker = Worker(app.runtime(), WorkerConfig(poll_interval=0.1, queues=["emails", "pdf"]))
    running = asyncio.create_task(worker.run())
    try:
        while not worker.services[-1]._task:  # started
            await asyncio.sleep(0.05)
        assert app.configure_queue("emails", paused=True)["paused"] is True
        mail_id = mail.enqueue()
        pdf_id = pdf.enqueue()
        deadline = time.monotonic() + 10
        while _state(conn, pdf_id) != "completed":
            assert time.monotonic() < deadline, "the running queue's job did not run"
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # ten claim cycles
        assert _state(conn, mail_id) == "created" and ran == ["pdf"]

        resumed = time.monotonic()
        app.configure_queue("emails", paused=False)
        while _state(conn, mail_id) != "completed":
            assert time.monotonic() - resumed < 5, "the resumed queue's job did not run"
            await asyncio.sleep(0.02)
        assert ran == ["pdf", "mail"]
    finally:
        worker.stop()
        await asyncio.wait_for(running, 15)


def test_settings_are_kept_per_queue_and_validated(app):
    assert app.queue_settings() == {}
    assert app.configure_queue("emails") == {
        "paused": False, "concurrency": None, "rate_limit": None, "updated_at": None
    }
    app.configure_queue("emails", paused=True)
    app.configure_queue("pdf", paused=False)
    settings = app.queue_settings()
    assert settings["emails"]["paused"] is True and settings["pdf"]["paused"] is False
    assert app.configure_queue("emails")["paused"] is True
    with pytest.raises(pgqueue.InvalidJob):
        app.configure_queue(" spaced ", paused=True)
    with pytest.raises(pgqueue.InvalidJob):
        app.configure_queue("", paused=True)
    assert set(app.queue_settings()) == {"emails", "pdf"}


def test_pause_joins_the_callers_transaction(app, dsn, conn):
    with psycopg.connect(dsn) as tx:
        app.configure_queue("emails", paused=True, conn=tx)
        tx.rollback()
    assert app.queue_settings() == {}
