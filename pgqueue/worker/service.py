"""The shape of the worker's background duties: a service starts, runs a loop of its own, and stops.

Each duty (heartbeat, rescuer, pruner, xmin watch, listener) is one small service. ``start``
and ``stop`` may be called any number of times; ``stop`` waits until the loop has ended.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import psycopg

from ..db.sql import Queries
from .aio import cancel_all, describe
from .database import WorkerDatabase

log = logging.getLogger("pgqueue.worker")


class Service:
    """A background loop on the worker's event loop."""

    name = "service"

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"pgqueue-{self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_all([task])

    async def run(self) -> None:
        raise NotImplementedError


@dataclass
class Lane:
    """The pool connection periodic duties take turns on: one duty holds it at a time, so that
    together they never take more than one of the pool's connections from the claim loop."""

    db: WorkerDatabase
    queries: Queries
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Periodic(Service):
    """A duty run every ``interval`` seconds on a pool connection.

    Periodic duties take turns on one :class:`Lane`. A failure is logged and the duty runs again
    at its next turn.
    """

    def __init__(self, lane: Lane, interval: float) -> None:
        super().__init__()
        self.lane = lane
        self.db = lane.db
        self.q = lane.queries
        self.interval = interval

    async def run(self) -> None:
        while True:
            try:
                async with self.lane.lock, self.db.pooled(self.db.io_timeout + 5.0) as conn:
                    await self.tick(conn)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                self.db.outage.report(exc, "%s failed (%s)", self.name, describe(exc))
            await asyncio.sleep(self.interval)

    async def tick(self, conn: psycopg.AsyncConnection[Any]) -> None:
        raise NotImplementedError
