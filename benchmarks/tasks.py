"""The benchmark's pgqueue app: no-op and short-sleep handlers.

``app`` takes its database from ``PGQUEUE_DATABASE_URL``, so a worker runs with
``PGQUEUE_DATABASE_URL=<the run's database> pgqueue work benchmarks.tasks:app --burst``.
In-process scenarios call :func:`build_app` with the run's DSN instead.
"""

from __future__ import annotations

import asyncio

import pgqueue

from .clock import now_ns

SCHEMA = "pgqueue"

NOOP = "noop"
"""Async handler that returns at once: the drain measures the queue, not the work."""
NOOP_SYNC = "noop-sync"
"""The same, as a sync handler (runs in the worker's thread pool)."""
SLEEP = "sleep-10ms"
"""An I/O-bound shape: an async handler that sleeps 10 ms."""
STAMP = "stamp"
"""Async handler that returns the time it started (:func:`~benchmarks.clock.now_ns`) as the
job's output: the pick-up latency runs compare it with the producer's commit time."""


def build_app(database_url: str | None = None) -> pgqueue.App:
    """An App with the benchmark's handlers registered, on ``database_url`` (or the environment's)."""
    app = pgqueue.App(database_url, schema=SCHEMA)

    @app.task(NOOP)
    async def noop(n: int) -> None:
        return None

    @app.task(NOOP_SYNC)
    def noop_sync(n: int) -> None:
        return None

    @app.task(SLEEP)
    async def sleep_10ms(n: int) -> None:
        await asyncio.sleep(0.010)

    @app.task(STAMP)
    async def stamp(n: int) -> int:
        return now_ns()

    return app


app = build_app()
