"""Operations on the schedule table: add, remove and list schedules, and enqueue a schedule's ticks.

:func:`enqueue_ticks` must run in one transaction: it moves the schedule's last tick forward
under a guard (only forward, one worker at a time: a row lock) and inserts the ticks' jobs,
each with a unique key of schedule name and tick, so that both commit or neither does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..codec import encode_data
from ..cron import Schedule, Spec, tick_key
from .insert import JobTemplate, insert_jobs
from .operation import Operation
from .sql import queries

__all__ = ["enqueue_ticks", "list_schedules", "remove_schedule", "save_schedules"]


def save_schedules(
    schema: str, specs: Sequence[Spec], max_payload_bytes: int = 1024 * 1024
) -> Operation[None]:
    """Add the schedules, or replace those of the same names (their last ticks are kept)."""
    for spec in specs:
        yield (
            queries(schema).upsert_schedule,
            {
                "name": spec.name,
                "task": spec.task,
                "data": encode_data(spec.data, max_payload_bytes),
                "cron": spec.cron,
                "every": spec.every,
                "tz": spec.tz,
                "catch_up": spec.catch_up,
            },
        )


def remove_schedule(schema: str, name: str) -> Operation[bool]:
    """Remove a schedule; False if there was none of that name. Jobs it enqueued stay."""
    rows = yield queries(schema).delete_schedule, {"name": name}
    return bool(rows)


def list_schedules(schema: str) -> Operation[tuple[list[Schedule], datetime]]:
    """Every schedule, by name, and the database's clock."""
    rows = yield queries(schema).list_schedules, None
    return [Schedule.from_row(row) for row in rows if row["name"] is not None], rows[0]["now"]


def enqueue_ticks(
    schema: str, name: str, template: JobTemplate, data: str, ticks: Sequence[datetime], notify: bool = True
) -> Operation[list[int]]:
    """Enqueue one job per tick of schedule ``name`` (ticks oldest first), unless another worker
    enqueued them already; the ids of the jobs inserted. Run it in a transaction.

    The schedule's ``last_tick`` moves to the latest tick only if it was older (the real guard);
    each job's unique key (schedule and tick) is a second one, for the ticks still waiting.
    """
    if not ticks:
        return []
    rows = yield queries(schema).advance_schedule, {"name": name, "tick": ticks[-1]}
    if not rows:
        return []
    previous = rows[0]["previous"]
    jobs: list[Any] = [
        (_for_tick(template, name, tick), data) for tick in ticks if previous is None or tick > previous
    ]
    ids = yield from insert_jobs(schema, jobs, notify)
    return [job_id for job_id in ids if job_id is not None]


def _for_tick(template: JobTemplate, name: str, tick: datetime) -> JobTemplate:
    return JobTemplate(
        type=template.type,
        queue=template.queue,
        priority=template.priority,
        max_attempts=template.max_attempts,
        run_at=tick,
        retry_delay=template.retry_delay,
        retry_backoff=template.retry_backoff,
        retry_delay_max=template.retry_delay_max,
        timeout=template.timeout,
        unique_key=tick_key(name, tick),
        dead_letter=template.dead_letter,
    )
