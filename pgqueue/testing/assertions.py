"""``assert_enqueued`` and ``assert_not_enqueued``: what a test asks of the jobs its code enqueued."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..app import App
from ..db.waiting import unfinished_jobs
from ..job import Job
from ..task import Task, TaskCall

__all__ = ["assert_enqueued", "assert_not_enqueued", "enqueued"]

SHOWN = 20
"""Jobs listed in a failure message, at most."""


def _resolve(task_or_type: Any, app: App | None) -> tuple[str, App]:
    if isinstance(task_or_type, TaskCall):
        task_or_type = task_or_type.task
    if isinstance(task_or_type, Task):
        return task_or_type.name, app or task_or_type.app
    if isinstance(task_or_type, str):
        if app is None:
            raise TypeError(
                f"assert_enqueued({task_or_type!r}, ...) needs the App: pass it second, "
                f"assert_enqueued({task_or_type!r}, pgqueue_app, ...), or pass the task itself"
            )
        return task_or_type, app
    raise TypeError(f"expected a task or a job type name, not {task_or_type!r}")


def _matches(job: Job, type_: str, data: Mapping[str, Any]) -> bool:
    return job.type == type_ and all(
        key in job.data and job.data[key] == value for key, value in data.items()
    )


def _listing(jobs: list[Job]) -> str:
    if not jobs:
        return "no job waits or runs"
    lines = [f"  #{job.id} {job.type} {job.state} {job.data!r}" for job in jobs[:SHOWN]]
    if len(jobs) > SHOWN:
        lines.append(f"  ... and {len(jobs) - SHOWN} more")
    return "jobs waiting or running:\n" + "\n".join(lines)


def _describe(type_: str, data: Mapping[str, Any]) -> str:
    if not data:
        return f"a {type_!r} job"
    return f"a {type_!r} job with data including {dict(data)!r}"


def enqueued(task_or_type: Any, app: App | None = None, /, conn: Any = None, **data: Any) -> list[Job]:
    """The jobs of this task (or job type) that wait or run and whose data include ``data``
    (each given key present with an equal value; other keys may be there too), oldest first.

    ``conn``: look on this connection (inside its transaction) rather than the App's pool.
    """
    type_, resolved = _resolve(task_or_type, app)
    jobs = resolved._execute(unfinished_jobs(resolved.schema), conn)
    return [job for job in jobs if _matches(job, type_, data)]


def assert_enqueued(task_or_type: Any, app: App | None = None, /, conn: Any = None, **data: Any) -> list[Job]:
    """Fail unless a job of this task (or job type) waits or runs with data including ``data``;
    return the matching jobs (oldest first).

    >>> assert_enqueued(send_welcome_email, user_id=42)
    >>> assert_enqueued("send-welcome-email", pgqueue_app, user_id=42)
    """
    type_, resolved = _resolve(task_or_type, app)
    jobs = resolved._execute(unfinished_jobs(resolved.schema), conn)
    found = [job for job in jobs if _matches(job, type_, data)]
    if not found:
        raise AssertionError(f"expected {_describe(type_, data)} to be enqueued; {_listing(jobs)}")
    return found


def assert_not_enqueued(task_or_type: Any, app: App | None = None, /, conn: Any = None, **data: Any) -> None:
    """Fail if a job of this task (or job type) waits or runs with data including ``data``
    (with no ``data``: any job of it)."""
    type_, resolved = _resolve(task_or_type, app)
    jobs = resolved._execute(unfinished_jobs(resolved.schema), conn)
    found = [job for job in jobs if _matches(job, type_, data)]
    if found:
        raise AssertionError(
            f"expected no {_describe(type_, data)[2:]} to be enqueued, found {len(found)}; {_listing(found)}"
        )
