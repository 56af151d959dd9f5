"""Idle connections of the App's pool kept at hand between operations, and the check that one
is still alive. Shared by the sync and async producer pools."""

from __future__ import annotations

import select
import threading
import time
from typing import Any, Generic, TypeVar

import psycopg
from psycopg import pq

from ._driver_async import AsyncPooledConnection
from ._driver_sync import PooledConnection

Pooled = TypeVar("Pooled", PooledConnection, AsyncPooledConnection)


def alive(conn: Any) -> bool:
    """False if the server has ended this idle connection (a restart, pg_terminate_backend,
    idle_session_timeout): it then left its goodbye or an EOF on the socket, which an idle
    connection of ours never has otherwise. One poll, no round trip; a dead connection is
    closed here, so that its pool replaces it rather than lend it out again."""
    if conn.closed:
        return False
    try:
        readable: list[Any] | bool = select.select([conn.pgconn.socket], [], [], 0)[0]
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
