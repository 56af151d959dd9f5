"""The worker's lifecycle and claim loop: claim jobs into free slots, run them, shut down cleanly.

One asyncio loop per process. The claim loop claims as many jobs as there are free slots in
one statement (recording finished jobs' outcomes in the same one, see :mod:`.completer`); a
heartbeat on a connection of its own renews the leases of running jobs; a listener wakes the
claim loop on NOTIFY, and the claim loop polls anyway, so a lost notification costs at most one
poll interval. Rescue, prune and the xmin watch are services of their own (:mod:`.maintenance`), and so is the
opt-in vacuum duty (:mod:`.vacuum`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import Counter

import psycopg

from ..codec import number_array, text_array
from ..db.sql import channel, queries
from ..errors import ConfigurationError
from ..settings import WorkerConfig, resolve_option
from .ahead import ClaimAhead
from .aio import describe, install_signals, remove_signals, retry_delay, wait_any, wait_tasks
from .completer import Completer, claiming_nothing
from .database import WorkerDatabase
from .events import announce_start
from .executors import Executors, Outcome, process_cap
from .flow import FlowControl
from .handback import HandBack
from .listener import Listener
from .maintenance import Heartbeat, Pruner, Rescuer, XminWatch
from .overlap import SecondClaim
from .progress import ProgressWriter
from .records import ClaimedJob, Result, Running, report_lost
from .runtime import Runtime
from .scheduler import CHECK_INTERVAL, Scheduler
from .service import Lane, Service
from .vacuum import PlanWatch, StatisticsWatch, VacuumDuty, warn_if_autovacuum_off

log = logging.getLogger("pgqueue.worker")

HARD_STOP = "hard stop"


class Worker:
    """Runs jobs for one App until stopped. Use :meth:`pgqueue.App.run_worker` rather than this directly."""

    def __init__(self, runtime: Runtime, config: WorkerConfig) -> None:
        self.runtime = runtime
        self.config = config = config.validated()
        self.queues = list(config.queues or runtime.queues or ["default"])
        self.worker_id = config.worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.q = queries(runtime.schema)
        self.channel = channel(runtime.schema)
        self._queues = text_array(self.queues)
        caps = {
            name: task.concurrency or (process_cap() if task.executor == "process" else None)
            for name, task in runtime.tasks.items()
        }
        self.caps = {name: cap for name, cap in caps.items() if cap is not None and cap < config.concurrency}
        # One queue and no capped type: the simpler statements (exchange_one, claim_one) do.
        self.one_queue = self.queues[0] if len(self.queues) == 1 and not self.caps else None
        self.running: dict[int, Running] = {}
        self.ahead = ClaimAhead(self.running, config.concurrency, config.claim_ahead and not self.caps)
        self.per_type: Counter[str] = Counter()
        self.executors = Executors()
        self.stopping = False
        self.signals = 0
        self.stats: Counter[str] = Counter()
        self.wake = asyncio.Event()
        self.slot_freed = asyncio.Event()
        self.hard_stop = asyncio.Event()
        self.claiming: set[asyncio.Task[None]] = set()
        self.lost_claims = False  # a claim's answer was lost, or jobs claimed ahead dropped
        self.db = WorkerDatabase(
            runtime, io_timeout=max(5.0, config.lease_seconds / 2), async_commit=config.async_commit
        )
        no_claim = claiming_nothing(self.one_queue, config.lease_seconds, self.worker_id)
        self.events = runtime.events
        self.completer = Completer(self.db, self.q, runtime, self.stats, no_claim)
        self.handback = HandBack(self.db, self.q, self.channel, self.worker_id, self.stats)
        self.db.outage.on_lost.append(self._connection_lost)
        self.progress = ProgressWriter(self.db, self.q)
        lane = Lane(self.db, self.q)
        self.flow = FlowControl(self.db, self.q, runtime.tasks, self.completer, self.queues, self.slot_freed)
        self.second = SecondClaim(self)
        self.heartbeat = Heartbeat(
            self.db,
            self.q,
            self.running,
            worker_id=self.worker_id,
            queues=self.queues,
            concurrency=config.concurrency,
            lease_seconds=config.lease_seconds,
            finished=self.completer.held,
        )
        self.statistics = StatisticsWatch(self.db, runtime.schema)
        idle_reads = max(CHECK_INTERVAL, config.poll_interval)  # once per poll, at most once a second
        self.services: list[Service] = [
            self.completer,
            self.progress,
            self.heartbeat,
            Rescuer(lane, config.rescue_interval, self.handback.notify, self.events),
            Pruner(
                lane,
                config.prune_interval,
                completed_retention=config.completed_retention,
                failed_retention=config.failed_retention,
            ),
            XminWatch(lane, config.xmin_warning),
            self.statistics,
            PlanWatch(lane, idle_reads),
            *self.flow.services(lane, config.poll_interval),
        ]
        if not config.burst:  # a burst worker (and drain()) runs what is there; it enqueues no ticks
            self.services.append(Scheduler(lane, runtime, idle_reads))
        if config.vacuum_interval is not None:
            self.services.append(
                VacuumDuty(self.db, runtime.schema, config.vacuum_interval, url=config.listen_database_url)
            )
        if config.listen:
            self.services.append(
                Listener(
                    self.db,
                    self.q,
                    self.channel,
                    set(self.queues),
                    self.wake.set,
                    worker_id=self.worker_id,
                    poll_interval=config.poll_interval,
                    url=config.listen_database_url,
                    events=self.events,
                    cancel=self.cancel_running,
                    listening=self.heartbeat.beat_soon,
                )
            )

    # --- lifecycle -----------------------------------------------------------------------

    async def run(self) -> None:
        await self.db.open()
        installed = install_signals(self.stop)
        try:
            await self.db.check_schema(self.runtime.schema)
            await warn_if_autovacuum_off(self.db, self.runtime.schema, self.config.vacuum_interval)
            await self.statistics.check()  # before the first claim: a backlog is planned well
            log.info(
                "worker %s started: queues=%s concurrency=%d listen=%s loop=%s",
                self.worker_id,
                ",".join(self.queues),
                self.config.concurrency,
                self.config.listen,
                type(asyncio.get_running_loop()).__module__.partition(".")[0],
            )
            announce_start(self.events, self.worker_id, self.config)
            for service in self.services:
                service.start()
            async with self.second.beside():
                await self._claim_loop()
            await self._drain()
        finally:
            for service in self.services:
                await service.stop()
            await self.completer.final_flush()
            remove_signals(installed)
            self.executors.close()
            await self.heartbeat.forget()
            await self.db.close()
            if self.events is not None:
                self.events.worker_stopped(self.worker_id)
            log.info(
                "worker %s stopped: %d completed, %d failed attempts, %d handed back",
                self.worker_id,
                self.stats["completed"],
                self.stats["failed"],
                self.stats["released"],
            )

    def stop(self) -> None:
        """Stop claiming and shut down gracefully; a second call stops at once."""
        self.signals += 1
        if self.signals == 1:
            log.info(
                "stopping: finishing running jobs (grace %gs); signal again to stop now",
                self.config.shutdown_grace,
            )
        else:
            log.warning("stopping now: handing running jobs back")
            self.hard_stop.set()
            for claiming in self.claiming:
                claiming.cancel(HARD_STOP)
        self.stopping = True
        self.wake.set()
        self.slot_freed.set()

    # --- claiming ------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        failures = 0
        while not self.stopping:
            limit = self.ahead.limit()
            if limit <= 0 and not self.lost_claims:
                self.slot_freed.clear()
                await self.slot_freed.wait()
                continue
            self.wake.clear()
            self.slot_freed.clear()  # before the claim: a slot freed while it travels ends the wait after it
            recorded = self.completer.recorded
            try:
                if self.lost_claims:
                    await self.second.settled()  # no claim in flight: its jobs would be handed back
                    await self.handback.lost_claims([*self.running, *self.completer.pending()])
                    self.lost_claims = False
                claimed = await self._claim_unless_stopped(limit) if limit > 0 else []
                if claimed is None:
                    return
                failures = 0
            except psycopg.errors.InsufficientPrivilege as exc:
                # Not a passing fault: retrying would hide it.
                raise ConfigurationError(
                    f"the worker's database role may not claim jobs ({describe(exc)}): grant it the "
                    f"worker privileges printed by `pgqueue grants --worker ROLE`"
                ) from None
            except (psycopg.Error, OSError, TimeoutError) as exc:
                failures += 1
                self.lost_claims = True
                delay = retry_delay(failures)
                self.db.outage.report(exc, "claim failed (%s); retrying in %.1fs", describe(exc), delay)
                await self._sleep(delay)
                continue
            for job in claimed:
                self._start(job)
            self.second.saw(len(claimed) >= limit > 0)
            if claimed and (len(claimed) >= limit or self.flow.active):
                continue
            if self.config.burst:
                # Done once a claim finds nothing with nothing running, and no outcome was recorded
                # meanwhile: a retry due at once, recorded in or beside that claim, was not visible to it.
                if not (claimed or self.running or self.second.in_flight):
                    if self.completer.pending():  # claimed again once the completer has recorded them
                        await self.completer.settled()
                    elif self.completer.recorded == recorded:
                        return
                    continue
                await wait_any(
                    self.slot_freed, self.wake, timeout=self.flow.timeout(self.config.poll_interval)
                )
            else:
                await self.flow.wait(self.wake, self.config.poll_interval)

    async def _sleep(self, seconds: float) -> None:
        """Back off before retrying the database; a stop request (which sets wake) ends it early."""
        self.wake.clear()
        if not self.stopping:
            await wait_any(self.wake, timeout=seconds)

    async def _claim_unless_stopped(self, limit: int) -> list[ClaimedJob] | None:
        """Claim in the calling loop's own task (then sent before the jobs just started run: after
        them would undo claiming ahead); None if a hard stop gave the round trip up (the loop ends;
        a claim that committed all the same leaves its jobs to be rescued when their leases expire)."""
        task = asyncio.current_task()
        self.claiming.add(task)  # type: ignore[arg-type]
        try:
            return await self._claim(limit)
        except asyncio.CancelledError as exc:
            if exc.args == (HARD_STOP,) and task.uncancel() == 0:  # type: ignore[union-attr]
                return None
            raise
        finally:
            self.claiming.discard(task)

    async def _claim(self, limit: int) -> list[ClaimedJob]:
        """Claim up to ``limit`` jobs, recording the outcomes waiting to be recorded in the same
        transaction: one round trip and one commit for both."""
        full = [name for name, cap in self.caps.items() if self.per_type[name] >= cap]
        capped = [name for name in self.caps if name not in full]
        params = {
            "queues": self._queues,
            "limit": limit,
            "full": text_array(full),
            "capped": text_array(capped),
            "caps": number_array([self.caps[name] - self.per_type[name] for name in capped]),
            "lease_seconds": self.config.lease_seconds,
            "worker_id": self.worker_id,
            "queue": self.one_queue,
        }
        batch = self.completer.take()
        started = time.monotonic()
        try:
            if self.flow.active:
                return await self.flow.claim(batch, params)
            claimed = await self.completer.exchange(batch, params)
            self.ahead.claimed(time.monotonic() - started)
            return claimed
        except BaseException:
            self.completer.put_back(batch)
            raise

    def _connection_lost(self) -> None:
        """A connection failed (the server may have failed over): jobs claimed ahead do not start."""
        if self.ahead.drop():
            self.lost_claims = True  # handed back by the claim loop's next round trip
            self.slot_freed.set()

    # --- running -------------------------------------------------------------------------

    def cancel_running(self, job_id: int, lease_id: str) -> None:
        """The running job was cancelled (a notice on the schema's channel): stop its handler.
        Its outcome is not recorded (the cancel took its lease: the exchange would be fenced)."""
        running = self.running.get(job_id)
        if running is None or running.lost or str(running.job.lease_id) != lease_id:
            return
        log.info("job %s was cancelled: stopping its handler", job_id, extra={"job_id": job_id})
        running.cancel()
        self.progress.forget(job_id)

    def _start(self, job: ClaimedJob) -> None:
        held = self.running.get(job.id)
        if held is not None:  # claimed again while held here: see Running.claimed_again
            held.claimed_again(job, self.progress.sink)
            return
        running = self.running[job.id] = Running(job)
        if self.ahead.started() > self.config.concurrency:
            self.ahead.waiting.append(running)  # claimed ahead: starts when a slot frees
        else:
            self._run(running)

    def _run(self, running: Running) -> None:
        self.per_type[running.job.type] += 1
        running.task = asyncio.create_task(self._run_job(running), name=f"pgqueue-job-{running.job.id}")

    async def _run_job(self, running: Running) -> None:
        job = running.job
        task = self.runtime.tasks.get(job.type)
        started = time.monotonic()
        context = None
        events = self.events
        if events is not None:
            events.job_started(job)
        try:
            if task is None:
                outcome = Outcome(
                    False, error=f"no handler is registered for job type {job.type!r} in this worker"
                )
            else:
                timeout = resolve_option("timeout", job.timeout, task.options, self.runtime.defaults)
                context = running.open_context(self.runtime.schema, started, self.progress.sink)
                outcome = await self.executors.run(task, job.data, timeout, context)
        finally:
            self.running.pop(job.id, None)
            self.per_type[job.type] -= 1
            self.slot_freed.set()
            if running.then is not None:
                self._start(running.then)
            elif (waiting := None if self.stopping else self.ahead.next()) is not None:
                self._run(waiting)
        duration = time.monotonic() - started
        self.ahead.job_ran(duration)
        last_report = self.progress.take(job.id)
        if last_report is not None and not running.lost:
            await self.progress.write_last(job.id, last_report)
        if events is not None:
            events.job_ended(job, outcome, duration)
        handler_completed = context is not None and context._completed
        if running.lost:
            report_lost(job, handler_completed)
            return
        # A job its handler completed still goes through the usual batch: if the handler's
        # transaction rolled back, the worker's own completion (or failure) applies as usual;
        # if it committed, the worker's statement is fenced and the completer counts it completed.
        self.completer.add(Result(running.job, outcome, duration, handler_completed))  # its lease now

    # --- shutdown ------------------------------------------------------------------------

    async def _drain(self) -> None:
        """After the claim loop: hand back the jobs claimed ahead at once, let running jobs finish
        within the grace period, then hand the rest back."""
        ahead = self.ahead.release() + [r.then for r in self.running.values() if r.then is not None]
        for running in self.running.values():
            running.then = None
        if ahead:
            await self.handback.release(ahead)
        tasks = {r.task for r in self.running.values() if r.task is not None}
        if tasks and not self.hard_stop.is_set():
            await wait_tasks(tasks, self.hard_stop, self.config.shutdown_grace)
        leftover = list(self.running.values())
        if not leftover:
            return
        for running in leftover:
            running.lost = True  # their outcomes must not be recorded once handed back
            if running.task is not None:
                running.task.cancel()
        await asyncio.gather(*(r.task for r in leftover if r.task is not None), return_exceptions=True)
        await self.handback.release([r.job for r in leftover])
