"""Finding the psycopg connection inside what callers pass as ``conn=``.

Accepted: a psycopg ``Connection`` or ``AsyncConnection``; a SQLAlchemy ``Session``,
``Connection``, ``AsyncSession`` or ``AsyncConnection`` on the psycopg dialect; Django's
``django.db.connection`` (or any ``connections[alias]``) with the psycopg 3 backend.
The job is written on that very connection, so it joins the caller's open transaction.
SQLAlchemy and Django are never imported here: they are recognised by shape.
"""

from __future__ import annotations

import select
import threading
import time
from typing import Any, Generic, TypeVar

import psycopg
from psycopg import pq

from .errors import ConfigurationError


class PooledConnection(psycopg.Connection[Any]):
    """A connection of the App's own pool: it keeps one cursor for the operations run on it
    (making a cursor costs about as much client time as encoding a job)."""

    _kept_cursor: psycopg.Cursor[Any] | None = None
    home: Any = None
    """The pool it was taken from (while it is out of it)."""
    due: float = 0.0
    """When it must go back to that pool (time.monotonic)."""

    def kept_cursor(self) -> psycopg.Cursor[Any]:
        cur = self._kept_cursor
        if cur is None or cur.closed:
            cur = self._kept_cursor = self.cursor()
        return cur


class AsyncPooledConnection(psycopg.AsyncConnection[Any]):
    """:class:`PooledConnection` for the App's async pool."""

    _kept_cursor: psycopg.AsyncCursor[Any] | None = None
    home: Any = None
    due: float = 0.0

    def kept_cursor(self) -> psycopg.AsyncCursor[Any]:
        cur = self._kept_cursor
        if cur is None or cur.closed:
            cur = self._kept_cursor = self.cursor()
        return cur


Pooled = TypeVar("Pooled", PooledConnection, AsyncPooledConnection)


def alive(conn: Any) -> bool:
    """False if the server has ended this idle connection (a restart, pg_terminate_backend,
    idle_session_timeout): it then left its goodbye or an EOF on the socket, which an idle
    connection of ours never has otherwise. One poll, no round trip; a dead connection is
    closed here, so that its pool replaces it rather than lend it out again."""
    if conn.closed:
        return False
    try:
        readable = select.select([conn.pgconn.socket], [], [], 0)[0]
    except (OSError, ValueError, psycopg.Error):
        readable = True
    if readable:
        conn.pgconn.finish()
    return not readable


class Stash(Generic[Pooled]):
    """Idle connections of the App's pool, kept out of it between operations.

    Taking a connection from psycopg_pool and giving it back runs some thirty Python calls
    (locks, statistics, logging); where several processes share the cores they run with cold
    caches, at ~50 µs an enqueue. A stashed connection is one ``list.pop`` away. A connection
    goes back to its pool when an operation leaves it anything but idle (or fails), when the
    stash is full, while any caller waits on the pool, and at the latest ``hold`` seconds after
    it left the pool, so the pool's own rules (lifetime, idle time, replacing broken
    connections) still apply to it.

    A caller finding the stash empty counts as waiting, under the same lock that guards the
    stash, until it has its connection from the pool (:meth:`waited`): from then on every
    connection that finishes goes back to the pool, where the waiter gets it. Without that, a
    caller blocked on an exhausted pool could time out while idle connections sat here.
    """

    def __init__(self, size: int, hold: float = 30.0) -> None:
        self._conns: list[Pooled] = []
        self._size = size
        self._hold = hold
        self._waiting = 0
        self._lock = threading.Lock()

    def take(self) -> Pooled | None:
        """A stashed connection (the most recently used), or None: the caller then takes one
        from the pool and calls :meth:`waited` once it has it (or has failed to get one)."""
        with self._lock:
            if self._conns:
                return self._conns.pop()
            self._waiting += 1
            return None

    def waited(self) -> None:
        with self._lock:
            self._waiting -= 1

    def lent(self, conn: Pooled, pool: Any) -> Pooled:
        """Note that ``conn`` just left ``pool``."""
        conn.home, conn.due = pool, time.monotonic() + self._hold
        return conn

    def keep(self, conn: Pooled) -> bool:
        """Stash ``conn`` after a successful operation; False: give it back to its pool instead."""
        if conn.pgconn.transaction_status != pq.TransactionStatus.IDLE or time.monotonic() >= conn.due:
            return False
        with self._lock:
            if self._waiting or len(self._conns) >= self._size:
                return False
            self._conns.append(conn)
            return True

    def drain(self) -> list[Pooled]:
        """Empty the stash (closing the App): its connections, to give back to their pool."""
        with self._lock:
            conns, self._conns = self._conns, []
        return conns


def _from_sqlalchemy(conn: Any) -> Any:
    if hasattr(conn, "get_bind") and callable(getattr(conn, "connection", None)):  # Session
        conn = conn.connection()
    pooled = getattr(conn, "connection", None)  # Connection -> PoolProxiedConnection
    return getattr(pooled, "driver_connection", None)


def _from_django(conn: Any) -> Any:
    if getattr(conn, "vendor", None) != "postgresql":
        raise ConfigurationError(f"pgqueue needs a PostgreSQL database, not Django's {conn.vendor!r} backend")
    conn.ensure_connection()
    return conn.connection


def sync_connection(conn: Any) -> psycopg.Connection[Any]:
    """The psycopg Connection behind ``conn``, or a ConfigurationError saying what to pass instead."""
    if isinstance(conn, psycopg.Connection):
        return conn
    if isinstance(conn, psycopg.AsyncConnection):
        raise ConfigurationError("an AsyncConnection was passed to a sync call: use aenqueue / the a* methods")
    module = type(conn).__module__
    driver = None
    if module.startswith("sqlalchemy"):
        if "asyncio" in module:
            raise ConfigurationError("a SQLAlchemy async object was passed to a sync call: use aenqueue")
        driver = _from_sqlalchemy(conn)
    elif module.startswith("django"):
        driver = _from_django(conn)
    return _checked(conn, driver, psycopg.Connection)


async def async_connection(conn: Any) -> psycopg.AsyncConnection[Any]:
    """The psycopg AsyncConnection behind ``conn`` (an AsyncConnection or SQLAlchemy async object)."""
    if isinstance(conn, psycopg.AsyncConnection):
        return conn
    if isinstance(conn, psycopg.Connection):
        raise ConfigurationError("a sync Connection was passed to an async call: use enqueue, or an AsyncConnection")
    driver = None
    module = type(conn).__module__
    if module.startswith("sqlalchemy"):
        if "asyncio" not in module:
            raise ConfigurationError(
                "a SQLAlchemy sync Session or Connection was passed to an async call: use enqueue, "
                "or an AsyncSession / AsyncConnection"
            )
        if hasattr(conn, "get_bind"):  # AsyncSession
            conn = await conn.connection()
        if hasattr(conn, "get_raw_connection"):  # AsyncConnection (an AsyncEngine is not one)
            driver = (await conn.get_raw_connection()).driver_connection
    return _checked(conn, driver, psycopg.AsyncConnection)


def _checked(conn: Any, driver: Any, wanted: type) -> Any:
    if isinstance(driver, wanted):
        return driver
    if driver is not None:
        raise ConfigurationError(
            f"conn= runs on {type(driver).__module__}.{type(driver).__name__}; pgqueue needs psycopg 3 "
            "(SQLAlchemy: a postgresql+psycopg:// URL; Django: the psycopg 3 backend)"
        )
    raise ConfigurationError(
        f"conn= must be a psycopg connection, a SQLAlchemy Session/Connection or Django's connection, "
        f"not {type(conn).__module__}.{type(conn).__name__}"
    )
