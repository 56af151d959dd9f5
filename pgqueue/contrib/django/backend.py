"""``pgqueue.contrib.django.TaskBackend``: Django's tasks framework on pgqueue.

>>> TASKS = {"default": {"BACKEND": "pgqueue.contrib.django.TaskBackend", "QUEUES": ["default", "emails"],
...                      "OPTIONS": {"max_attempts": 3, "retry_delay": 5, "timeout": 60}}}

Each enqueued Django task is a pgqueue job of one type, ``django-task``, whose data names the
task's module path, its arguments and the backend; ``manage.py pgqueue_work`` runs them by
importing the task and calling it. The job's uid is the result id (never handed out again, unlike
the job id after a failover); results are also found by the job ids earlier versions gave.
"""

from __future__ import annotations

import json
import threading
import traceback
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from django.utils import timezone

from ...context import current_job
from ...errors import InvalidJob, JobNotFound
from ...job import JobId, JobOptions, validate_name
from .djangoapp import DjangoApp, get_app
from .results import resolve_task, task_result, worker_ids
from .tasks_api import (
    BaseTaskBackend,
    InvalidTaskError,
    Task,
    TaskContext,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    normalize_json,
    task_enqueued,
    task_finished,
    task_started,
)

TASK_TYPE = "django-task"
"""The pgqueue job type of every Django task."""

JOB_OPTIONS = ("max_attempts", "retry_delay", "retry_backoff", "retry_delay_max", "timeout")
"""What ``OPTIONS`` may set, per job: pgqueue's retry and timeout options."""

BIGINT_MAX = 2**63 - 1

_register_lock = threading.Lock()


class TaskBackend(BaseTaskBackend):  # type: ignore[misc]
    """A Django task backend that stores tasks as pgqueue jobs: enqueued in the open transaction
    of Django's connection, run by ``manage.py pgqueue_work``, results read back by id.

    ``OPTIONS`` take pgqueue's job options: ``max_attempts`` (default 1: a task that raises is
    ``FAILED``, as Django defines it; more attempts retry it, and it is ``READY`` in between),
    ``retry_delay``, ``retry_backoff``, ``retry_delay_max`` and ``timeout`` (seconds).
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        unknown = sorted(set(self.options) - set(JOB_OPTIONS))
        if unknown:
            raise InvalidTaskError(f"unknown OPTIONS {unknown} for {alias!r}: use {', '.join(JOB_OPTIONS)}")
        options = {"max_attempts": 1, **self.options}
        try:
            self.job_options = JobOptions.build(**options)
        except InvalidJob as exc:
            raise InvalidTaskError(f"OPTIONS of {alias!r}: {exc}") from None
        self.app = get_app()
        register_runner(self.app)

    def validate_task(self, task: Task[Any, Any]) -> None:
        super().validate_task(task)
        try:
            validate_name("queue", task.queue_name)
        except InvalidJob as exc:
            raise InvalidTaskError(str(exc)) from None

    def _job(self, task: Task[Any, Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        self.validate_task(task)
        return {
            "task": task.module_path,
            # As Django's own backends do: TypeError/ValueError for values JSON cannot carry.
            "args": normalize_json(args),
            "kwargs": normalize_json(kwargs),
            "backend": self.alias,
            "deferred": task.run_after is not None,
        }

    def _options(self, task: Task[Any, Any]) -> dict[str, Any]:
        options = {name: getattr(self.job_options, name) for name in JOB_OPTIONS}
        return {
            **{k: v for k, v in options.items() if v is not None},
            "queue": task.queue_name,
            "priority": task.priority,
            "run_at": task.run_after,
        }

    def _enqueued(self, task: Task[Any, Any], job_id: JobId | None, data: dict[str, Any]) -> TaskResult[Any]:
        assert job_id is not None  # no unique key: every insert returns an id
        return TaskResult(
            task=task,
            id=str(job_id.uid),
            status=TaskResultStatus.READY,
            enqueued_at=timezone.now(),
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=data["args"],
            kwargs=data["kwargs"],
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )

    def enqueue(self, task: Task[Any, Any], args: Any, kwargs: Any) -> TaskResult[Any]:
        """Enqueue ``task``: in the open transaction of Django's connection if there is one."""
        data = self._job(task, args, kwargs)
        result = self._enqueued(task, self.app.enqueue(TASK_TYPE, data, **self._options(task)), data)
        task_enqueued.send(type(self), task_result=result)
        return result

    async def aenqueue(self, task: Task[Any, Any], args: Any, kwargs: Any) -> TaskResult[Any]:
        """Enqueue ``task`` from async code, committed at once on the App's async pool."""
        data = self._job(task, args, kwargs)
        job_id = await self.app.aenqueue(TASK_TYPE, data, **self._options(task))
        result = self._enqueued(task, job_id, data)
        await task_enqueued.asend(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult[Any]:
        """The result with that id; TaskResultDoesNotExist if there is none (or it was pruned)."""
        job_id = _job_id(result_id)
        try:
            job = self.app.get_job(job_id)
        except JobNotFound:
            raise TaskResultDoesNotExist(result_id) from None
        if job.type != TASK_TYPE:
            raise TaskResultDoesNotExist(result_id)
        return task_result(job, self.alias)

    async def aget_result(self, result_id: str) -> TaskResult[Any]:
        job_id = _job_id(result_id)
        try:
            job = await self.app.aget_job(job_id)
        except JobNotFound:
            raise TaskResultDoesNotExist(result_id) from None
        if job.type != TASK_TYPE:
            raise TaskResultDoesNotExist(result_id)
        return task_result(job, self.alias)


def _job_id(result_id: Any) -> int | uuid.UUID:
    """The job a result id names: its uid, or (results from before uids) its id."""
    # Checked here: an id PostgreSQL cannot cast would abort the caller's transaction.
    text = str(result_id)
    if text.isascii() and text.isdigit() and int(text) <= BIGINT_MAX:
        return int(text)
    try:
        return uuid.UUID(text)
    except ValueError:
        raise TaskResultDoesNotExist(result_id) from None


def register_runner(app: DjangoApp) -> None:
    """Register the handler of ``django-task`` jobs on ``app`` (once)."""
    if TASK_TYPE in app.tasks:
        return
    with _register_lock:
        if TASK_TYPE not in app.tasks:
            app.task(TASK_TYPE)(run_django_task)


def run_django_task(
    task: str, args: list[Any], kwargs: dict[str, Any], backend: str, deferred: bool = False
) -> Any:
    """Run one Django task: import it by its module path and call it; its return value, made
    JSON as Django requires, becomes the result's ``return_value``."""
    job = current_job()
    django_task = resolve_task(task, job.id).using(backend=backend, queue_name=job.queue)
    now = timezone.now()
    running: TaskResult[Any] = TaskResult(
        task=django_task,
        id=str(job.uid),
        status=TaskResultStatus.RUNNING,
        enqueued_at=None,
        started_at=now,
        last_attempted_at=now,
        finished_at=None,
        args=args,
        kwargs=kwargs,
        backend=backend,
        errors=[],
        worker_ids=worker_ids(job.attempt, None),
    )
    sender = type(django_task.get_backend())
    task_started.send(sender, task_result=running)
    try:
        if django_task.takes_context:
            value = django_task.call(TaskContext(task_result=running), *args, **kwargs)
        else:
            value = django_task.call(*args, **kwargs)
        value = _json(value)
    except BaseException as exc:
        last = job.attempt >= job.max_attempts
        _finish(running, TaskResultStatus.FAILED if last else TaskResultStatus.READY, exc)
        task_finished.send(sender, task_result=running)
        raise
    _finish(running, TaskResultStatus.SUCCESSFUL, None)
    object.__setattr__(running, "_return_value", value)
    task_finished.send(sender, task_result=running)
    return value


def _finish(result: TaskResult[Any], status: Any, exc: BaseException | None) -> None:
    object.__setattr__(result, "status", status)
    object.__setattr__(result, "finished_at", timezone.now())
    if exc is not None:
        path = f"{type(exc).__module__}.{type(exc).__qualname__}"
        text = "".join(traceback.format_exception(exc))
        result.errors.append(TaskError(exception_class_path=path, traceback=text))


def _json(value: Any) -> Any:
    """``value`` as JSON gives it back, or the TypeError Django's backends raise for it."""
    try:
        return json.loads(json.dumps(normalize_json(value)))
    except (TypeError, ValueError):
        json.dumps(value)  # raises "Object of type X is not JSON serializable"
        raise
