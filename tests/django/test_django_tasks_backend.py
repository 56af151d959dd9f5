"""pgqueue's backend for Django's tasks framework, held to the contract django-tasks' own database
backend is tested for (django-tasks-db's ``tests/tests.py``, ported to a real pgqueue worker):
enqueue and its validation, results by id, refresh, failures, retries, async."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from django.db import transaction
from django.utils import timezone
from django_tasks import TaskResultStatus, default_task_backend, task, task_backends
from django_tasks.exceptions import InvalidTaskError, TaskResultDoesNotExist
from django_tasks.signals import task_enqueued
from djproject.testing import jobs
from shop import tasks

import pgqueue
from pgqueue.contrib.django import TaskBackend
from pgqueue.contrib.django.backend import TASK_TYPE
from pgqueue.contrib.django.djangoapp import DjangoApp
from pgqueue.contrib.django.results import exception_class_path


def work(app: DjangoApp, rounds: int = 1) -> None:
    # A burst worker exits when nothing is runnable at its last claim; a retry that the same
    # round trip scheduled is only seen by the next worker.
    for _ in range(rounds):
        app.run_worker(burst=True, queues=app.queues, poll_interval=0.1)


@pytest.fixture
def enqueued_signals() -> Any:
    received: list[tuple[Any, Any]] = []

    def capture(sender: Any, task_result: Any, **kwargs: Any) -> None:
        received.append((sender, task_result))

    task_enqueued.connect(capture, dispatch_uid="test-capture", weak=False)
    yield received
    task_enqueued.disconnect(capture, dispatch_uid="test-capture")


@pytest.mark.timeout(30)
def test_capabilities() -> None:
    backend = task_backends["default"]
    assert isinstance(backend, TaskBackend)
    assert backend.supports_defer and backend.supports_async_task
    assert backend.supports_get_result and backend.supports_priority
    assert list(backend.check()) == []


@pytest.mark.timeout(30)
def test_enqueue_task(project: DjangoApp, conn: psycopg.Connection[Any], enqueued_signals: Any) -> None:
    for django_task in (tasks.noop_task, tasks.noop_task_async):
        result = django_task.enqueue(1, two=3)
        assert result.status == TaskResultStatus.READY
        assert not result.is_finished
        assert result.started_at is None and result.last_attempted_at is None and result.finished_at is None
        with pytest.raises(ValueError, match="Task has not finished yet"):
            result.return_value  # noqa: B018
        assert result.task == django_task
        assert result.args == [1] and result.kwargs == {"two": 3}
        assert result.attempts == 0
        assert enqueued_signals[-1] == (TaskBackend, result)
    rows = jobs(conn)
    assert [(r[1], r[3]) for r in rows] == [(TASK_TYPE, "created")] * 2
    assert rows[0][5]["task"] == "shop.tasks.noop_task"


@pytest.mark.timeout(30)
async def test_aenqueue_from_async_code(aproject: DjangoApp, enqueued_signals: Any) -> None:
    for django_task in (tasks.noop_task, tasks.noop_task_async):
        result = await django_task.aenqueue()
        assert result.status == TaskResultStatus.READY and result.args == [] and result.kwargs == {}
        assert enqueued_signals[-1] == (TaskBackend, result)
        fetched = await default_task_backend.aget_result(result.id)
        assert fetched.id == result.id and fetched.status == TaskResultStatus.READY
        assert fetched.task == django_task


@pytest.mark.timeout(30)
def test_get_result_and_missing_results(project: DjangoApp, conn: psycopg.Connection[Any]) -> None:
    result = default_task_backend.enqueue(tasks.noop_task, [], {})
    fetched = default_task_backend.get_result(result.id)
    assert (fetched.id, fetched.status, fetched.task, fetched.args) == (
        result.id,
        result.status,
        result.task,
        [],
    )
    assert fetched.enqueued_at is not None
    # The result id is the job's uid; the job id (what earlier versions gave) finds it too.
    [(job_id,)] = conn.execute("SELECT id FROM pgqueue.job WHERE uid = %s", (result.id,)).fetchall()
    assert default_task_backend.get_result(str(job_id)).id == result.id
    for missing in (str(uuid.uuid4()), "123abc", "999999", "", "-1", "1" * 40, str(2**63), "١٢"):
        with pytest.raises(TaskResultDoesNotExist):
            default_task_backend.get_result(missing)
    not_a_django_task = project.enqueue("ship-order", {"order_id": 1})
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(str(not_a_django_task))
    with transaction.atomic():  # a bad id never aborts the transaction it is looked up in
        with pytest.raises(TaskResultDoesNotExist):
            default_task_backend.get_result(str(2**63))
        assert default_task_backend.get_result(result.id).id == result.id


@pytest.mark.timeout(30)
async def test_aget_missing_result(aproject: DjangoApp) -> None:
    with pytest.raises(TaskResultDoesNotExist):
        await default_task_backend.aget_result("123")


@pytest.mark.timeout(30)
def test_validation_on_enqueue(project: DjangoApp) -> None:
    with pytest.raises(InvalidTaskError, match="Queue 'unknown_queue' is not valid for backend"):
        tasks.noop_task.using(queue_name="unknown_queue")
    for priority in (-101, 101, 1.5):
        with pytest.raises(InvalidTaskError, match="priority must be a whole number between -100 and 100"):
            tasks.noop_task.using(priority=priority)  # type: ignore[arg-type]
    with pytest.raises(InvalidTaskError, match="run_after must be an aware datetime"):
        tasks.noop_task.using(run_after=timezone.now().replace(tzinfo=None))

    def local() -> None: ...

    with pytest.raises(InvalidTaskError, match="module level"):
        task()(local)
    # Arguments go through JSON, with Django's own errors for what it cannot carry.
    with pytest.raises(TypeError, match="Unsupported type"):
        tasks.noop_task.enqueue(object())
    with pytest.raises(TypeError):
        tasks.noop_task.enqueue(when=timezone.now())
    result = tasks.echo.enqueue((1, 2), b"bytes", key={"n": (3,)})
    assert result.args == [[1, 2], "bytes"] and result.kwargs == {"key": {"n": [3]}}


@pytest.mark.timeout(30)
def test_invalid_options_are_refused() -> None:
    with pytest.raises(InvalidTaskError, match="unknown OPTIONS"):
        TaskBackend("x", {"OPTIONS": {"id_function": "uuid.uuid4"}})
    with pytest.raises(InvalidTaskError, match="max_attempts"):
        TaskBackend("x", {"OPTIONS": {"max_attempts": 0}})


@pytest.mark.timeout(60)
def test_run_enqueued_task_and_refresh(project: DjangoApp) -> None:
    result = tasks.calculate_meaning_of_life.enqueue()
    context = tasks.get_task_id.enqueue()
    async_one = tasks.noop_task_async.enqueue()
    work(project)
    assert result.status == TaskResultStatus.READY  # a result is a snapshot until refreshed
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.is_finished
    assert result.return_value == 42 and result.attempts == 1 and result.errors == []
    assert result.started_at is not None and result.enqueued_at is not None and result.finished_at is not None
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert result.last_attempted_at == result.started_at
    assert tasks.get_task_id.get_result(context.id).return_value == context.id
    assert default_task_backend.get_result(async_one.id).status == TaskResultStatus.SUCCESSFUL


@pytest.mark.timeout(60)
def test_failing_task(project: DjangoApp) -> None:
    failing = tasks.failing_task_value_error.enqueue()
    complex_error = tasks.complex_exception.enqueue()
    complex_value = tasks.complex_return_value.enqueue()
    work(project)
    failing.refresh()
    assert failing.status == TaskResultStatus.FAILED and failing.attempts == 1
    with pytest.raises(ValueError, match="Task failed"):
        failing.return_value  # noqa: B018
    assert failing.errors[0].exception_class is ValueError
    assert failing.errors[0].traceback.endswith("ValueError: This task failed due to ValueError\n")
    assert failing.finished_at is not None and failing.started_at is not None
    complex_error.refresh()
    assert complex_error.errors[0].exception_class is ValueError
    assert "ValueError(ValueError('This task failed'))" in complex_error.errors[0].traceback or (
        "ValueError: This task failed" in complex_error.errors[0].traceback
    )
    complex_value.refresh()
    assert complex_value.status == TaskResultStatus.FAILED
    assert complex_value.errors[0].exception_class is TypeError
    assert "is not JSON serializable" in complex_value.errors[0].traceback


@pytest.mark.timeout(60)
def test_retries_are_visible(project: DjangoApp) -> None:
    """With max_attempts in OPTIONS a failing task runs again: READY between attempts, one error
    per failed attempt, and the attempt count from TaskContext."""
    succeeds = tasks.flaky.enqueue(succeed_on=2)
    fails = tasks.flaky.enqueue(succeed_on=9)
    work(project, rounds=3)
    succeeds.refresh()
    assert succeeds.status == TaskResultStatus.SUCCESSFUL and succeeds.return_value == 2
    assert succeeds.attempts == 2 and len(succeeds.errors) == 1
    assert (
        succeeds.errors[0].exception_class is RuntimeError
        and "attempt 1 fails" in succeeds.errors[0].traceback
    )
    fails.refresh()
    assert fails.status == TaskResultStatus.FAILED and fails.attempts == 3
    assert [e.exception_class for e in fails.errors] == [RuntimeError] * 3


@pytest.mark.timeout(60)
def test_run_after_and_priority_order(project: DjangoApp, conn: psycopg.Connection[Any]) -> None:
    later = tasks.noop_task.using(run_after=timezone.now() + timedelta(hours=10)).enqueue()
    low = tasks.noop_task.using(priority=-2).enqueue()
    high = tasks.noop_task.using(priority=10).enqueue()
    other_queue = tasks.noop_task.using(queue_name="queue-1", priority=100).enqueue()
    fetched = default_task_backend.get_result(later.id)
    assert fetched.task.run_after is not None and fetched.status == TaskResultStatus.READY
    assert default_task_backend.get_result(low.id).task.run_after is None
    assert default_task_backend.get_result(other_queue.id).task.queue_name == "queue-1"
    project.run_worker(burst=True, queues=["default", "queue-1"], concurrency=1, poll_interval=0.1)
    # Jobs claimed together (a worker claims ahead what its running jobs will free) share their
    # started_at; the worker starts them in priority order.
    order = conn.execute(
        "SELECT uid FROM pgqueue.job WHERE state = 'completed' ORDER BY started_at, priority DESC, id"
    ).fetchall()
    assert [str(row[0]) for row in order] == [other_queue.id, high.id, low.id]
    assert default_task_backend.get_result(later.id).status == TaskResultStatus.READY


@pytest.mark.timeout(30)
def test_enqueue_joins_the_transaction(project: DjangoApp, conn: psycopg.Connection[Any]) -> None:
    """Unlike django-tasks-db's backend (which, its tests say, "doesn't wait until transaction
    commit" yet is rolled back with it), the job is the transaction's: seen inside it, and by
    others only after its commit."""
    with transaction.atomic():
        result = tasks.noop_task.enqueue()
        assert default_task_backend.get_result(result.id).status == TaskResultStatus.READY
        assert jobs(conn) == []
    assert len(jobs(conn)) == 1
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        rolled_back = tasks.noop_task.enqueue()
        1 / 0  # noqa: B018
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(rolled_back.id)


@pytest.mark.timeout(30)
def test_exception_class_path_of_stored_errors() -> None:
    def text(exc: BaseException) -> str:
        try:
            raise exc
        except BaseException as raised:
            return pgqueue.codec.error_text(raised)

    assert exception_class_path(text(ValueError("a\nTraceback: b\nc"))) == "builtins.ValueError"
    assert exception_class_path(text(InvalidTaskError("x"))) == "django_tasks.exceptions.InvalidTaskError"
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise RuntimeError("outer") from inner
    except RuntimeError as outer:
        assert exception_class_path(pgqueue.codec.error_text(outer)) == "builtins.RuntimeError"
    assert exception_class_path("timed out after 5 s") == "builtins.TimeoutError"
    assert exception_class_path("the handler's process died") == "builtins.Exception"
