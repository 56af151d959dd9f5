"""The App's async producer pool: the source of ``_pool_sync.py``.

Edit this module, then run ``python tools/async_to_sync.py`` to regenerate the sync twin.
"""

from __future__ import annotations

import asyncio  # async only
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from psycopg_pool import AsyncConnectionPool

from ._driver_async import AsyncPooledConnection, arun
from .adapters import async_connection
from .operation import Operation
from .ops import SchemaGate
from .stash import Stash, alive

R = TypeVar("R")


class AsyncProducerPool:
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
        self._pool: AsyncConnectionPool[Any] | None = None
        self._stash: Stash[AsyncPooledConnection] = Stash(size)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None  # async only

    async def execute(self, operation: Operation[R], conn: Any) -> R:
        """Run ``operation`` on ``conn`` (what ``conn=`` accepts), or with None on the pool."""
        if conn is not None:
            return await arun(await async_connection(conn), self._checked(operation))
        # The pool's connections are in autocommit: there is no transaction for `with conn`
        # to end, and putconn rolls back a connection left in one anyway.
        pool = await self.pool()  # async only
        stash = self._stash
        pooled = stash.take()
        while pooled is not None and not alive(pooled):
            await pooled.home.putconn(pooled)  # closed: the pool replaces it
            pooled = stash.take()
        if pooled is None:
            try:
                # sync: pool = self.pool()
                pooled = await pool.getconn()
                # Checked here rather than by the pool's own check, which sleeps a second after a failure.
                while not alive(pooled):
                    await pool.putconn(pooled)
                    pooled = await pool.getconn()
            finally:
                stash.waited()
            pooled = stash.lent(pooled, pool)
        try:
            result = await arun(pooled, self._checked(operation))
        except BaseException:
            await pooled.home.putconn(pooled)
            raise
        if not stash.keep(pooled):
            await pooled.home.putconn(pooled)
        return result

    async def pool(self) -> AsyncConnectionPool[Any]:
        """The connection pool, opened on first use."""
        if True:  # async
            # Its connections belong to the event loop that opened them: a new loop gets a new
            # pool, and an empty stash.
            loop = asyncio.get_running_loop()
            if self._pool is None or self._loop is not loop:
                url = self._url()
                pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                    url,
                    min_size=1,
                    max_size=self._size,
                    kwargs=self._kwargs(),
                    open=False,
                    name=self._name,
                    connection_class=AsyncPooledConnection,
                )
                await pool.open()
                self._pool, self._loop = pool, loop
                self._stash = Stash(self._size)
            return self._pool
        else:  # sync
            url = self._url()
            with self._lock:
                if self._pool is None:
                    self._pool = AsyncConnectionPool(
                        url,
                        min_size=1,
                        max_size=self._size,
                        kwargs=self._kwargs(),
                        open=True,
                        name=self._name,
                        connection_class=AsyncPooledConnection,
                    )
                return self._pool

    async def close(self) -> None:
        """Give the stashed connections back and close the pool (it opens again if used)."""
        for pooled in self._stash.drain():
            await pooled.home.putconn(pooled)
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
