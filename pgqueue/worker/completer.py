"""Recording outcomes in batches: completions and failed attempts, each guarded by its lease.

Finishing jobs free slots, and the claim loop's next exchange records their outcomes in the
same statement and transaction as its next claim (one commit instead of two). What the claim
loop does not take along within ``FLUSH_DELAY`` (jobs that finished while the queue was empty,
or while the claim loop waited) the completer's own loop records; not while a claim is in
flight: the claim loop mostly claims again as soon as it returns, and takes them along (if it
does not, the flush follows that claim).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from contextlib import nullcontext
from typing import Any

import psycopg
from psycopg import AsyncConnection

from ..codec import encode_output, error_summary, number_array, text_array
from ..db.sql import Queries
from ..job import retry_delay_seconds
from ..settings import resolve_option
from .aio import describe, retry_delay
from .database import WorkerDatabase
from .records import ClaimedJob, Result
from .runtime import Runtime
from .service import Service

log = logging.getLogger("pgqueue.worker")

FLUSH_DELAY = 0.005
"""Seconds an outcome waits for the claim loop to record it along with its next claim."""


def claiming_nothing(queue: str | None, lease_seconds: float, worker_id: str) -> dict[str, Any]:
    """Claim parameters that claim nothing, for an exchange that only records outcomes (``queue``:
    the worker's one queue, which picks the one-queue statements, or None)."""
    return {
        "queues": "{}",
        "limit": 0,
        "full": "{}",
        "capped": "{}",
        "caps": "{}",
        "lease_seconds": lease_seconds,
        "worker_id": worker_id,
        "queue": queue,
    }


class Completer(Service):
    """The batch of outcomes waiting to be recorded, and the one statement that records them."""

    name = "flush"

    def __init__(
        self,
        db: WorkerDatabase,
        queries: Queries,
        runtime: Runtime,
        stats: Counter[str],
        no_claim: dict[str, Any],
    ) -> None:
        super().__init__()
        self.db, self.q, self.runtime, self.stats = db, queries, runtime, stats
        self.no_claim = no_claim
        """Claim parameters that claim nothing, for an exchange that only records."""
        self.results: list[Result] = []
        self.recording: list[Result] = []
        """The batch this loop's exchange is recording right now."""
        self._recording: asyncio.Future[list[ClaimedJob]] | None = None
        """The exchange recording ``recording``, while there is one (see :meth:`settled`)."""
        self.recorded = 0
        """Statements that recorded outcomes so far (a burst worker's last claim may not see the
        retries they scheduled: it claims once more after any)."""
        self._in_flight: dict[int, list[Result]] = {}
        """The batches exchanges are recording right now (this loop's and the claim loop's), by id()."""
        self.ready = asyncio.Event()
        self.events = runtime.events
        self.claims = 0
        """Exchanges with a claim in flight: the claim loop takes what is waiting with its next one."""

    def add(self, result: Result) -> None:
        self.results.append(result)
        self.ready.set()

    def take(self) -> list[Result]:
        """The outcomes waiting, to record along with a claim; :meth:`put_back` them if it fails."""
        batch, self.results = self.results, []
        return batch

    def put_back(self, batch: list[Result]) -> None:
        self.results[:0] = batch

    def pending(self) -> list[int]:
        """Ids of the jobs whose outcomes wait to be recorded, or are being recorded by this loop."""
        return [r.job.id for r in (*self.results, *self.recording)]

    def held(self) -> list[ClaimedJob]:
        """The jobs whose outcomes wait to be recorded or are being recorded, by either loop.

        Their leases are still this worker's: the heartbeat renews them as it renews running
        jobs' leases. Otherwise an outcome that waits longer than what is left of its lease (a
        pooler's queue, a lock on the way, a few failed exchanges) would see its finished job
        rescued and run again."""
        batches = (self.results, *self._in_flight.values())
        return [result.job for batch in batches for result in batch]

    async def run(self) -> None:
        """Record what the claim loop left behind, ``FLUSH_DELAY`` after it became ready."""
        failures = 0
        while True:
            await self.ready.wait()
            self.ready.clear()
            await asyncio.sleep(FLUSH_DELAY)
            if self.claims:
                # The claim loop claims again as soon as this claim returns (it claims ahead, or
                # into the slots these jobs freed), recording them with it: one commit, not two.
                self.ready.set()
                continue
            try:
                await self.flush()
                failures = 0
            except (psycopg.Error, OSError, TimeoutError) as exc:
                failures += 1
                delay = retry_delay(failures)
                self.db.outage.report(
                    exc, "recording job outcomes failed (%s); retrying in %.1fs", describe(exc), delay
                )
                await asyncio.sleep(delay)
                self.ready.set()

    async def flush(self) -> None:
        batch = self.take()
        if not batch:
            return
        record = self._recording = asyncio.ensure_future(self.exchange(batch, None))
        self.recording = batch
        try:
            await asyncio.shield(record)
        except asyncio.CancelledError:
            # Finish what is in flight before letting the cancellation through, so that
            # outcomes the database took are not recorded twice, nor lost.
            try:
                await record
            except Exception:  # noqa: BLE001 - retried by the final flush
                self.put_back(batch)
            raise
        except Exception:
            self.put_back(batch)
            raise
        finally:
            self.recording, self._recording = [], None

    async def settled(self) -> None:
        """Wait until this loop's exchange in flight, if any, has ended (it reports its own failure)."""
        if self._recording is not None:
            await asyncio.wait([self._recording])

    async def final_flush(self) -> None:
        """At shutdown: record what is left, retrying a few times."""
        for attempt in range(5):
            try:
                await self.flush()
                return
            except (psycopg.Error, OSError, TimeoutError) as exc:
                log.warning("recording outcomes at shutdown failed (%s)", describe(exc))
                await asyncio.sleep(0.5 * (attempt + 1))
        if self.results:
            log.error(
                "%d job outcomes could not be recorded; their leases will expire and they will run again",
                len(self.results),
            )

    async def exchange(
        self, batch: list[Result], claim: dict[str, Any] | None, conn: AsyncConnection[Any] | None = None
    ) -> list[ClaimedJob]:
        """Record outcomes and, given claim parameters, claim more: one statement, one round trip,
        one commit (or, given ``conn``, in its open transaction). Arrays go as literals built here:
        adapting lists element by element cost the worker more CPU than anything else in a drain."""
        self._in_flight[id(batch)] = batch
        started = time.perf_counter()
        if claim is not None:
            self.claims += 1
        try:
            claimed = await self._exchange(batch, claim, conn)
        finally:
            del self._in_flight[id(batch)]
            if claim is not None:
                self.claims -= 1
        if claim is not None and self.events is not None:
            self.events.claimed(len(claimed), time.perf_counter() - started)
        return claimed

    async def _exchange(
        self, batch: list[Result], claim: dict[str, Any] | None, conn: AsyncConnection[Any] | None = None
    ) -> list[ClaimedJob]:
        # A worker of one queue without capped types names its queue ("queue"): the statements
        # for that case are smaller to plan.
        one = (claim or self.no_claim).get("queue") is not None
        if not batch and claim is not None and claim["capped"] == "{}":
            async with self.db.pooled() as conn:
                cur = await conn.execute(self.q.claim_one if one else self.q.claim, claim)
                return ClaimedJob.from_rows((await cur.fetchone())[2])  # type: ignore[index]
        done = [r for r in batch if r.outcome.ok]
        failed = [r for r in batch if not r.outcome.ok]
        outputs = [r.outcome.output for r in done]
        params = {
            "done_id": number_array([r.job.id for r in done]),
            "done_lease": text_array([r.job.lease_id for r in done]),
            "done_output": text_array([encode_output(o) for o in outputs])
            if any(o is not None for o in outputs)
            else "{}",
            "done_duration": number_array([r.duration for r in done]),
            "failed_id": number_array([r.job.id for r in failed]),
            "failed_lease": text_array([r.job.lease_id for r in failed]),
            "failed_error": text_array([r.outcome.error for r in failed]),
            "failed_retry_in": text_array([self.retry_in(r.job) for r in failed]),
            "failed_duration": number_array([r.duration for r in failed]),
            **(claim or self.no_claim),
        }
        async with self.db.pooled() if conn is None else nullcontext(conn) as conn:
            cur = await conn.execute(self.q.exchange_one if one else self.q.exchange, params)
            completed, failures, claimed, _ = await cur.fetchone()  # type: ignore[misc]
        jobs = ClaimedJob.from_rows(claimed)
        if batch:
            self.recorded += 1
            if jobs and len(completed or ()) + len(failures or ()) < len(batch):
                done, failed, jobs = self._claimed_again(done, failed, completed, failures, jobs)
        if done:
            self._report(done, set(completed or ()), "completed")
        if failed:
            states = {job_id: state for job_id, state in failures or ()}
            self._report(failed, set(states), "failed", states)
        return jobs

    def _claimed_again(
        self, done: list[Result], failed: list[Result], completed: Any, failures: Any, jobs: list[ClaimedJob]
    ) -> tuple[list[Result], list[Result], list[ClaimedJob]]:
        """Outcomes the statement could not record, of jobs it claimed again: their claim was lost
        (a server that failed over never saw it). They are recorded under the new claim with the
        next statement, rather than the job run again."""
        recorded = set(completed or ()) | {job_id for job_id, _ in failures or ()}
        claimed = {job.id: job for job in jobs}
        again = {
            r.job.id
            for r in (*done, *failed)
            if r.job.id in claimed and r.job.id not in recorded and not r.handler_completed
        }
        for result in (*done, *failed):
            if result.job.id in again:
                self.add(result._replace(job=claimed[result.job.id]))
                log.info(
                    "job %s: claimed again (its claim was lost): its outcome goes with the new claim",
                    result.job.id,
                )
        return (
            [r for r in done if r.job.id not in again],
            [r for r in failed if r.job.id not in again],
            [job for job in jobs if job.id not in again],
        )

    def retry_in(self, job: ClaimedJob) -> float | None:
        """Seconds until the next attempt, or None when the job must fail for good."""
        task = self.runtime.tasks.get(job.type)
        if task is None or job.attempts >= job.max_attempts:
            return None

        def setting(name: str) -> Any:
            return resolve_option(name, getattr(job, name), task.options, self.runtime.defaults)

        return retry_delay_seconds(
            job.attempts,
            setting("retry_delay") or 0.0,
            bool(setting("retry_backoff")),
            setting("retry_delay_max"),
        )

    def _report(
        self, batch: list[Result], applied: set[int], what: str, states: dict[int, str] | None = None
    ) -> None:
        info = log.isEnabledFor(logging.INFO)
        events = self.events
        for result in batch:
            job = result.job
            if events is not None:
                if job.id not in applied:
                    state = "completed" if result.handler_completed else "fenced"
                else:
                    state = (states or {}).get(job.id, "failed") if what == "failed" else "completed"
                events.job_finished(job, result.outcome, result.duration, state)
            if what == "completed" and not info and job.id in applied:
                self.stats["completed"] += 1  # the common case, with nothing to log
                continue
            extra = {
                "job_id": job.id,
                "type": job.type,
                "queue": job.queue,
                "attempt": job.attempts,
                "duration": round(result.duration, 6),
            }
            if job.id not in applied and result.handler_completed:
                # The lease is gone because the handler's own transaction completed the job and
                # committed (a rollback would have left the lease for this statement to apply).
                # Only if it rolled back and the job was then rescued or cancelled in the moments
                # before this statement would this be another's doing: too rare to cost a query.
                self.stats["completed"] += 1
                if what == "completed":
                    if info:
                        log.info(
                            "job %s %s completed in %.3fs (in its handler's transaction)",
                            job.id,
                            job.type,
                            result.duration,
                            extra={**extra, "outcome": "completed"},
                        )
                else:
                    log.warning(
                        "job %s %s: its handler completed it in its own transaction, then raised "
                        "(the job stays completed): %s",
                        job.id,
                        job.type,
                        _summary(result),
                        extra={**extra, "outcome": "completed"},
                    )
                continue
            if job.id not in applied:
                self.stats["fenced"] += 1
                log.warning(
                    "job %s: lease no longer held, outcome discarded (another worker owns it now)",
                    job.id,
                    extra={**extra, "outcome": "fenced"},
                )
                continue
            self.stats[what] += 1
            if what == "completed":
                if info:
                    log.info(
                        "job %s %s completed in %.3fs",
                        job.id,
                        job.type,
                        result.duration,
                        extra={**extra, "outcome": "completed"},
                    )
            else:
                state = (states or {}).get(job.id, "failed")
                level = logging.ERROR if state == "failed" else logging.WARNING
                log.log(
                    level,
                    "job %s %s attempt %d failed (%s): %s",
                    job.id,
                    job.type,
                    job.attempts,
                    "final" if state == "failed" else "will retry",
                    _summary(result),
                    extra={**extra, "outcome": str(state)},
                )


def _summary(result: Result) -> str:
    return error_summary(result.outcome.error or "")
