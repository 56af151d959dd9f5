"""Helpers shared by the integration tests: looking at what pgqueue wrote, and listening for wake-ups."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest


def job_count(conn: psycopg.Connection[Any], schema: str = "pgqueue") -> int:
    """Rows in the job table, read on an autocommit connection of the test's own."""
    row = conn.execute(f'SELECT count(*) FROM "{schema}".job').fetchone()
    assert row is not None
    return int(row[0])


def notifications(listener: psycopg.Connection[Any], wait: float = 0.3) -> list[tuple[str, str]]:
    """(channel, payload) of every notification that arrives within ``wait`` seconds."""
    return [(n.channel, n.payload) for n in listener.notifies(timeout=wait)]


@pytest.fixture
def listener(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection LISTENing on the default schema's channel."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("LISTEN pgqueue_jobs")
        yield connection
