"""Read-only look-ups for ``pgqueue doctor``: server settings, pgqueue's tables, sessions, stuck
jobs and privileges. Each is an operation (see :mod:`pgqueue.db.operation`); none writes."""

from __future__ import annotations

from typing import Any

from .operation import Operation, Rows
from .sql import queries


def server(schema: str) -> Operation[dict[str, Any]]:
    """Autovacuum, the database's clock, notification queue usage, the role, the backend pid."""
    rows = yield queries(schema).health_server, None
    return dict(rows[0])


def tables(schema: str) -> Operation[Rows]:
    """pgqueue's tables: autovacuum reloption, live and dead tuples, the role's privileges."""
    return (yield queries(schema).health_tables, {"schema": schema})


def schema_usage(schema: str) -> Operation[bool]:
    """Whether the role may use the schema (when it may not, its tables cannot be looked at)."""
    rows = yield queries(schema).health_schema_usage, {"schema": schema}
    return bool(rows[0]["usage"])


def idle_in_transaction(schema: str, seconds: float) -> Operation[Rows]:
    """Sessions of this database idle in an open transaction for more than ``seconds``."""
    return (yield queries(schema).health_idle_in_transaction, {"seconds": seconds})


def xmin_holders(schema: str) -> Operation[Rows]:
    """What holds this database's xmin horizon back: its sessions, replication slots, prepared
    transactions (sessions in other databases do not stop its vacuum)."""
    return (yield queries(schema).health_xmin_holders, None)


def stuck_jobs(schema: str, seconds: float) -> Operation[dict[str, Any]]:
    """Active jobs whose lease expired more than ``seconds`` ago: count, first id, oldest expiry."""
    rows = yield queries(schema).health_stuck_jobs, {"seconds": seconds}
    return dict(rows[0])
