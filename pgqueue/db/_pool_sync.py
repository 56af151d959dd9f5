# generated from pgqueue/db/_pool_async.py by tools/async_to_sync.py; do not edit
"""The sync twin of ``_pool_async.py``: see there."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg_pool import PoolTimeout

from ..errors import EnqueueTimeout
from ._driver_sync import PooledConnection, run
from .adapters import sync_connection
from .operation import Operation
from .ops import SchemaGate, replanned
from .reconnect import PromptPool
from .stash import Stash, alive
from .watchdog import Watchdog

PLANS_KEPT = 30.0
"""Seconds a connection of the App's pool keeps its plans: the first operation after that drops
them first (see :func:`~pgqueue.db.ops.replanned`)."""

NO_LIMIT = 365 * 86400.0
"""The pool's wait for a connection when the App sets no time limit (psycopg_pool needs a number)."""

R = TypeVar("R")


class ProducerPool:
    """The App's own connections for enqueues and look-ups made without ``conn=``, and the
    one place that runs an operation: on the caller's connection, or on one of these.

    The pool opens on first use. Between operations, idle connections wait in a
    :class:`~pgqueue.db.stash.Stash` rather than in the pool (see there why).

    ``timeout`` (seconds, None: no limit) bounds each operation on the pool: the wait for a
    connection and the statements. Past it, :class:`~pgqueue.errors.EnqueueTimeout`. When a
    statement finds its server read-only (SQLSTATE 25006: a failover moved the primary), the
    error reaches the caller (nothing was written: trying again is safe) and that connection and
    the stashed ones are closed, for the pool to replace them, as after a lost connection.
    """

    def __init__(
        self,
        url: Callable[[], str],
        kwargs: Callable[[], dict[str, Any]],
        size: int,
        gate: SchemaGate,
        name: str,
        timeout: float | None = None,
    ) -> None:
        self._url = url
        self._kwargs = kwargs
        self._timeout = timeout
        self._watchdog = Watchdog()  # the sync pool's statement limit; asyncio.timeout's here
        self._size = size
        self._name = name
        self._checked = gate.checked
        self._schema = gate.schema
        self._pool: PromptPool | None = None
        self._stash: Stash[PooledConnection] = Stash(size)
        self._lock = threading.Lock()

    def execute(self, operation: Operation[R], conn: Any) -> R:
        """Run ``operation`` on ``conn`` (what ``conn=`` accepts), or with None on the pool."""
        if conn is not None:
            return run(sync_connection(conn), self._checked(operation))
        limit = self._timeout
        deadline = None if limit is None else time.monotonic() + limit
        try:
            return self._on_pool(operation, deadline)
        except PoolTimeout:
            if limit is None:
                raise
            raise EnqueueTimeout(
                f"no database connection within {limit:g} s (enqueue_timeout): nothing was written"
            ) from None
        except (TimeoutError, psycopg.errors.QueryCanceled) as exc:
            if limit is None:
                raise
            raise EnqueueTimeout(
                f"the database did not answer within {limit:g} s (enqueue_timeout): the job may or "
                f"may not have been written (retry with a unique key, or make the handler idempotent)"
            ) from exc

    def _on_pool(self, operation: Operation[R], deadline: float | None) -> R:
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
                wait = NO_LIMIT if deadline is None else max(deadline - time.monotonic(), 0.0)
                pooled = pool.getconn(timeout=wait)
                # Checked here rather than by the pool's own check, which sleeps a second after a failure.
                while not alive(pooled):
                    pool.putconn(pooled)
                    pooled = pool.getconn(timeout=wait)
            finally:
                stash.waited()
            pooled = stash.lent(pooled, pool)
        operation = self._checked(operation)
        now = time.monotonic()
        if now - pooled.planned > PLANS_KEPT:
            if pooled.planned:
                operation = replanned(self._schema, operation)
            pooled.planned = now
        self._watchdog.watch(pooled, deadline)
        try:
            result = run(pooled, operation)
        except psycopg.errors.ReadOnlySqlTransaction:
            self._watchdog.unwatch(pooled)
            # The server these connections reached is read-only now (a failover made another
            # the primary): nothing was written. They are replaced, so that the next
            # operation gets a new one, which target_session_attrs=read-write sends to the primary.
            for stale in (pooled, *stash.drain()):
                stale.close()
                stale.home.putconn(stale)
            raise
        except BaseException:
            self._watchdog.unwatch(pooled)
            pooled.home.putconn(pooled)
            raise
        self._watchdog.unwatch(pooled)
        if not stash.keep(pooled):
            pooled.home.putconn(pooled)
        return result

    def _connect_kwargs(self) -> dict[str, Any]:
        """The App's connection settings, with the time limit as the TCP time limit on data the
        server does not acknowledge (a server gone without a word; ignored on Unix sockets)."""
        kwargs = self._kwargs()
        if self._timeout is not None:
            kwargs.setdefault("tcp_user_timeout", max(int(self._timeout * 1000), 1))
        return kwargs

    def pool(self) -> PromptPool:
        """The connection pool, opened on first use."""
        url = self._url()
        with self._lock:
            if self._pool is None:
                self._pool = PromptPool(
                    url,
                    min_size=1,
                    max_size=self._size,
                    kwargs=self._connect_kwargs(),
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
