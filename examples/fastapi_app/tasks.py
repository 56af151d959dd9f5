"""The jobs a registration starts, and the ``effects`` table where they are delivered.

The three handlers stand in for remote calls (a mail server, Slack, a CRM) by sleeping, then
"send" by writing a row to ``effects``, one per (user, kind): at least once, written once.
The web app runs the same functions inline on ``POST /register-inline``.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

import pgqueue

queue = pgqueue.App()  # database: PGQUEUE_DATABASE_URL, else DATABASE_URL, else the embedded server

WELCOME_EMAIL_SECONDS = 2.0
SLACK_SECONDS = 0.3
CRM_SECONDS = 0.5
CRM_FAILURE_RATE = 0.1
CRM_ATTEMPTS = 10

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS effects (
    user_id bigint NOT NULL,
    kind text NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, kind)
);
"""


class CrmUnavailable(Exception):
    """The CRM answered 503: the attempt fails and the job is retried."""


_pools: dict[int, AsyncConnectionPool[Any]] = {}


async def _effects_pool() -> AsyncConnectionPool[Any]:
    """A small pool per event loop for writing effects (hundreds of handlers share a few connections)."""
    key = id(asyncio.get_running_loop())
    pool = _pools.get(key)
    if pool is None:
        pool = AsyncConnectionPool(
            queue.database_url, min_size=1, max_size=4, kwargs={"autocommit": True}, open=False
        )
        _pools[key] = pool
        await pool.open()
    return pool


async def close_effects_pool() -> None:
    pool = _pools.pop(id(asyncio.get_running_loop()), None)
    if pool is not None:
        await pool.close()


async def deliver(user_id: int, kind: str) -> None:
    """Record that ``kind`` was delivered to the user (once, however many times it runs)."""
    pool = await _effects_pool()
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO effects (user_id, kind) VALUES (%s, %s) ON CONFLICT DO NOTHING", (user_id, kind)
        )


@queue.task("send-welcome-email", queue="emails", timeout=30)
async def send_welcome_email(user_id: int, email: str) -> None:
    await asyncio.sleep(WELCOME_EMAIL_SECONDS)  # the mail server takes its time
    await deliver(user_id, "welcome-email")


@queue.task("notify-slack", queue="notifications")
async def notify_slack(user_id: int) -> None:
    await asyncio.sleep(SLACK_SECONDS)
    await deliver(user_id, "slack")


@queue.task("sync-crm", queue="crm", max_attempts=CRM_ATTEMPTS, retry_delay=0.2, retry_backoff=False)
async def sync_crm(user_id: int) -> None:
    await asyncio.sleep(CRM_SECONDS)
    if random.random() < CRM_FAILURE_RATE:
        raise CrmUnavailable(f"CRM unavailable for user {user_id}")
    await deliver(user_id, "crm")


def prepare(database_url: str | None = None) -> None:
    """Migrate pgqueue's schema and create the example's tables (idempotent)."""
    from pgqueue import migrate

    url = database_url or queue.database_url
    migrate.upgrade(url, queue.schema)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)
