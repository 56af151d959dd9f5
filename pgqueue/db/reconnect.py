"""pgqueue's own connection pools: psycopg_pool's, reconnecting about every second while the
database is away, and quiet about it in the logs.

psycopg_pool retries a failed connection attempt after 1 s, 2 s, 4 s, 8 s...: a database
that comes back (a restart, a promoted standby) may wait many seconds for the pool to notice,
and an enqueue with it. pgqueue's pools retry every ``RECONNECT_DELAY_MAX`` seconds at most.
Only pools made from these classes change; other psycopg pools in the process keep
psycopg_pool's own behaviour.

While the database is away, psycopg_pool logs a warning for each connection it discards or
fails to open. For pgqueue's pools these go to DEBUG on the ``pgqueue.db`` logger: the worker
logs the outage once, plainly (see :mod:`pgqueue.worker.outage`).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from psycopg_pool import AsyncConnectionPool, ConnectionPool
from psycopg_pool.base import AttemptWithBackoff

log = logging.getLogger("pgqueue.db")

RECONNECT_DELAY_MAX = 1.0
"""Longest wait between two attempts of one of pgqueue's pools to reconnect, in seconds."""


class PromptAttempt(AttemptWithBackoff):
    """psycopg_pool's reconnection back-off, starting at 0.25 s and capped at RECONNECT_DELAY_MAX."""

    INITIAL_DELAY = 0.25

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, RECONNECT_DELAY_MAX)


class PromptPool(ConnectionPool[Any]):
    """A psycopg_pool :class:`~psycopg_pool.ConnectionPool` that reconnects about every second."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        quiet(self.name)

    def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        # psycopg_pool passes the same attempt along from one try to the next: the first
        # (None) is where the back-off policy is chosen.
        super()._add_connection(attempt or PromptAttempt(timeout=self.reconnect_timeout), growing)


class AsyncPromptPool(AsyncConnectionPool[Any]):
    """A psycopg_pool :class:`~psycopg_pool.AsyncConnectionPool` that reconnects about every second."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        quiet(self.name)

    async def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        await super()._add_connection(attempt or PromptAttempt(timeout=self.reconnect_timeout), growing)


_QUIET: set[str] = set()
_lock = threading.Lock()

NOISY = ("discarding closed connection", "discarding broken connection", "error connecting in")
"""psycopg_pool's warnings that a lost database repeats for every connection."""


class QuietPoolFilter(logging.Filter):
    """On the ``psycopg.pool`` logger: moves the warnings a lost database makes pgqueue's pools
    repeat (:data:`NOISY`) to DEBUG on ``pgqueue.db``; every other record passes unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING or not str(record.msg).startswith(NOISY):
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        if not any(_ours(arg) for arg in args):
            return True
        log.debug("pool: %s", record.getMessage())
        return False


def _ours(arg: Any) -> bool:
    if isinstance(arg, str):
        return arg in _QUIET
    pool = getattr(arg, "_pool", None)  # psycopg_pool marks each connection with its pool
    return isinstance(pool, (PromptPool, AsyncPromptPool))


_filter = QuietPoolFilter()


def quiet(name: str) -> None:
    """Quieten psycopg_pool's repeated warnings for the pool named ``name`` (one of pgqueue's)."""
    with _lock:
        _QUIET.add(name)
        logger = logging.getLogger("psycopg.pool")
        if _filter not in logger.filters:
            logger.addFilter(_filter)
