"""Giving jobs back to the queue at once, rather than letting their leases expire: at shutdown
(the interrupted attempt is not counted), and after a claim whose answer was lost."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import psycopg

from ..codec import number_array
from ..db.sql import Queries
from .aio import describe
from .database import WorkerDatabase
from .records import ClaimedJob

log = logging.getLogger("pgqueue.worker")


class HandBack:
    """Hand jobs back under their leases, and wake the workers of their queues."""

    def __init__(
        self, db: WorkerDatabase, queries: Queries, channel: str, worker_id: str, stats: Counter[str]
    ) -> None:
        self.db, self.q, self.channel, self.worker_id, self.stats = db, queries, channel, worker_id, stats

    async def release(self, jobs: list[ClaimedJob]) -> None:
        """Hand back unfinished jobs at shutdown, at once (their interrupted attempt is not counted)."""
        for attempt in range(3):
            try:
                async with self.db.pooled() as conn:
                    cur = await conn.execute(
                        self.q.release,
                        {
                            "id": [job.id for job in jobs],
                            "lease_id": [job.lease_id for job in jobs],
                        },
                    )
                    rows = await cur.fetchall()
                    if rows:
                        await self.notify(conn, sorted({row[1] for row in rows}))
                self.stats["released"] += len(rows)
                log.info("handed %d unfinished job(s) back to the queue", len(rows))
                return
            except (psycopg.Error, OSError, TimeoutError) as exc:
                self.db.outage.report(exc, "handing jobs back failed (%s)", describe(exc))
                await asyncio.sleep(0.5 * (attempt + 1))
        log.error("could not hand %d job(s) back; they will be rescued when their leases expire", len(jobs))

    async def lost_claims(self, keep: list[int]) -> None:
        """Hand back at once the jobs a failed claim may have taken without this worker knowing
        (committed, answer lost): active under this worker's id, yet neither running here nor
        waiting for their outcome to be recorded. Otherwise they would wait for their lease to
        expire, and be rescued as if this worker had died."""
        async with self.db.pooled() as conn:
            cur = await conn.execute(
                self.q.release_lost, {"worker_id": self.worker_id, "keep": number_array(keep)}
            )
            rows = await cur.fetchall()
            if rows:
                await self.notify(conn, sorted({row[1] for row in rows}))
        if rows:
            self.stats["released"] += len(rows)
            log.warning(
                "handed back %d job(s) claimed by a statement whose answer was lost with its connection: %s",
                len(rows),
                ", ".join(str(row[0]) for row in rows[:20]),
            )

    async def notify(self, conn: psycopg.AsyncConnection[Any], queues: list[str]) -> None:
        """Wake the workers of these queues (jobs were handed back or rescued)."""
        await conn.execute(self.q.notify, {"channel": self.channel, "queues": queues})
