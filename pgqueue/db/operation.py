"""What an operation yields and what it gets back: the contract between operations and the driver.

An operation is a generator: it yields ``(statement, params)`` pairs, receives each
statement's rows back, and returns its result. The driver (``run``/``arun``) is the only
code that sends the statements; operations never do I/O, so each is written once for sync
and async connections.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from psycopg import sql
from psycopg.pq import ExecStatus

T = TypeVar("T")
Rows = list[Any]
"""A statement's rows: dicts for a statement with named parameters, tuples for positional ones."""
Operation = Generator["tuple[sql.SQL | CopyIn, dict[str, Any] | tuple[Any, ...] | None]", Rows, T]


@dataclass(frozen=True)
class CopyIn:
    """A ``COPY ... FROM STDIN`` statement and its data, for an operation to yield in place of a query.

    The data comes in chunks of text (encoded in the connection's encoding), sent as they are
    made: PostgreSQL loads the first rows while the client still formats the last ones.
    """

    statement: sql.SQL
    chunks: Iterable[str]


def has_rows(cur: Any) -> bool:
    """Whether the cursor's last statement returned rows."""
    # Cheaper than cur.description, which builds a Column object per column on each call.
    result = cur.pgresult
    return result is not None and result.status == ExecStatus.TUPLES_OK
