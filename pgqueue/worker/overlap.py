"""A second claim in flight while the queue has a backlog.

One claim at a time keeps one server backend busy: while it travels and runs, the worker's jobs
run, and then the worker waits for it. When a claim comes back full (the queue has more), a
second claim goes out beside the claim loop's, on another pooled connection, so that two
backends work for the worker; its jobs wait with those claimed ahead (:mod:`.ahead`) and start
as slots free. A wake-up on an idle queue still sends one claim, never two: the second claim
only runs after a full one, and stops at the first claim that comes back short.

It claims only what the claim loop would claim at that moment (the free slots and the room for
jobs claimed ahead), never while claims may have been lost (the claim loop hands those back
once no claim is in flight) nor while limits are enforced (those claims take locks of their
own), and it ends with the claim loop, its claim in flight first answered and its jobs kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import psycopg

from .aio import describe

if TYPE_CHECKING:
    from .core import Worker


class SecondClaim:
    """The second claim's loop, and what the claim loop asks of it."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.backlog = asyncio.Event()
        """Set while the last claim came back full."""
        self.idle = asyncio.Event()
        """Set while no second claim is in flight."""
        self.idle.set()
        self.claims = 0
        """Claims this loop made (for tests and figures)."""
        self._ending = False

    @property
    def in_flight(self) -> bool:
        return not self.idle.is_set()

    def saw(self, full: bool) -> None:
        """The claim loop's claim came back full (or not)."""
        if full and self.worker.ahead.enabled:
            self.backlog.set()
        else:
            self.backlog.clear()

    async def settled(self) -> None:
        """Wait until no second claim is in flight, and start none until the next full claim."""
        self.backlog.clear()
        await self.idle.wait()

    @asynccontextmanager
    async def beside(self) -> AsyncIterator[None]:
        """Run the second claim's loop while the claim loop runs; at the end, wait for its claim."""
        enabled = self.worker.ahead.enabled
        task = asyncio.create_task(self._loop(), name="pgqueue-second-claim") if enabled else None
        try:
            yield
        finally:
            if task is not None:
                self._ending = True
                self.backlog.set()
                self.worker.slot_freed.set()
                await asyncio.wait([task])
                if not task.cancelled():
                    task.result()  # its failure, if it failed

    async def _loop(self) -> None:
        worker = self.worker
        while not (self._ending or worker.stopping):  # checked before every wait
            if not self.backlog.is_set():
                await self.backlog.wait()
                continue
            if worker.lost_claims or worker.flow.active:
                self.backlog.clear()
                continue
            limit = worker.ahead.limit()
            if limit <= 0:  # as the claim loop does: claim again once a slot frees
                worker.slot_freed.clear()
                await worker.slot_freed.wait()
                continue
            self.idle.clear()
            try:
                claimed = await worker._claim_unless_stopped(limit)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                # Its answer may be lost with jobs claimed: the claim loop hands them back.
                worker.lost_claims = True
                self.backlog.clear()
                worker.db.outage.report(exc, "claim failed (%s)", describe(exc))
                continue
            finally:
                self.idle.set()
                worker.slot_freed.set()  # the claim loop looks again (hand-back, burst end)
            if claimed is None:  # a hard stop gave it up
                return
            self.claims += 1
            for job in claimed:
                worker._start(job)
            if len(claimed) < limit:
                self.backlog.clear()
