"""The worker's maintenance duties: heartbeat, rescuer, pruner and xmin watch, one service each.

Every worker runs them; the SQL makes them safe to run from many workers at once (the rescue
takes a transaction-level advisory lock, the prune deletes in batches that skip locked rows).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg

from ..db.sql import Queries
from ..db.stash import alive
from .aio import describe, retry_delay, wait_any
from .database import WorkerDatabase
from .events import WorkerEvents
from .records import ClaimedJob, Running
from .service import Lane, Periodic, Service

log = logging.getLogger("pgqueue.worker")


class Heartbeat(Service):
    """Keep the worker's row fresh and renew the leases of its running jobs, from a connection of
    its own: a busy pool cannot starve it. A job whose lease did not renew was rescued or
    cancelled meanwhile: it is marked lost, so that its outcome is not recorded, and its handler
    is cancelled (the backstop of the listener's cancel notices).

    ``finished`` gives the jobs whose handlers have finished but whose outcomes are not recorded
    yet: their leases are renewed too, until the outcome is recorded."""

    name = "heartbeat"

    def __init__(
        self,
        db: WorkerDatabase,
        queries: Queries,
        running: Mapping[int, Running],
        *,
        worker_id: str,
        queues: Sequence[str],
        concurrency: int,
        lease_seconds: float,
        finished: Callable[[], Sequence[ClaimedJob]] = tuple,
    ) -> None:
        super().__init__()
        self.db, self.q, self.running, self.finished = db, queries, running, finished
        self.worker_id, self.queues, self.concurrency = worker_id, list(queues), concurrency
        self.lease_seconds = lease_seconds
        self.due = asyncio.Event()
        """Set to beat at once rather than at the next interval."""

    def beat_soon(self) -> None:
        """Beat now: the listener has just (re)connected, and a cancel notice sent while it did
        not listen is lost; the beat finds those jobs' leases gone and stops their handlers."""
        self.due.set()

    async def run(self) -> None:
        interval = self.lease_seconds / 3
        # A beat waits for its answer until the leases it renews would lapse (a beat starts one
        # interval after the last one renewed them). Round trips queued behind others (a pooler
        # short of server connections, a machine short of CPU) then still renew them in time:
        # giving up sooner would cancel the beat, close its connection (a pooler then drops the
        # queued statement), reconnect and queue again behind the same others, while the leases
        # lapse and their jobs run twice.
        patience = max(self.lease_seconds - interval, 2.0)
        conn: psycopg.AsyncConnection[Any] | None = None
        failures = 0
        try:
            while True:
                try:
                    if conn is not None and not alive(conn):
                        # Ended while idle (a restart, a failover): replaced without a failed beat.
                        await conn.close()
                        conn = None
                    if conn is None or conn.closed:
                        conn = await self.db.dedicated("pgqueue-heartbeat")
                    async with asyncio.timeout(patience):
                        await self.db.replanning.refresh(conn)
                        await self.beat(conn)
                    failures = 0
                    self.db.outage.reached(conn)
                except (psycopg.Error, OSError, TimeoutError) as exc:
                    failures += 1
                    self.db.outage.report(exc, "heartbeat failed (%s); reconnecting", describe(exc))
                    if conn is not None:
                        await conn.close()
                    conn = None
                # After a failure, try again soon: the leases of running jobs wait on it.
                await wait_any(
                    self.due, timeout=min(retry_delay(failures), interval) if failures else interval
                )
                self.due.clear()
        finally:
            if conn is not None:
                await conn.close()

    async def beat(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(
            self.q.worker_seen,
            {
                "id": self.worker_id,
                "hostname": socket.gethostname(),
                "pid": os.getpid(),
                "queues": self.queues,
                "concurrency": self.concurrency,
            },
        )
        held = [(r, r.job) for r in list(self.running.values()) if not r.lost]
        jobs = [job for _, job in held] + [job for job in self.finished() if job.id not in self.running]
        jobs += [r.then for r in list(self.running.values()) if r.then is not None]
        if not jobs:
            return
        cur = await conn.execute(
            self.q.heartbeat,
            {
                "id": [job.id for job in jobs],
                "lease_id": [job.lease_id for job in jobs],
                "attempt": [job.attempts for job in jobs],
                "lease_seconds": self.lease_seconds,
            },
        )
        renewed = {row[0] for row in await cur.fetchall()}
        for running, job in held:
            # Not if the job was claimed again meanwhile: its new lease was not the one sent.
            if job.id not in renewed and job.id in self.running and running.job is job:
                running.cancel()
                log.warning(
                    "job %s: lease lost (it was rescued or cancelled); its handler is told to stop and "
                    "its outcome will not be recorded",
                    job.id,
                    extra={"job_id": job.id, "type": job.type},
                )

    async def forget(self) -> None:
        """Remove this worker's row at exit (best effort: the pruner drops stale rows anyway)."""
        try:
            async with self.db.pooled(5.0) as conn:
                await conn.execute(self.q.worker_gone, {"id": self.worker_id})
        except Exception as exc:  # noqa: BLE001 - best effort at exit
            log.debug("could not remove the worker row: %s", describe(exc))


class Rescuer(Periodic):
    """Hand back jobs whose lease expired (their worker died or stalled), and wake the workers
    of their queues. One worker at a time does it (a transaction-level advisory lock)."""

    name = "rescue"

    def __init__(
        self,
        lane: Lane,
        interval: float,
        wake: Callable[[psycopg.AsyncConnection[Any], list[str]], Any],
        events: WorkerEvents | None = None,
    ) -> None:
        super().__init__(lane, interval)
        self.wake = wake
        self.events = events
        self.lock_key = lock_key(f"pgqueue rescue {lane.queries.schema}")

    async def tick(self, conn: psycopg.AsyncConnection[Any]) -> None:
        cur = await conn.execute(self.q.rescue, {"lock_key": self.lock_key})
        rescued = await cur.fetchall()
        if rescued:
            log.warning(
                "rescued %d job(s) whose worker stopped renewing their lease: %s",
                len(rescued),
                ", ".join(str(row[0]) for row in rescued[:20]),
            )
            await self.wake(conn, sorted({row[1] for row in rescued}))
            if self.events is not None:
                self.events.rescued(len(rescued))


class Pruner(Periodic):
    """Delete finished jobs past their retention, in batches, for at most 5 s a turn, the rows
    of workers not seen for 10 minutes (killed without removing their row), and expired keys of
    throttled enqueues."""

    name = "prune"

    def __init__(
        self,
        lane: Lane,
        interval: float,
        *,
        completed_retention: float,
        failed_retention: float,
        batch: int = 5000,
    ) -> None:
        super().__init__(lane, interval)
        self.params = {
            "completed_seconds": completed_retention,
            "failed_seconds": failed_retention,
            "batch": batch,
        }

    async def tick(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(self.q.worker_gone, {"id": ""})  # no worker is named "": only stale rows go
        await conn.execute(self.q.prune_keys, {"batch": self.params["batch"]})
        deadline = time.monotonic() + 5.0  # keep pace with high rates without hogging the connection
        while time.monotonic() < deadline:
            cur = await conn.execute(self.q.prune, self.params)
            if cur.rowcount < self.params["batch"]:
                return


class XminWatch(Periodic):
    """Warn about whatever holds the xmin horizon back for longer than ``threshold`` seconds.

    While it does, no finished or claimed job's old row can be vacuumed: the table and its
    indexes bloat and every claim walks more dead entries. A role without pg_read_all_stats
    cannot see another session's xact_start, so holders are also timed here from when this
    worker first saw their (pid, xmin) pair.
    """

    name = "xmin watch"

    def __init__(self, lane: Lane, threshold: float) -> None:
        super().__init__(lane, min(threshold / 2, 10.0))
        self.threshold = threshold
        self._seen: dict[tuple[str, str], float] = {}
        self._warned: set[tuple[str, str]] = set()

    async def tick(self, conn: psycopg.AsyncConnection[Any]) -> None:
        cur = await conn.execute(self.q.xmin_holders)
        now = time.monotonic()
        seen = {}
        for holder, xmin, held_for in await cur.fetchall():
            key = (holder, xmin)
            seen[key] = first = self._seen.get(key, now - (held_for or 0.0))
            if now - first >= self.threshold and key not in self._warned:
                self._warned.add(key)
                log.warning(
                    "%s has held the xmin horizon back for %.0fs or more: dead job rows cannot be vacuumed "
                    "and claims slow down until it ends",
                    holder,
                    now - first,
                    extra={"outcome": "xmin-horizon-held"},
                )
        self._seen = seen
        self._warned &= set(seen)


def lock_key(text: str) -> int:
    """A stable signed 64-bit key for an advisory lock."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)
