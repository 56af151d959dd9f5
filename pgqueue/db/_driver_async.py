"""The driver on async connections: the source of ``_driver_sync.py``.

Edit this module, then run ``python tools/async_to_sync.py`` to regenerate the sync twin.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row, tuple_row

from .operation import CopyIn, Operation, Rows, T, has_rows


class AsyncPooledConnection(psycopg.AsyncConnection[Any]):
    """A connection of the App's own pool: it keeps one cursor for the operations run on it
    (making a cursor costs about as much client time as encoding a job)."""

    _kept_cursor: psycopg.AsyncCursor[Any] | None = None
    home: Any = None
    """The pool it was taken from (while it is out of it)."""
    due: float = 0.0
    """When it must go back to that pool (time.monotonic)."""
    planned: float = 0.0
    """When it was first lent, or last dropped its plans (time.monotonic; 0: never lent)."""

    def kept_cursor(self) -> psycopg.AsyncCursor[Any]:
        cur = self._kept_cursor
        if cur is None or cur.closed:
            cur = self._kept_cursor = self.cursor()
        return cur


async def arun(conn: psycopg.AsyncConnection[Any], operation: Operation[T]) -> T:
    """Run an operation on the connection and return its result (rows as :mod:`.driver` says).

    A :class:`AsyncPooledConnection` runs it on its kept cursor; any other on a cursor of its own.
    """
    if isinstance(conn, AsyncPooledConnection):
        kept, cur = True, conn.kept_cursor()
    else:
        kept, cur = False, conn.cursor()
    try:
        statement, params = next(operation)
        while True:
            rows: Rows = []
            if isinstance(statement, CopyIn):
                async with cur.copy(statement.statement) as copy:
                    for chunk in statement.chunks:
                        await copy.write(chunk)
            else:
                factory = tuple_row if type(params) is tuple else dict_row
                if cur.row_factory is not factory:
                    cur.row_factory = factory
                await cur.execute(statement, params)
                if has_rows(cur):
                    rows = await cur.fetchall()
            statement, params = operation.send(rows)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        if not kept:
            await cur.close()
