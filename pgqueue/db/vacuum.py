"""Keeping the job table vacuumed where autovacuum does not: where autovacuum is off, whether the
job table needs a vacuum, the cluster-wide lock of the vacuum duty, and the vacuum itself.

VACUUM cannot run inside a transaction: run these on an autocommit connection.
"""

from __future__ import annotations

from typing import Any

from . import health
from .operation import Operation
from .sql import queries

OFF_WORDS = ("false", "off", "no", "0", "f", "n")
"""Spellings of false in a table's ``autovacuum_enabled`` reloption."""


def autovacuum_off(schema: str) -> Operation[list[str]]:
    """Where autovacuum is off for pgqueue, in words: ``"the server"`` and/or ``"table job"``, ...
    Empty when it is on everywhere. It reads what ``pgqueue doctor`` reads (:mod:`.health`)."""
    info = yield from health.server(schema)
    tables = yield from health.tables(schema)
    off = [] if info["autovacuum"] else ["the server"]
    off += [f"table {t['name']}" for t in tables if str(t["autovacuum_enabled"]).lower() in OFF_WORDS]
    return off


def job_table(schema: str) -> Operation[dict[str, Any]]:
    """The job table's ``live`` and ``dead`` tuples, ``last_vacuum``, and ``may_vacuum`` (whether
    this role may vacuum it)."""
    rows = yield queries(schema).vacuum_job_table, {"schema": schema}
    return dict(rows[0])


def job_table_unanalyzed(schema: str) -> Operation[dict[str, Any]]:
    """``unanalyzed``: the job table holds jobs but has no column statistics; ``analyzed``: it
    has them; ``may_analyze``: this role may analyze it."""
    rows = yield queries(schema).job_table_unanalyzed, {"schema": schema}
    return dict(rows[0])


def analyze_job(schema: str) -> Operation[None]:
    """``ANALYZE (SKIP_LOCKED)`` the job table."""
    yield queries(schema).analyze_job, None


def try_lock(schema: str, lock_key: int) -> Operation[bool]:
    """Take the vacuum duty's session-level advisory lock if no other session holds it."""
    rows = yield queries(schema).vacuum_lock, {"lock_key": lock_key}
    return bool(rows[0]["locked"])


def unlock(schema: str, lock_key: int) -> Operation[bool]:
    rows = yield queries(schema).vacuum_unlock, {"lock_key": lock_key}
    return bool(rows[0]["unlocked"])


def vacuum_job(schema: str) -> Operation[None]:
    """``VACUUM (ANALYZE)`` the job table."""
    yield queries(schema).vacuum_job, None
