"""Helpers shared by the integration tests: looking at what pgqueue wrote, and listening for wake-ups."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

Notifications = Callable[..., "list[tuple[str, str]]"]


def _notifications(listener: psycopg.Connection[Any], expect: int = 0) -> list[tuple[str, str]]:
    """Wait for ``expect`` notifications (at most 10 s), then a little longer to catch any extra one."""
    received = (
        [(n.channel, n.payload) for n in listener.notifies(timeout=10, stop_after=expect)] if expect else []
    )
    received += [(n.channel, n.payload) for n in listener.notifies(timeout=0.15)]
    return received


@pytest.fixture
def count_jobs(conn: psycopg.Connection[Any]) -> Callable[..., int]:
    """``count_jobs(schema="pgqueue")``: rows in the job table, read on the test's autocommit connection."""

    def count(schema: str = "pgqueue") -> int:
        row = conn.execute(f'SELECT count(*) FROM "{schema}".job').fetchone()
        assert row is not None
        return int(row[0])

    return count


@pytest.fixture
def notifications() -> Notifications:
    """``notifications(listener, expect=0)``: (channel, payload) of each notification that arrives."""
    return _notifications


@pytest.fixture
def listener(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection LISTENing on the default schema's channel."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("LISTEN pgqueue_jobs")
        yield connection


@pytest.fixture(scope="module")
def module_dsn(server_dsn: str, template_db: str) -> Iterator[str]:
    """A migrated database shared by one test module, for many cheap cases that leave it as they found it."""
    name = f"pgqueue_module_{uuid.uuid4().hex[:12]}"
    admin_dsn = psycopg.conninfo.make_conninfo(server_dsn, dbname="postgres")
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    yield psycopg.conninfo.make_conninfo(server_dsn, dbname=name)
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def warnings_logged(caplog: pytest.LogCaptureFixture) -> Any:
    """``warnings_logged()``: the messages pgqueue logged at WARNING or above (but the start-up
    warning about autovacuum, which the suite's server may have off)."""
    caplog.set_level(logging.INFO, logger="pgqueue")
    return lambda: [r.getMessage() for r in caplog.records
                    if r.name.startswith("pgqueue") and r.levelno >= logging.WARNING
                    and getattr(r, "outcome", None) != "autovacuum-off"]
