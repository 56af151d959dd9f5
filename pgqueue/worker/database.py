"""The worker's connections: a small pool for claims, outcomes and maintenance, and dedicated
connections for the heartbeat and the listener, each round trip under a time limit."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import sql

from ..db import ops
from ..db.driver import arun
from ..db.reconnect import AsyncPromptPool
from ..db.sql import queries
from ..db.stash import alive
from .aio import describe
from .outage import Blocked, Outage, connection_lost
from .runtime import Runtime

log = logging.getLogger("pgqueue.worker")

KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}
"""TCP settings for the worker's connections: a peer that vanished is noticed in tens of seconds
(idle: keepalives; with data unacknowledged: tcp_user_timeout, in milliseconds), not in hours.
A connection that the network still acknowledges but that never answers (a half-open link
behind a proxy or NAT) is caught by the worker's own time limit on every round trip."""


PROBE_NAME = "pgqueue-probe"
"""The application name of the connection :meth:`WorkerDatabase.answers` opens, one of its own: a
probe told apart from the pool's connections (``pgqueue-worker``) in ``pg_stat_activity``."""

GROWTH = 2.0
"""How many times larger than its smallest size since the last re-planning the job table must
grow before the worker's connections plan their statements again."""

SMALLEST = 256 * 1024
"""The job table's size (bytes: 32 pages) below which its growth never re-plans: whatever plans
are made while it is smaller, its first growth past this size replaces them."""


class Replanning:
    """Plans that follow the job table's growth.

    A prepared statement keeps the generic plan PostgreSQL made for it on its sixth execution,
    until its table is analyzed or altered. Made while the job table was a few pages, that plan
    reads the whole table to find a claim's or an outcome's rows by id (cheaper than an index at
    that size): once the table holds 100,000 kept jobs, each claim took 77 ms instead of 1 ms, and a
    worker drained 5,500 jobs/s instead of 19,000, for as long as its connections lived, when
    autovacuum (whose ANALYZE would have ended it) was off or had not come round yet. So the worker
    watches the table's size (:class:`~pgqueue.worker.vacuum.PlanWatch`); each time it has grown
    :data:`GROWTH` times past its smallest size since the last time (and is past
    :data:`SMALLEST`), every connection runs ``DISCARD PLANS`` before its next statement, and its
    statements are planned again for the table as it is now. A handful of times over a table's
    growth from empty to millions of jobs."""

    def __init__(self, discard: sql.SQL) -> None:
        self.discard = discard
        self.epoch = 0
        """How many times the table has grown enough to plan again."""
        self.smallest: int | None = None
        self._planned: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], int]
        self._planned = weakref.WeakKeyDictionary()

    def table_size(self, size: int) -> bool:
        """The job table's size now (bytes); True if its statements are to be planned again."""
        self.smallest = size if self.smallest is None else min(self.smallest, size)
        if size < max(self.smallest * GROWTH, SMALLEST):
            return False
        self.epoch += 1
        self.smallest = size
        return True

    async def refresh(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Before a connection's next statement: drop its plans if the table has grown since it
        made them. A connection seen for the first time has made none yet."""
        if self._planned.setdefault(conn, self.epoch) != self.epoch:
            await conn.execute(self.discard)
            self._planned[conn] = self.epoch


class WorkerDatabase:
    """Where the worker's parts get their connections.

    ``io_timeout`` is the longest wait for one exchange with the database before its connection
    is given up for a new one (the driver then spends up to 5 s more cancelling): well inside a
    lease, so a worker on a dead link notices before its jobs are rescued elsewhere.
    """

    def __init__(self, runtime: Runtime, *, io_timeout: float, async_commit: bool) -> None:
        self.runtime = runtime
        self.io_timeout = io_timeout
        url = runtime.database_url
        kwargs = {
            **runtime.connect_kwargs_for("pgqueue-worker"),
            **(KEEPALIVES if "host=/" not in url else {}),
        }
        if async_commit:
            options = psycopg.conninfo.conninfo_to_dict(url).get("options")
            kwargs["options"] = (
                f"{options} -c synchronous_commit=off" if options else "-c synchronous_commit=off"
            )
        self.connect_kwargs = kwargs
        self.pool = AsyncPromptPool(
            url, min_size=1, max_size=3, kwargs=kwargs, open=False, name="pgqueue-worker", timeout=10
        )
        self.outage = Outage()
        """Whether the database is reachable: each part's connection failures are noted there."""
        self.replanning = Replanning(queries(runtime.schema).discard_plans)
        self._lent = 0
        """Pool connections lent out by :meth:`pooled` right now."""

    async def open(self) -> None:
        await self.pool.open()

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def pooled(self, timeout: float | None = None) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pool connection whose work must end within ``timeout`` (default: ``io_timeout``).

        A connection that the network still acknowledges but that never answers (half-open)
        would otherwise hang the worker forever. When one does, its idle siblings are probably
        just as dead (same network path): the pool is drained and refilled with new ones.

        A connection the server has ended (a restart, a terminated backend) is never lent out:
        each is checked with one poll of its socket, no round trip, and replaced. Lending dead
        connections one after another would fail as many claims in a row, each failure
        lengthening the back-off before the next.

        A connection whose server has become read-only (SQLSTATE 25006: a failover made another
        server the primary) is closed, so that the pool replaces it; with
        ``target_session_attrs=read-write`` in the URL the new one reaches the new primary.

        When the time limit passes, a new connection tells a database that is gone from a
        statement that is only stuck (behind a lock, say): the latter raises :class:`Blocked`, which
        is reported as what it is, not as the database unreachable. Not when the time went waiting
        for a connection the pool could not open (none of the pool's was lent out and stuck): the
        database was out of reach all that time, even if it answers by the time the limit passes
        (a standby promoted a moment before), and the plain ``TimeoutError`` says so.
        """
        acquired = False
        try:
            async with asyncio.timeout(timeout or self.io_timeout):
                conn = await self.pool.getconn()
                while not alive(conn):
                    await self.pool.putconn(conn)  # closed by alive(): the pool replaces it
                    conn = await self.pool.getconn()
                acquired = True
                self._lent += 1
                try:
                    await self.replanning.refresh(conn)
                    yield conn
                    self.outage.reached(conn)
                except psycopg.errors.ReadOnlySqlTransaction:
                    await conn.close()
                    raise
                finally:
                    self._lent -= 1
                    await self.pool.putconn(conn)
        except TimeoutError:
            if not acquired and self._lent < self.pool.max_size:
                raise  # waited for a connection the pool could not open: out of reach, not blocked
            await self.pool.drain()
            limit = timeout or self.io_timeout
            if await self.answers():
                raise Blocked(
                    f"no answer within {limit:g} s, though the server answers a new connection: a lock "
                    "held elsewhere, a slow statement, or a connection that died silently"
                ) from None
            raise

    async def answers(self) -> bool:
        """Whether the server answers a new connection within a few seconds."""
        try:
            async with asyncio.timeout(3.0):
                conn = await psycopg.AsyncConnection.connect(
                    self.runtime.database_url,
                    connect_timeout=2,
                    **{**self.connect_kwargs, "application_name": PROBE_NAME},
                )
                try:
                    await conn.execute("SELECT 1")
                finally:
                    await conn.close()
            return True
        except (psycopg.Error, OSError, TimeoutError):
            return False

    async def dedicated(self, application_name: str, url: str | None = None) -> psycopg.AsyncConnection[Any]:
        """A connection of its own (the caller closes it), with the worker's connection settings."""
        kwargs = {**self.connect_kwargs, "application_name": application_name}
        connecting = asyncio.ensure_future(
            psycopg.AsyncConnection.connect(url or self.runtime.database_url, connect_timeout=10, **kwargs)
        )
        try:
            return await asyncio.shield(connecting)
        except asyncio.CancelledError:
            # Stopping while connecting: close what was being opened rather than leak it.
            try:
                await (await connecting).close()
            except Exception:  # noqa: BLE001
                pass
            raise

    async def check_schema(self, schema: str, attempts: int = 3) -> None:
        """Refuse to run on an out-of-date schema (SchemaOutOfDate). A connection lost on the way
        is tried again a few times; a database that stays out of reach is an error."""
        for attempt in range(1, attempts + 1):
            try:
                async with self.pooled() as conn:
                    await arun(conn, ops.check_schema(schema))
                return
            except (psycopg.OperationalError, TimeoutError) as exc:
                if attempt == attempts:
                    raise
                if not connection_lost(exc):
                    log.warning("checking the schema failed (%s); trying again", describe(exc))
                await asyncio.sleep(0.5 * attempt)
