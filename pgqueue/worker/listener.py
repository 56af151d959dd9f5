"""The listener: LISTEN on the schema's channel and wake the claim loop when a job arrives."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from typing import Any

import psycopg

from ..db.sql import Queries
from .aio import RETRY_DELAY_MAX, describe
from .database import WorkerDatabase
from .events import WorkerEvents
from .service import Service

log = logging.getLogger("pgqueue.worker")


class Listener(Service):
    """LISTEN on the schema's channel, and prove it works: when no notification has come for a
    while, send a probe through the pool and expect it here. A connection that stops answering
    (dropped, black-holed) is replaced and LISTEN re-issued; a LISTEN that never hears its probe
    (a pooler in transaction mode) is given up for polling, with a warning.

    ``wake`` is called for every notification naming one of ``queues``, and once after each
    (re)connection, for anything sent while nobody listened; so is ``listening``. ``cancel(job_id,
    lease_id)`` is called for every ``" cancel <id> <lease>"`` notice (a running job was cancelled)."""

    name = "listen"

    def __init__(
        self,
        db: WorkerDatabase,
        queries: Queries,
        channel: str,
        queues: Collection[str],
        wake: Callable[[], None],
        *,
        worker_id: str,
        poll_interval: float,
        url: str | None = None,
        events: WorkerEvents | None = None,
        cancel: Callable[[int, str], None] | None = None,
        listening: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self.cancel, self.listening = cancel, listening
        self.db, self.q, self.channel, self.queues, self.wake = db, queries, channel, queues, wake
        self.poll_interval = poll_interval
        self.url = url
        self.events = events
        self.probe = f" probe {worker_id}"  # never a queue name: names have no surrounding spaces

    async def run(self) -> None:
        backoff = 0.5
        health_every = max(self.poll_interval * 5, 5.0)
        heard_once = False
        unheard = 0
        connected_before = False
        while True:
            conn = None
            try:
                conn = await self.db.dedicated("pgqueue-listener", self.url)
                async with asyncio.timeout(self.db.io_timeout):
                    await conn.execute(self.q.listen)
                self.db.outage.reached(conn)
                backoff = 0.5
                if connected_before and self.events is not None:
                    self.events.listener_reconnected()
                connected_before = True
                self.wake()  # anything sent while we were not listening
                if self.listening is not None:
                    self.listening()  # a cancel notice sent meanwhile is lost: look for one
                quiet = 0.0  # probe at once after (re)connecting, then after each quiet spell
                while True:
                    if not await self._listen_for(conn, quiet):
                        raise TimeoutError("the listener did not hear its own probe notification")
                    heard_once, unheard, quiet = True, 0, health_every
            except (psycopg.Error, OSError, TimeoutError) as exc:
                unheard += isinstance(exc, TimeoutError)
                if not heard_once and unheard >= 3:
                    log.warning(
                        "LISTEN/NOTIFY does not work on this connection (a pooler in transaction mode?): "
                        "polling every %gs instead. Give workers a direct connection for LISTEN with "
                        "PGQUEUE_LISTEN_DATABASE_URL, or pass --no-listen to silence this.",
                        self.poll_interval,
                    )
                    return
                self.db.outage.report(
                    exc, "listener connection lost (%s); polling until it is back", describe(exc)
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_DELAY_MAX)
            finally:
                if conn is not None:
                    await conn.close()

    async def _listen_for(self, conn: psycopg.AsyncConnection[Any], quiet: float) -> bool:
        """Pass on wake-ups for ``quiet`` seconds; then probe. False if the probe was not heard."""
        if quiet > 0:
            async for note in conn.notifies(timeout=quiet):
                self._heard(note.payload)
        async with self.db.pooled() as sender:
            await sender.execute(self.q.notify, {"channel": self.channel, "queues": [self.probe]})
        deadline = time.monotonic() + 3.0
        heard = False
        while not heard and (left := deadline - time.monotonic()) > 0:
            # Whole batches (stop_after ends the loop after the batch that holds the probe): leaving
            # the loop in the middle of one would drop the notifications that came with the probe.
            async for note in conn.notifies(timeout=left, stop_after=1):
                heard = self._heard(note.payload) or heard
        return heard

    def _heard(self, payload: str) -> bool:
        """Pass on one notification; True if it is this listener's probe."""
        if payload in self.queues:
            self.wake()
        elif payload.startswith(" cancel "):
            self._cancelled(payload)
        return payload == self.probe

    def _cancelled(self, payload: str) -> None:
        """A ``" cancel <id> <lease>"`` notice: pass it on if it is well formed."""
        parts = payload.split()
        if self.cancel is not None and len(parts) == 3 and parts[1].isdigit():
            self.cancel(int(parts[1]), parts[2])
