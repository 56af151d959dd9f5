"""The scheduler: every worker enqueues the due ticks of the periodic schedules, each exactly once.

When the worker starts, the schedules declared in code are written to the schedule table; from
then on the table is the one source. Every poll interval, at least every second (sooner when a
tick falls due sooner), the scheduler reads the table with the database's clock and, for each
schedule whose task this worker has, enqueues the ticks due since its last one: the latest only,
or with ``catch_up`` up to the 100 most recent. Leadership is not needed: moving a schedule's
``last_tick`` forward is guarded and takes its row lock, in the transaction that inserts the
tick's job, so of several workers racing for one tick exactly one enqueues it (see
:func:`pgqueue.db.schedules.enqueue_ticks`).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import psycopg

from ..codec import encode_data
from ..cron import Schedule, due_ticks, next_tick
from ..db.driver import arun
from ..db.insert import JobTemplate
from ..db.schedules import enqueue_ticks, list_schedules, save_schedules
from ..settings import resolve_option
from .runtime import Runtime
from .service import Lane, Periodic

log = logging.getLogger("pgqueue.worker")

__all__ = ["CHECK_INTERVAL", "Scheduler"]

CHECK_INTERVAL = 1.0
"""Seconds between two reads of the schedule table, at least. A worker reads it every poll
interval when that is longer: each read is one more query per worker, and a fleet of hundreds
polling every few seconds would otherwise spend most of its idle load on this one. A schedule
added, changed or removed at run time is seen that soon; a known schedule's ticks are enqueued
on time whatever the interval (the scheduler wakes for the next one)."""


class Scheduler(Periodic):
    """Enqueue the due ticks of the schedules whose tasks this worker runs."""

    name = "scheduler"

    def __init__(self, lane: Lane, runtime: Runtime, interval: float = CHECK_INTERVAL) -> None:
        super().__init__(lane, interval)
        self.runtime = runtime
        self.check_interval = interval
        self.saved = False
        self._unknown: set[str] = set()

    async def tick(self, conn: psycopg.AsyncConnection[Any]) -> None:
        schema = self.runtime.schema
        if not self.saved:
            if self.runtime.schedules:
                async with conn.transaction():
                    await arun(conn, save_schedules(schema, self.runtime.schedules))
            self.saved = True
        schedules, now = await arun(conn, list_schedules(schema))
        wait = self.check_interval
        for schedule in schedules:
            template = self._template(schedule)
            if template is None:
                continue
            after = schedule.last_tick or schedule.created_at or now
            ticks = due_ticks(schedule, after, now)
            if ticks:
                data = encode_data(schedule.data, 1 << 30)
                async with conn.transaction():
                    ids = await arun(conn, enqueue_ticks(schema, schedule.name, template, data, ticks))
                if ids:
                    log.info(
                        "schedule %s: enqueued %d tick(s), the last at %s",
                        schedule.name,
                        len(ids),
                        ticks[-1].isoformat(),
                        extra={"type": template.type},
                    )
            wait = min(wait, (next_tick(schedule, now) - now) / timedelta(seconds=1))
        # Wake just after the next tick falls due (the database's clock), or in a second anyway.
        self.interval = max(0.01, wait + 0.005)

    def _template(self, schedule: Schedule) -> JobTemplate | None:
        """The job settings of the schedule's task, or None when this worker does not run it
        (a worker that does enqueues its ticks; this one says so once)."""
        task = self.runtime.tasks.get(schedule.task)
        if task is None:
            if schedule.name not in self._unknown:
                self._unknown.add(schedule.name)
                log.info(
                    "schedule %s: task %r is not one of this worker's; skipped", schedule.name, schedule.task
                )
            return None
        options, defaults = task.options, self.runtime.defaults
        return JobTemplate(
            type=task.name,
            queue=options.queue or "default",
            priority=options.priority or 0,
            max_attempts=resolve_option("max_attempts", None, options, defaults) or 1,
            retry_delay=options.retry_delay,
            retry_backoff=options.retry_backoff,
            retry_delay_max=options.retry_delay_max,
            timeout=options.timeout,
        )
