"""Time for delayed jobs in tests: the database clock decides when a job may run, so a test
moves the jobs, never the clock."""

from __future__ import annotations

from typing import Any

from ..app import App
from ..db.waiting import advance_run_at

__all__ = ["Clock"]


class Clock:
    """Lets time pass for the jobs of one App's schema (the ``pgqueue_clock`` fixture).

    ``advance(seconds)`` moves the ``run_at`` of every waiting job (created, or waiting out a
    retry delay) that many seconds earlier, as if the time had passed: a job delayed by an hour
    becomes runnable after ``advance(3600)``, then ``app.drain()`` runs it. The database's
    ``now()`` is untouched, so what pgqueue computes from it (new delays, retry backoff, leases,
    retention) keeps working as in production; jobs enqueued after the call are not moved.

    >>> welcome.using(delay=3600).enqueue(user_id=1)
    >>> pgqueue_clock.advance(3600)
    >>> pgqueue_app.drain()
    """

    def __init__(self, app: App) -> None:
        self.app = app
        self.advanced = 0.0
        """Seconds moved so far."""

    def advance(self, seconds: float, conn: Any = None) -> int:
        """Move waiting jobs ``seconds`` earlier; returns how many were moved."""
        if seconds < 0:
            raise ValueError("time only moves forward: seconds must be >= 0")
        moved = self.app._execute(advance_run_at(self.app.schema, seconds), conn)
        self.advanced += seconds
        return moved

    async def aadvance(self, seconds: float, conn: Any = None) -> int:
        """:meth:`advance` on the App's async pool (or an ``AsyncConnection`` given as ``conn``)."""
        if seconds < 0:
            raise ValueError("time only moves forward: seconds must be >= 0")
        moved = await self.app._aexecute(advance_run_at(self.app.schema, seconds), conn)
        self.advanced += seconds
        return moved
