# generated from pgqueue/db/_pool_async.py by tools/async_to_sync.py; do not edit
"""The sync twin of ``_pool_async.py``: see there."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from psycopg_pool import ConnectionPool

from ._driver_sync import PooledConnection, run
from .adapters import sync_connection
from .operation import Operation
from .ops import SchemaGate
from .stash import Stash, alive

R = TypeVar("R")


class ProducerPool:
    """The App's own connections for enqueues and look-ups made without ``conn=``, and the
    one place that runs an operation: on the caller's connection, or on one of these.

    The pool opens on first use. Between operations, idle connections wait in a
    :class:`~pgqueue.db.stash.Stash` rather than in the pool (see there why).
    """

    def __init__(
        self,
        url: Callable[[], str],
        kwargs: Callable[[], dict[str, Any]],
        size: int,
        gate: SchemaGate,
        name: str,
    ) -> None:
        self._url = url
        self._kwargs = kwargs
        self._size = size
        self._name = name
        self._checked = gate.checked
        self._pool: ConnectionPool[Any] | None = None
        self._stash: Stash[PooledConnection] = Stash(size)
        self._lock = threading.Lock()

    def execute(self, operation: Operation[R], conn: Any) -> R:
        """Run ``operation`` on ``conn`` (what ``conn=`` accepts), or with None on the pool."""
        if conn is not None:
            return run(sync_connection(conn), self._checked(operation))
        # The pool's connections are in autocommit: there is no transaction for `with conn`
        # to end, and putconn rolls back a connection left in one anyway.
        stash = self._stash
        pooled = stash.take()
        while pooled is not None and not alive(pooled):
            pooled.home.putconn(pooled)  # closed: the pool replaces it
            pooled = stash.take()
        if pooled is None:
            try:
                pool = self.pool()
                pooled = pool.getconn()
                # Checked here rather than by the pool's own check, which sleeps a second after a failure.
                while not alive(pooled):
                    pool.putconn(pooled)
                    pooled = pool.getconn()
            finally:
                stash.waited()
            pooled = stash.lent(pooled, pool)
        try:
            result = run(pooled, self._checked(operation))
        except BaseException:
            pooled.home.putconn(pooled)
            raise
        if not stash.keep(pooled):
            pooled.home.putconn(pooled)
        return result

    def pool(self) -> ConnectionPool[Any]:
        """The connection pool, opened on first use."""
        url = self._url()
        with self._lock:
            if self._pool is None:
                self._pool = ConnectionPool(
                    url,
                    min_size=1,
                    max_size=self._size,
                    kwargs=self._kwargs(),
                    open=True,
                    name=self._name,
                    connection_class=PooledConnection,
                )
            return self._pool

    def close(self) -> None:
        """Give the stashed connections back and close the pool (it opens again if used)."""
        for pooled in self._stash.drain():
            pooled.home.putconn(pooled)
        if self._pool is not None:
            self._pool.close()
            self._pool = None
