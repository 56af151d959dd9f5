"""Claiming under limits that hold across every worker: cluster-wide and per-key concurrency, rate
limits, and the limits of queues kept in the database.

A worker none of whose tasks has such limits, and none of whose queues, claims as before (the
plain ``claim``/``exchange``, whose scan skips limited queues). Otherwise it claims with
``flow_lock`` + ``claim_limited`` in one transaction: the first waits for transaction-scoped
advisory locks of the limited types and queues, so the second, with a fresh snapshot, counts
exactly what is running and what started lately, on the database's clock. Claims of the same
limited type or queue take turns; every other claim runs beside them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import psycopg

from ..codec import text_array
from ..db.sql import Queries
from ..limits import RateLimit
from .aio import wait_any
from .completer import Completer
from .database import WorkerDatabase
from .records import ClaimedJob, Result
from .runtime import Handler
from .service import Lane, Periodic

log = logging.getLogger("pgqueue.worker")


def _limit_arrays(tasks: Mapping[str, Handler]) -> dict[str, str]:
    """The limits of the tasks that have any, as claim_limited's parallel arrays (by type)."""
    limited = sorted((name, task.limits) for name, task in tasks.items() if task.limits is not None)

    def count(rate: RateLimit | None) -> int | None:
        return None if rate is None else rate.count

    def window(rate: RateLimit | None) -> float | None:
        return None if rate is None else rate.seconds

    return {
        "types": text_array([name for name, _ in limited]),
        "conc": text_array([limits.concurrency for _, limits in limited]),
        "rate": text_array([count(limits.rate) for _, limits in limited]),
        "win": text_array([window(limits.rate) for _, limits in limited]),
        "key_conc": text_array([limits.key_concurrency for _, limits in limited]),
        "key_rate": text_array([count(limits.key_rate) for _, limits in limited]),
        "key_win": text_array([window(limits.key_rate) for _, limits in limited]),
        "fair": text_array([name for name, limits in limited if limits.fair]),
    }


class FlowControl:
    """The worker's claims when limits apply, and how long its claim loop may wait between them."""

    def __init__(
        self,
        db: WorkerDatabase,
        queries: Queries,
        tasks: Mapping[str, Handler],
        completer: Completer,
        queues: list[str],
        slot_freed: asyncio.Event,
    ) -> None:
        self.db, self.q, self.completer, self.slot_freed = db, queries, completer, slot_freed
        self.arrays = _limit_arrays(tasks)
        self.typed = self.arrays["types"] != "{}"
        self.lock_params = {
            "schema": queries.schema,
            "types": self.arrays["types"],
            "queues": text_array(queues),
        }
        self.limited_queues: list[str] | None = None
        """This worker's queues that have limits, as the watch last read them; None until its
        first read (right at start). Until then claims are plain ones, whose scan skips every
        queue with limits: a limited queue is never claimed plainly, only a little later."""
        self.next_room: float | None = None
        """When (time.monotonic()) the oldest start of a rate-limited scope leaves its window."""

    @property
    def active(self) -> bool:
        """Whether claims go through claim_limited: some task or queue of this worker has limits."""
        return self.typed or bool(self.limited_queues)

    def services(self, lane: Lane, interval: float) -> list[Periodic]:
        """The duty that reads which of the worker's queues have limits, unless its tasks already
        make every claim a limited one."""
        return [] if self.typed else [QueueLimitWatch(lane, interval, self)]

    async def claim(self, batch: list[Result], params: dict[str, Any]) -> list[ClaimedJob]:
        """Record ``batch`` and claim under the limits, in one transaction."""
        self.slot_freed.clear()  # a job that finishes from now on wakes the next claim
        events = self.completer.events
        started = time.perf_counter()
        async with self.db.pooled() as conn, conn.transaction():
            if batch:  # recorded first: the places it frees count for the claim
                await self.completer.exchange(batch, None, conn)
            cur = await conn.execute(self.q.flow_lock, self.lock_params)
            locked = (await cur.fetchone() or (None,))[0]
            cur = await conn.execute(
                self.q.claim_limited, {**params, **self.arrays, "locked": text_array(locked or [])}
            )
            rows, room_in = await cur.fetchone() or (None, None)
        self.next_room = None if room_in is None else time.monotonic() + max(room_in, 0.0)
        claimed = ClaimedJob.from_rows(rows)
        if events is not None:
            events.claimed(len(claimed), time.perf_counter() - started)
        return claimed

    def timeout(self, poll_interval: float) -> float:
        """How long the claim loop may wait for a wake-up: less than the poll interval when a
        rate limit's window makes room sooner."""
        if not self.active or self.next_room is None:
            return poll_interval
        return min(poll_interval, max(self.next_room - time.monotonic(), 0.001))

    async def wait(self, wake: asyncio.Event, poll_interval: float) -> None:
        """Wait for a wake-up, the poll interval, room under a rate limit, or, under limits, one of
        this worker's jobs finishing (the place it frees may be the one a held-back job waits for)."""
        if self.active:
            await wait_any(wake, self.slot_freed, timeout=self.timeout(poll_interval))
        else:
            await wait_any(wake, timeout=poll_interval)


class QueueLimitWatch(Periodic):
    """Reads which of the worker's queues have limits, every poll interval. Until it has seen a
    queue's limits, the plain claim skips that queue: a limit applies from the moment it is set."""

    name = "queue-limits"

    def __init__(self, lane: Lane, interval: float, flow: FlowControl) -> None:
        super().__init__(lane, interval)
        self.flow = flow

    async def tick(self, conn: psycopg.AsyncConnection[Any]) -> None:
        cur = await conn.execute(self.q.limited_queues, {"queues": self.flow.lock_params["queues"]})
        limited = list((await cur.fetchone() or ([],))[0] or [])
        if limited != self.flow.limited_queues:
            if limited or self.flow.limited_queues:
                log.info("queues with limits: %s", ", ".join(limited) or "none")
            self.flow.limited_queues = limited
