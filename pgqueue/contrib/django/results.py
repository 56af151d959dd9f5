"""pgqueue jobs as Django ``TaskResult``\\ s: states, errors, attempts and return values.

=============================  ===========================
pgqueue state                  Django ``TaskResultStatus``
=============================  ===========================
``created``, ``retry``         ``READY`` (waiting to run, or to run again)
``active``                     ``RUNNING``
``completed``                  ``SUCCESSFUL``
``failed``, ``cancelled``      ``FAILED``
=============================  ===========================
"""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import SuspiciousOperation
from django.utils.module_loading import import_string

from ...job import Job, JobState
from .tasks_api import Task, TaskError, TaskResult, TaskResultStatus

STATUS = {
    JobState.CREATED: TaskResultStatus.READY,
    JobState.RETRY: TaskResultStatus.READY,
    JobState.ACTIVE: TaskResultStatus.RUNNING,
    JobState.COMPLETED: TaskResultStatus.SUCCESSFUL,
    JobState.FAILED: TaskResultStatus.FAILED,
    JobState.CANCELLED: TaskResultStatus.FAILED,
}

_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*)(?::|$)")


def exception_class_path(error: str) -> str:
    """The dotted path of the exception class a stored error report names (a traceback as
    :func:`traceback.format_exception` writes it, or a message of pgqueue's own)."""
    if error.startswith("timed out after"):
        return "builtins.TimeoutError"
    # The raised exception's line is the first unindented line after the last traceback header.
    lines = error.splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    for line in lines[headers[-1] + 1 :] if headers else lines:
        if line and not line[0].isspace():
            match = _EXCEPTION_LINE.match(line)
            if match:
                name = match.group(1)
                return name if "." in name else f"builtins.{name}"
            break
    return "builtins.Exception"


def resolve_task(path: str, job_id: Any) -> Task[Any, Any]:
    """The Django Task at ``path`` (a ``module.function`` path); ImportError if it is not there."""
    found = import_string(path)
    if not isinstance(found, Task):
        raise SuspiciousOperation(f"Task {job_id} does not point to a Task ({path})")
    return found


def worker_ids(attempts: int, last: str | None) -> list[str]:
    """One entry per attempt (Django counts attempts as ``len(worker_ids)``). pgqueue keeps the
    worker of the latest attempt only; earlier attempts' entries are empty."""
    if attempts <= 0:
        return []
    return [""] * (attempts - 1) + [last or ""]


def task_result(job: Job, backend: str) -> TaskResult[Any]:
    """The Django TaskResult of a job the task backend enqueued."""
    data = job.data
    task = resolve_task(data["task"], job.id).using(
        priority=job.priority,
        queue_name=job.queue,
        run_after=job.run_at if data.get("deferred") else None,
        backend=data.get("backend", backend),
    )
    status = STATUS[job.state]
    result: TaskResult[Any] = TaskResult(
        task=task,
        id=str(job.uid),
        status=status,
        enqueued_at=job.created_at,
        started_at=job.started_at,
        last_attempted_at=job.started_at,
        finished_at=job.finished_at,
        args=data.get("args", []),
        kwargs=data.get("kwargs", {}),
        backend=data.get("backend", backend),
        errors=[
            TaskError(exception_class_path=exception_class_path(error["error"]), traceback=error["error"])
            for error in job.errors
        ],
        worker_ids=worker_ids(job.attempts, job.worker_id),
    )
    if status == TaskResultStatus.SUCCESSFUL:
        object.__setattr__(result, "_return_value", job.output)
    return result
