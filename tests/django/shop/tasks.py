"""The tests' tasks: pgqueue tasks on the Django app's App, and Django ``@task`` functions run
by pgqueue's task backend (and by django-tasks-db's, for the benchmark)."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django_tasks import TaskContext, task

from pgqueue.contrib.django import app


@app.task("ship-order")
def ship_order(order_id: int) -> dict[str, Any]:
    with connection.cursor() as cur:
        cur.execute("UPDATE orders SET shipped = true WHERE id = %s", [order_id])
    return {"shipped": order_id}


@task()
def noop_task(*args: Any, **kwargs: Any) -> None:
    return None


@task()
async def noop_task_async(*args: Any, **kwargs: Any) -> None:
    return None


@task()
def calculate_meaning_of_life() -> int:
    return 42


@task()
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


@task()
def failing_task_value_error() -> None:
    raise ValueError("This task failed due to ValueError")


@task()
def complex_exception() -> None:
    raise ValueError(ValueError("This task failed"))


@task()
def complex_return_value() -> Any:
    return lambda: True  # neither JSON nor picklable


@task(takes_context=True)
def get_task_id(context: TaskContext) -> str:
    return context.task_result.id


@task(backend="retrying", takes_context=True)
def flaky(context: TaskContext, succeed_on: int) -> int:
    if context.attempt < succeed_on:
        raise RuntimeError(f"attempt {context.attempt} fails")
    return context.attempt


@task(backend="db")
def db_noop_task() -> None:
    return None
