"""The worker's view of whether the database is reachable, logged once per outage.

When the database goes away (a restart, a failover) every part of the worker fails at once:
claims, outcomes, heartbeat, listener, maintenance, each retrying about every second. Rather
than a warning from each of them on every try, the worker logs one warning when the first
connection fails and one line when one works again; each failure's details go to DEBUG.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg

from .aio import RETRY_DELAY_MAX, describe

log = logging.getLogger("pgqueue.worker")


class Blocked(TimeoutError):
    """A round trip outlived its time limit while the server still answers on a new connection:
    the statement waits on a lock held elsewhere, or is slow. Not an outage."""


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection or its server is gone, or no longer the primary
    (SQLSTATE 25006 after a failover): then a new connection is the cure, not a report."""
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        return True
    if isinstance(exc, (psycopg.errors.QueryCanceled, Blocked)):
        return False
    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError, OSError, TimeoutError))


def server(conn: Any) -> str:
    """The server a connection reached, as host:port (for a multi-host URL, the one it chose)."""
    try:
        return f"{conn.info.host}:{conn.info.port}"
    except Exception:  # noqa: BLE001 - only for a log line
        return "?"


class Outage:
    """Whether the worker's connections are failing since when; see the module's docstring."""

    def __init__(self) -> None:
        self.since: float | None = None
        """When the first failure of this outage happened (time.monotonic), None while reachable."""
        self._since_wall = 0.0
        self.on_lost: list[Callable[[], None]] = []
        """Called on every lost connection, before it is logged: a part that must not act on what
        it read from the database while it may be gone (jobs claimed ahead) registers here."""

    def failed(self, what: str, exc: BaseException) -> bool:
        """Note a failure of ``what``; True if it was a lost connection (logged here), False if it
        is another error, which the caller reports itself."""
        if not connection_lost(exc):
            return False
        for callback in self.on_lost:
            callback()
        if self.since is None:
            self.since, self._since_wall = time.monotonic(), time.time()
            log.warning(
                "database unreachable since %s (%s: %s): retrying every %g s",
                time.strftime("%H:%M:%S", time.localtime(self._since_wall)),
                what,
                describe(exc),
                RETRY_DELAY_MAX,
            )
        log.debug("%s failed: %s", what, describe(exc))
        return True

    def report(self, exc: BaseException, message: str, *args: Any) -> None:
        """Log a part's failure: at DEBUG when it is a lost connection (the outage is logged
        once), else as a WARNING."""
        if self.failed((message % args).split(" (", 1)[0], exc):
            log.debug(message, *args)
        else:
            log.warning(message, *args)

    def reached(self, conn: Any) -> None:
        """A round trip on ``conn`` worked: if the database was unreachable, say it is back."""
        if self.since is None:
            return
        down, self.since = time.monotonic() - self.since, None
        log.info("database reachable again after %.1f s; server %s", down, server(conn))
