"""The worker: claim jobs into free slots, run them, record outcomes, keep leases alive, shut down cleanly.

One asyncio loop per process. The main loop claims as many jobs as there are free slots in
one statement; outcomes are recorded in batches by a flusher; a heartbeat on a connection of
its own renews the leases of running jobs; a listener wakes the main loop on NOTIFY, and the
main loop polls anyway, so a lost notification costs at most one poll interval.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import socket
import time
import uuid
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator, Coroutine, NamedTuple, Sequence

import psycopg
from psycopg_pool import AsyncConnectionPool

from . import client
from .client import arun, channel
from .errors import ConfigurationError
from .executors import CANCEL_GRACE, JobContext, Outcome, ProcessRunner, ThreadRunner, process_cap, run_async
from .job import retry_delay_seconds
from .settings import WorkerConfig, resolve_option
from .sql import queries

if TYPE_CHECKING:
    from .app import App, Task

log = logging.getLogger("pgqueue.worker")

KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
              "tcp_user_timeout": 30_000}
"""TCP settings for the worker's connections: a peer that vanished is noticed in tens of seconds
(idle: keepalives; with data unacknowledged: tcp_user_timeout, in milliseconds), not in hours.
A connection that the network still acknowledges but that never answers (a half-open link
behind a proxy or NAT) is caught by the worker's own time limit on every round trip."""


FLUSH_DELAY = 0.005
"""Seconds an outcome waits for the claim loop to record it along with its next claim."""

@dataclass(slots=True)
class Running:
    job: dict[str, Any]
    task: asyncio.Task[None] | None = None
    lost: bool = False
    started: float = field(default_factory=time.monotonic)


class Result(NamedTuple):
    job: dict[str, Any]
    outcome: Outcome
    duration: float
    handler_completed: bool = False
    """The handler completed the job itself, with JobContext.complete (its transaction may have
    rolled back since)."""


class Worker:
    """Runs jobs for one App until stopped. Use :meth:`pgqueue.App.run_worker` rather than this directly."""

    def __init__(self, app: "App", config: WorkerConfig) -> None:
        self.app = app
        self.config = config.validated()
        self.queues = list(config.queues or app.queues or ["default"])
        self.queue_set = set(self.queues)
        self.worker_id = config.worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.q = queries(app.schema)
        self._queues = _text_array(self.queues)
        self._no_claim = {"queues": "{}", "limit": 0, "full": "{}", "capped": "{}", "caps": "{}",
                          "lease_seconds": self.config.lease_seconds, "worker_id": self.worker_id}
        self.caps = {
            name: task.concurrency or (process_cap() if task.executor == "process" else None)
            for name, task in app.tasks.items()
        }
        self.caps = {name: cap for name, cap in self.caps.items() if cap is not None and cap < config.concurrency}
        self.running: dict[int, Running] = {}
        self.per_type: Counter[str] = Counter()
        self.results: list[Result] = []
        self.threads = ThreadRunner()
        self.processes = ProcessRunner()
        self.stopping = False
        self.signals = 0
        self.stats: Counter[str] = Counter()
        self.io_timeout = max(5.0, self.config.lease_seconds / 2)
        """Longest wait for one exchange with the database before its connection is given up for
        a new one (the driver then spends up to 5 s more cancelling): well inside a lease, so a
        worker on a dead link notices before its jobs are rescued elsewhere."""
        self._xmin_seen: dict[tuple[str, str], float] = {}
        self._xmin_warned: set[tuple[str, str]] = set()

    # --- lifecycle -----------------------------------------------------------------------

    async def run(self) -> None:
        self.wake = asyncio.Event()
        self.slot_freed = asyncio.Event()
        self.results_ready = asyncio.Event()
        self.hard_stop = asyncio.Event()
        url = self.app.database_url
        kwargs = {**self.app.connect_kwargs("pgqueue-worker"), **(KEEPALIVES if "host=/" not in url else {})}
        if self.config.async_commit:
            options = psycopg.conninfo.conninfo_to_dict(url).get("options")
            kwargs["options"] = f"{options} -c synchronous_commit=off" if options else "-c synchronous_commit=off"
        self.connect_kwargs = kwargs
        self.pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            url, min_size=1, max_size=3, kwargs=kwargs, open=False, name="pgqueue-worker", timeout=10
        )
        await self.pool.open()
        background: list[asyncio.Task[None]] = []
        installed = self._install_signals()
        try:
            async with self.pool.connection() as conn:
                await arun(conn, client.check_schema(self.app.schema))
            log.info(
                "worker %s started: queues=%s concurrency=%d listen=%s",
                self.worker_id, ",".join(self.queues), self.config.concurrency, self.config.listen,
            )
            background.append(asyncio.create_task(self._flush_loop(), name="pgqueue-flush"))
            background.append(asyncio.create_task(self._heartbeat_loop(), name="pgqueue-heartbeat"))
            background.append(asyncio.create_task(self._maintenance_loop(), name="pgqueue-maintenance"))
            if self.config.listen:
                background.append(asyncio.create_task(self._listen_loop(), name="pgqueue-listen"))
            await self._claim_loop()
            await self._drain()
        finally:
            await _cancel_all(background)
            await self._final_flush()
            self._remove_signals(installed)
            self.threads.close()
            self.processes.close()
            await self._forget_worker()
            await self.pool.close()
            log.info(
                "worker %s stopped: %d completed, %d failed attempts, %d handed back",
                self.worker_id, self.stats["completed"], self.stats["failed"], self.stats["released"],
            )

    def stop(self) -> None:
        """Stop claiming and shut down gracefully; a second call stops at once."""
        self.signals += 1
        if self.signals == 1:
            log.info("stopping: finishing running jobs (grace %gs); signal again to stop now", self.config.shutdown_grace)
        else:
            log.warning("stopping now: handing running jobs back")
            self.hard_stop.set()
        self.stopping = True
        self.wake.set()
        self.slot_freed.set()

    def _install_signals(self) -> list[signal.Signals]:
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.stop)
                installed.append(sig)
            except (RuntimeError, ValueError, NotImplementedError):  # not the main thread
                pass
        return installed

    def _remove_signals(self, installed: list[signal.Signals]) -> None:
        loop = asyncio.get_running_loop()
        for sig in installed:
            loop.remove_signal_handler(sig)

    # --- claiming ------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        failures = 0
        while not self.stopping:
            free = self.config.concurrency - len(self.running)
            if free <= 0:
                self.slot_freed.clear()
                await self.slot_freed.wait()
                continue
            self.wake.clear()
            try:
                claimed = await self._claim_unless_stopped(free)
                failures = 0
            except asyncio.CancelledError:
                if self.hard_stop.is_set() and not _cancelling():
                    return
                raise
            except psycopg.errors.InsufficientPrivilege as exc:
                # Not a passing fault: retrying would hide it.
                raise ConfigurationError(
                    f"the worker's database role may not claim jobs ({_describe(exc)}): grant it the "
                    f"worker privileges printed by `pgqueue grants --worker ROLE`"
                ) from None
            except (psycopg.Error, OSError, TimeoutError) as exc:
                failures += 1
                delay = min(0.25 * 2**failures, 10.0)
                log.warning("claim failed (%s); retrying in %.1fs", _describe(exc), delay)
                await self._sleep(delay)
                continue
            for job in claimed:
                self._start(job)
            if claimed and len(claimed) >= free:
                continue
            if self.config.burst:
                if not claimed and not self.running:
                    return
                self.slot_freed.clear()
                await self._wait_any(self.slot_freed, self.wake)
            else:
                await self._wait_any(self.wake)

    async def _wait_any(self, *events: asyncio.Event, timeout: float | None = None) -> None:
        """Wait until one of the events is set, or ``timeout`` (default: the poll interval) passes."""
        waiters = [asyncio.ensure_future(event.wait()) for event in events]
        try:
            await asyncio.wait(
                waiters, timeout=self.config.poll_interval if timeout is None else timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _sleep(self, seconds: float) -> None:
        """Back off before retrying the database; a stop request (which sets wake) ends it early."""
        self.wake.clear()
        if not self.stopping:
            await self._wait_any(self.wake, timeout=seconds)

    async def _claim_unless_stopped(self, limit: int) -> list[dict[str, Any]]:
        """Claim, but give up the round trip at once on a hard stop (raising CancelledError): a
        claim that committed all the same leaves its jobs to be rescued when their leases expire."""
        claiming = asyncio.ensure_future(self._claim(limit))
        stop = asyncio.ensure_future(self.hard_stop.wait())
        try:
            await asyncio.wait({claiming, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not claiming.done():
                claiming.cancel()
        return await claiming

    async def _claim(self, limit: int) -> list[dict[str, Any]]:
        """Claim up to ``limit`` jobs, recording the outcomes waiting to be recorded in the same
        transaction: one round trip and one commit for both."""
        full = [name for name, cap in self.caps.items() if self.per_type[name] >= cap]
        capped = [name for name in self.caps if name not in full]
        params = {
            "queues": self._queues,
            "limit": limit,
            "full": _text_array(full),
            "capped": _text_array(capped),
            "caps": _number_array([self.caps[name] - self.per_type[name] for name in capped]),
            "lease_seconds": self.config.lease_seconds,
            "worker_id": self.worker_id,
        }
        batch, self.results = self.results, []
        try:
            return await self._exchange(batch, params)
        except BaseException:
            self.results[:0] = batch
            raise

    # --- running -------------------------------------------------------------------------

    def _start(self, job: dict[str, Any]) -> None:
        running = Running(job)
        self.running[job["id"]] = running
        self.per_type[job["type"]] += 1
        running.task = asyncio.create_task(self._run_job(running), name=f"pgqueue-job-{job['id']}")

    async def _run_job(self, running: Running) -> None:
        job = running.job
        task = self.app.tasks.get(job["type"])
        started = time.monotonic()
        context = None
        try:
            if task is None:
                outcome = Outcome(False, error=f"no handler is registered for job type {job['type']!r} in this worker")
            else:
                timeout = resolve_option("timeout", job["timeout"], task.options, self.app.defaults)
                context = JobContext(
                    job["id"], job["type"], job["queue"], job["attempts"], job["max_attempts"],
                    lease_id=job["lease_id"], schema=self.app.schema, started=started,
                )
                outcome = await self._execute(task, job["data"], timeout, context)
        finally:
            self.running.pop(job["id"], None)
            self.per_type[job["type"]] -= 1
            self.slot_freed.set()
        duration = time.monotonic() - started
        handler_completed = context is not None and context._completed
        if running.lost:
            if handler_completed:
                # Lost after complete() had succeeded: either that transaction rolled back (the
                # heartbeat then found the lease gone: it has warned) or the job was being handed
                # back at shutdown after it committed. The row says which; nothing is recorded here.
                log.info("job %s stopped after its handler completed it in its own transaction "
                         "(completed if that transaction committed)", job["id"],
                         extra={"job_id": job["id"], "type": job["type"], "outcome": "handler-completed"})
                return
            log.warning(
                "job %s finished after its lease was lost; its outcome is not recorded",
                job["id"], extra={"job_id": job["id"], "type": job["type"], "outcome": "lease-lost"},
            )
            return
        # A job its handler completed still goes through the usual batch: if the handler's
        # transaction rolled back, the worker's own completion (or failure) applies as usual;
        # if it committed, the worker's statement is fenced and _report counts it completed.
        self.results.append(Result(job, outcome, duration, handler_completed))
        self.results_ready.set()

    async def _execute(
        self, task: "Task[Any]", data: dict[str, Any], timeout: float | None, context: JobContext
    ) -> Outcome:
        if task.executor == "async":
            return await run_async(task.fn, data, timeout, context)
        if task.executor == "thread":
            return await self.threads.run(task.fn, data, timeout, context)
        return await self.processes.run(task.fn, data, timeout, context)

    # --- recording outcomes --------------------------------------------------------------

    async def _flush_loop(self) -> None:
        """Record outcomes the claim loop has not taken along: finishing jobs free slots, and the
        claim loop's next exchange records their outcomes in the same transaction as the next
        claim (one commit instead of two). This loop waits ``FLUSH_DELAY`` first, and records
        what is left: outcomes of jobs that finished while the queue was empty, or the claim
        loop busy."""
        failures = 0
        while True:
            await self.results_ready.wait()
            self.results_ready.clear()
            await asyncio.sleep(FLUSH_DELAY)
            try:
                await self._flush()
                failures = 0
            except (psycopg.Error, OSError, TimeoutError) as exc:
                failures += 1
                delay = min(0.25 * 2**failures, 10.0)
                log.warning("recording job outcomes failed (%s); retrying in %.1fs", _describe(exc), delay)
                await asyncio.sleep(delay)
                self.results_ready.set()

    async def _flush(self) -> None:
        batch, self.results = self.results, []
        if not batch:
            return
        record = asyncio.ensure_future(self._exchange(batch, None))
        try:
            await asyncio.shield(record)
        except asyncio.CancelledError:
            # Finish what is in flight before letting the cancellation through, so that
            # outcomes the database took are not recorded twice, nor lost.
            try:
                await record
            except Exception:  # noqa: BLE001 - retried by the final flush
                self.results[:0] = batch
            raise
        except Exception:
            self.results[:0] = batch
            raise

    async def _exchange(self, batch: list[Result], claim: dict[str, Any] | None) -> list[dict[str, Any]]:
        """Record outcomes and, given claim parameters, claim more: one statement, one round trip,
        one commit. Arrays go as literals built here: adapting lists element by element cost
        the worker more CPU than anything else in a drain."""
        if not batch and claim is not None and claim["capped"] == "{}":
            async with self._pooled() as conn:
                cur = await conn.execute(self.q.claim, claim)
                return (await cur.fetchone())[2] or []  # type: ignore[index]
        done = [r for r in batch if r.outcome.ok]
        failed = [r for r in batch if not r.outcome.ok]
        outputs = [r.outcome.output for r in done]
        params = {
            "done_id": _number_array([r.job["id"] for r in done]),
            "done_lease": _text_array([r.job["lease_id"] for r in done]),
            "done_output": _text_array([client.encode_output(o) for o in outputs]) if any(
                o is not None for o in outputs) else "{}",
            "done_duration": _number_array([r.duration for r in done]),
            "failed_id": _number_array([r.job["id"] for r in failed]),
            "failed_lease": _text_array([r.job["lease_id"] for r in failed]),
            "failed_error": _text_array([r.outcome.error for r in failed]),
            "failed_retry_in": _text_array([self._retry_in(r.job) for r in failed]),
            "failed_duration": _number_array([r.duration for r in failed]),
            **(claim or self._no_claim),
        }
        async with self._pooled() as conn:
            cur = await conn.execute(self.q.exchange, params)
            completed, failures, claimed = await cur.fetchone()  # type: ignore[misc]
        if done:
            self._report(done, set(completed or ()), "completed")
        if failed:
            states = {job_id: state for job_id, state in failures or ()}
            self._report(failed, set(states), "failed", states)
        return claimed or []

    def _retry_in(self, job: dict[str, Any]) -> float | None:
        """Seconds until the next attempt, or None when the job must fail for good."""
        task = self.app.tasks.get(job["type"])
        if task is None or job["attempts"] >= job["max_attempts"]:
            return None

        def setting(name: str) -> Any:
            return resolve_option(name, job.get(name), task.options, self.app.defaults)

        return retry_delay_seconds(
            job["attempts"], setting("retry_delay") or 0.0, bool(setting("retry_backoff")), setting("retry_delay_max")
        )

    def _report(self, batch: list[Result], applied: set[int], what: str, states: dict[int, str] | None = None) -> None:
        info = log.isEnabledFor(logging.INFO)
        for result in batch:
            job = result.job
            if what == "completed" and not info and job["id"] in applied:
                self.stats["completed"] += 1  # the common case, with nothing to log
                continue
            extra = {"job_id": job["id"], "type": job["type"], "queue": job["queue"], "attempt": job["attempts"],
                     "duration": round(result.duration, 6)}
            if job["id"] not in applied and result.handler_completed:
                # The lease is gone because the handler's own transaction completed the job and
                # committed (a rollback would have left the lease for this statement to apply).
                # Only if it rolled back and the job was then rescued or cancelled in the moments
                # before this statement would this be another's doing: too rare to cost a query.
                self.stats["completed"] += 1
                if what == "completed":
                    if info:
                        log.info("job %s %s completed in %.3fs (in its handler's transaction)", job["id"],
                                 job["type"], result.duration, extra={**extra, "outcome": "completed"})
                else:
                    first_line = (result.outcome.error or "").strip().splitlines()[-1:] or [""]
                    log.warning("job %s %s: its handler completed it in its own transaction, then raised "
                                "(the job stays completed): %s", job["id"], job["type"], first_line[0],
                                extra={**extra, "outcome": "completed"})
                continue
            if job["id"] not in applied:
                self.stats["fenced"] += 1
                log.warning("job %s: lease no longer held, outcome discarded (another worker owns it now)",
                            job["id"], extra={**extra, "outcome": "fenced"})
                continue
            self.stats[what] += 1
            if what == "completed":
                if info:
                    log.info("job %s %s completed in %.3fs", job["id"], job["type"], result.duration,
                             extra={**extra, "outcome": "completed"})
            else:
                state = (states or {}).get(job["id"], "failed")
                level = logging.ERROR if state == "failed" else logging.WARNING
                first_line = (result.outcome.error or "").strip().splitlines()[-1:] or [""]
                log.log(level, "job %s %s attempt %d failed (%s): %s", job["id"], job["type"], job["attempts"],
                        "final" if state == "failed" else "will retry", first_line[0],
                        extra={**extra, "outcome": str(state)})

    async def _final_flush(self) -> None:
        for attempt in range(5):
            try:
                await self._flush()
                return
            except (psycopg.Error, OSError, TimeoutError) as exc:
                log.warning("recording outcomes at shutdown failed (%s)", _describe(exc))
                await asyncio.sleep(0.5 * (attempt + 1))
        if self.results:
            log.error("%d job outcomes could not be recorded; their leases will expire and they will run again",
                      len(self.results))

    # --- shutdown ------------------------------------------------------------------------

    async def _drain(self) -> None:
        """After the claim loop: let running jobs finish within the grace period, then hand the rest back."""
        tasks = {r.task for r in self.running.values() if r.task is not None}
        if tasks and not self.hard_stop.is_set():
            hard = asyncio.ensure_future(self.hard_stop.wait())
            await self._wait_tasks(tasks, hard)
            hard.cancel()
        leftover = list(self.running.values())
        if not leftover:
            return
        for running in leftover:
            running.lost = True  # their outcomes must not be recorded once handed back
            if running.task is not None:
                running.task.cancel()
        await asyncio.gather(*(r.task for r in leftover if r.task is not None), return_exceptions=True)
        await self._release([r.job for r in leftover])

    async def _wait_tasks(self, tasks: set[asyncio.Task[None]], hard: asyncio.Future[Any]) -> None:
        deadline = time.monotonic() + self.config.shutdown_grace
        pending = set(tasks)
        while pending and not hard.done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            _, pending = await asyncio.wait({*pending, hard}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            pending.discard(hard)  # type: ignore[arg-type]

    async def _release(self, jobs: list[dict[str, Any]]) -> None:
        for attempt in range(3):
            try:
                async with self._pooled() as conn:
                    cur = await conn.execute(self.q.release, {
                        "id": [job["id"] for job in jobs], "lease_id": [job["lease_id"] for job in jobs],
                    })
                    rows = await cur.fetchall()
                    if rows:
                        await conn.execute(self.q.notify, {"channel": channel(self.app.schema),
                                                           "queues": sorted({row[1] for row in rows})})
                self.stats["released"] += len(rows)
                log.info("handed %d unfinished job(s) back to the queue", len(rows))
                return
            except (psycopg.Error, OSError, TimeoutError) as exc:
                log.warning("handing jobs back failed (%s)", _describe(exc))
                await asyncio.sleep(0.5 * (attempt + 1))
        log.error("could not hand %d job(s) back; they will be rescued when their leases expire", len(jobs))

    # --- background duties ---------------------------------------------------------------

    @asynccontextmanager
    async def _pooled(self, timeout: float | None = None) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pool connection whose work must end within ``timeout`` (default: ``io_timeout``).

        A connection that the network still acknowledges but that never answers (half-open)
        would otherwise hang the worker forever. When one does, its idle siblings are probably
        just as dead (same network path): the pool is drained and refilled with new ones.
        """
        try:
            async with asyncio.timeout(timeout or self.io_timeout), self.pool.connection() as conn:
                yield conn
        except TimeoutError:
            await self.pool.drain()
            raise

    async def _dedicated(self, application_name: str, url: str | None = None) -> psycopg.AsyncConnection[Any]:
        kwargs = {**self.connect_kwargs, "application_name": application_name}
        connecting = asyncio.ensure_future(
            psycopg.AsyncConnection.connect(url or self.app.database_url, connect_timeout=10, **kwargs)
        )
        try:
            return await asyncio.shield(connecting)
        except asyncio.CancelledError:
            # Stopping while connecting: close what was being opened rather than leak it.
            try:
                await (await connecting).close()
            except Exception:  # noqa: BLE001
                pass
            raise

    async def _heartbeat_loop(self) -> None:
        """Renew the leases of running jobs from a connection of its own, so a busy pool cannot starve it."""
        interval = self.config.lease_seconds / 3
        conn: psycopg.AsyncConnection[Any] | None = None
        try:
            while True:
                try:
                    if conn is None or conn.closed:
                        conn = await self._dedicated("pgqueue-heartbeat")
                    async with asyncio.timeout(max(interval, 2.0)):
                        await self._heartbeat(conn)
                except (psycopg.Error, OSError, TimeoutError) as exc:
                    log.warning("heartbeat failed (%s); reconnecting", _describe(exc))
                    if conn is not None:
                        await conn.close()
                    conn = None
                await asyncio.sleep(interval)
        finally:
            if conn is not None:
                await conn.close()

    async def _heartbeat(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(self.q.worker_seen, {
            "id": self.worker_id, "hostname": socket.gethostname(), "pid": os.getpid(),
            "queues": self.queues, "concurrency": self.config.concurrency,
        })
        held = [r for r in list(self.running.values()) if not r.lost]
        if not held:
            return
        cur = await conn.execute(self.q.heartbeat, {
            "id": [r.job["id"] for r in held], "lease_id": [r.job["lease_id"] for r in held],
            "attempt": [r.job["attempts"] for r in held], "lease_seconds": self.config.lease_seconds,
        })
        renewed = {row[0] for row in await cur.fetchall()}
        for running in held:
            if running.job["id"] not in renewed and running.job["id"] in self.running:
                running.lost = True
                log.warning("job %s: lease lost (it was rescued or cancelled); its outcome will not be recorded",
                            running.job["id"], extra={"job_id": running.job["id"], "type": running.job["type"]})

    async def _maintenance_loop(self) -> None:
        """Rescue expired leases and prune old jobs. Every worker runs this; the SQL lets one act at a time."""
        last_prune = last_xmin_check = 0.0
        lock_key = _lock_key(f"pgqueue rescue {self.app.schema}")
        while True:
            try:
                async with self._pooled(self.io_timeout + 5.0) as conn:
                    cur = await conn.execute(self.q.rescue, {"lock_key": lock_key})
                    rescued = await cur.fetchall()
                    if rescued:
                        log.warning("rescued %d job(s) whose worker stopped renewing their lease: %s",
                                    len(rescued), ", ".join(str(row[0]) for row in rescued[:20]))
                        await conn.execute(self.q.notify, {"channel": channel(self.app.schema),
                                                           "queues": sorted({row[1] for row in rescued})})
                    if time.monotonic() - last_prune >= self.config.prune_interval:
                        last_prune = time.monotonic()
                        await self._prune(conn)
                    if time.monotonic() - last_xmin_check >= min(self.config.xmin_warning / 2, 10.0):
                        last_xmin_check = time.monotonic()
                        await self._check_xmin_horizon(conn)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                log.warning("maintenance failed (%s)", _describe(exc))
            await asyncio.sleep(self.config.rescue_interval)

    async def _check_xmin_horizon(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Warn about whatever holds the xmin horizon back for longer than ``xmin_warning``.

        While it does, no finished or claimed job's old row can be vacuumed: the table and
        its indexes bloat and every claim walks more dead entries. A role without
        pg_read_all_stats cannot see another session's xact_start, so holders are also timed
        here from when this worker first saw their (pid, xmin) pair.
        """
        cur = await conn.execute(self.q.xmin_holders)
        now = time.monotonic()
        seen = {}
        for holder, xmin, held_for in await cur.fetchall():
            key = (holder, xmin)
            seen[key] = first = self._xmin_seen.get(key, now - (held_for or 0.0))
            if now - first >= self.config.xmin_warning and key not in self._xmin_warned:
                self._xmin_warned.add(key)
                log.warning(
                    "%s has held the xmin horizon back for %.0fs or more: dead job rows cannot be vacuumed "
                    "and claims slow down until it ends", holder, now - first,
                    extra={"outcome": "xmin-horizon-held"},
                )
        self._xmin_seen = seen
        self._xmin_warned &= set(seen)

    async def _prune(self, conn: psycopg.AsyncConnection[Any]) -> None:
        params = {"completed_seconds": self.config.completed_retention,
                  "failed_seconds": self.config.failed_retention, "batch": 5000}
        deadline = time.monotonic() + 5.0  # keep pace with high rates without hogging the connection
        while time.monotonic() < deadline:
            cur = await conn.execute(self.q.prune, params)
            if cur.rowcount < params["batch"]:
                return

    async def _forget_worker(self) -> None:
        try:
            async with self._pooled(5.0) as conn:
                await conn.execute(self.q.worker_gone, {"id": self.worker_id})
        except Exception as exc:  # noqa: BLE001 - best effort at exit
            log.debug("could not remove the worker row: %s", _describe(exc))

    async def _listen_loop(self) -> None:
        """LISTEN on the schema's channel, and prove it works: when no notification has come for a
        while, send a probe through the pool and expect it here. A connection that stops answering
        (dropped, black-holed) is replaced and LISTEN re-issued; a LISTEN that never hears its probe
        (a pooler in transaction mode) is given up for polling, with a warning."""
        backoff = 0.5
        health_every = max(self.config.poll_interval * 5, 5.0)
        probe = f" probe {self.worker_id}"  # never a queue name: names have no surrounding spaces
        heard_once = False
        unheard = 0
        while True:
            conn = None
            try:
                conn = await self._dedicated("pgqueue-listener", self.config.listen_database_url)
                async with asyncio.timeout(self.io_timeout):
                    await conn.execute(self.q.listen)
                backoff = 0.5
                self.wake.set()  # anything sent while we were not listening
                quiet = 0.0  # probe at once after (re)connecting, then after each quiet spell
                while True:
                    if not await self._listen_for(conn, probe, quiet):
                        raise TimeoutError("the listener did not hear its own probe notification")
                    heard_once, unheard, quiet = True, 0, health_every
            except (psycopg.Error, OSError, TimeoutError) as exc:
                unheard += isinstance(exc, TimeoutError)
                if not heard_once and unheard >= 3:
                    log.warning(
                        "LISTEN/NOTIFY does not work on this connection (a pooler in transaction mode?): "
                        "polling every %gs instead. Give workers a direct connection for LISTEN with "
                        "PGQUEUE_LISTEN_DATABASE_URL, or pass --no-listen to silence this.",
                        self.config.poll_interval,
                    )
                    return
                log.warning("listener connection lost (%s); polling until it is back", _describe(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                if conn is not None:
                    await conn.close()

    async def _listen_for(self, conn: psycopg.AsyncConnection[Any], probe: str, quiet: float) -> bool:
        """Pass on wake-ups for ``quiet`` seconds; then probe. False if the probe was not heard."""
        if quiet > 0:
            async for note in conn.notifies(timeout=quiet):
                if note.payload in self.queue_set:
                    self.wake.set()
        async with self._pooled() as sender:
            await sender.execute(self.q.notify, {"channel": channel(self.app.schema), "queues": [probe]})
        async for note in conn.notifies(timeout=3.0):
            if note.payload in self.queue_set:
                self.wake.set()
            elif note.payload == probe:
                return True
        return False


def run_blocking(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` in a new event loop, like :func:`asyncio.run`, but without waiting forever at
    exit for tasks that ignore cancellation (an abandoned handler stuck in a ``while True`` that
    swallows ``CancelledError``): they get ``CANCEL_GRACE`` seconds, then are left behind."""
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main)
    finally:
        try:
            leftover = asyncio.all_tasks(loop)
            for task in leftover:
                task.cancel()
            if leftover:
                _, stuck = loop.run_until_complete(asyncio.wait(leftover, timeout=CANCEL_GRACE))
                if stuck:
                    log.warning("%d abandoned handler(s) still running at exit are left behind", len(stuck))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel tasks and wait until they have ended, cancelling again any that missed it.

    Python 3.11's ``asyncio.wait_for`` (used inside psycopg_pool too) can swallow a
    cancellation that races with its own completion; one cancel() is then not enough.
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed: %r", task.get_name(), task.exception())


def _number_array(values: Sequence[int | float]) -> str:
    """A PostgreSQL array literal of numbers."""
    return "{" + ",".join(map(str, values)) + "}"


def _text_array(values: Sequence[Any]) -> str:
    """A PostgreSQL array literal of text (``None`` is NULL; other values are written with ``str``)."""
    return "{" + ",".join("NULL" if v is None else _quoted(str(v)) for v in values) + "}"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _describe(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


def _cancelling() -> bool:
    """Whether the current task itself has been asked to stop (not merely a task it awaited)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _lock_key(text: str) -> int:
    """A stable signed 64-bit key for an advisory lock."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)
