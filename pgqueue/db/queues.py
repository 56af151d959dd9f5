"""Queue settings kept in the database: pausing and resuming a queue."""

from __future__ import annotations

from typing import Any

from ..job import validate_name
from .operation import Operation
from .sql import channel, queries


def pause_queue(schema: str, name: str, paused: bool, notify: bool = True) -> Operation[dict[str, Any]]:
    """Pause (or resume) the queue ``name``: workers stop claiming its jobs from their next claim.

    Resuming wakes the queue's workers. Jobs already running are not touched.
    """
    validate_name("queue", name)
    rows = yield queries(schema).pause_queue, {"name": name, "paused": bool(paused)}
    if notify and not paused:
        yield queries(schema).notify, {"channel": channel(schema), "queues": [name]}
    return dict(rows[0])


def queue_settings(schema: str) -> Operation[dict[str, dict[str, Any]]]:
    """The settings of every queue that has any, by name (a queue with none runs as usual)."""
    rows = yield queries(schema).queue_settings, None
    return {row["name"]: {"paused": row["paused"], "updated_at": row["updated_at"]} for row in rows}
