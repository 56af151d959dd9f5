"""Publish/subscribe: subscriptions of tasks to events, kept in the database, and publishing an
event, which enqueues one job per subscribed task in one statement (in the caller's transaction
when given a connection: rolled back, no job exists)."""

from __future__ import annotations

from typing import Any

from ..job import JobId, validate_name
from .insert import JobTemplate
from .operation import Operation
from .sql import channel, queries

__all__ = ["publish", "subscribe", "subscriptions", "unsubscribe"]


def subscribe(schema: str, event: str, template: JobTemplate) -> Operation[None]:
    """Subscribe the task of ``template`` to ``event``: its queue, priority, attempts and
    dead-letter queue are those of the jobs a publish enqueues for it."""
    validate_name("event", event)
    yield (
        queries(schema).subscribe,
        {
            "event": event,
            "task": template.type,
            "queue": template.queue,
            "priority": template.priority,
            "max_attempts": template.max_attempts,
            "dead_letter": template.dead_letter,
        },
    )


def unsubscribe(schema: str, event: str, task: str | None) -> Operation[int]:
    """Remove the task's subscription to ``event`` (every task's, with None); how many went."""
    validate_name("event", event)
    if task is not None:
        validate_name("task", task)
    rows = yield queries(schema).unsubscribe, {"event": event, "task": task}
    return len(rows)


def subscriptions(schema: str) -> Operation[dict[str, list[str]]]:
    """The subscribed tasks of every event: ``{"user.registered": ["send-welcome-email"]}``."""
    rows = yield queries(schema).subscriptions, None
    result: dict[str, list[str]] = {}
    for row in rows:
        result.setdefault(row["event"], []).append(row["task"])
    return result


def publish(schema: str, event: str, data: str, notify: bool = True) -> Operation[list[JobId]]:
    """Enqueue one job per task subscribed to ``event`` with ``data`` (JSON text); their ids."""
    validate_name("event", event)
    params: dict[str, Any] = {"event": event, "data": data, "channel": channel(schema), "notify": notify}
    rows = yield queries(schema).publish, params
    return [JobId(row["id"], row["uid"]) for row in rows]
