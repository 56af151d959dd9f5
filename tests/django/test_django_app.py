"""The Django app: enqueue joins ``transaction.atomic()`` on Django's connection with no
``conn=``; the App's database comes from ``DATABASES``; the worker runs what was committed."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from django.db import connection, transaction
from djproject.testing import jobs
from shop import tasks

import pgqueue
from pgqueue.contrib.django import app as module_app
from pgqueue.contrib.django.conf import database_url
from pgqueue.contrib.django.djangoapp import DjangoApp


class Rollback(Exception):
    pass


def order(order_id: int) -> None:
    with connection.cursor() as cur:
        cur.execute("INSERT INTO orders (id) VALUES (%s)", [order_id])


@pytest.mark.timeout(30)
def test_the_module_app_is_the_project_app(project: DjangoApp, dsn: str) -> None:
    assert module_app is project
    assert isinstance(project, pgqueue.App)
    info = psycopg.conninfo.conninfo_to_dict(database_url("default"))
    expected = psycopg.conninfo.conninfo_to_dict(dsn)
    assert (info["dbname"], info.get("port"), info.get("user")) == (
        expected["dbname"],
        expected.get("port"),
        expected.get("user"),
    )
    assert "default" in project.queues and "queue-1" in project.queues


@pytest.mark.timeout(30)
def test_rolled_back_transaction_leaves_no_job(project: DjangoApp, conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(Rollback), transaction.atomic():
        order(1)
        job_id = tasks.ship_order.enqueue(order_id=1)
        assert job_id is not None
        assert project.get_job(job_id).state is pgqueue.JobState.CREATED  # seen inside the transaction
        raise Rollback
    assert conn.execute("SELECT count(*) FROM orders").fetchone() == (0,)
    assert jobs(conn) == []


@pytest.mark.timeout(30)
def test_committed_transaction_has_one_job_from_commit_on(
    project: DjangoApp, conn: psycopg.Connection[Any]
) -> None:
    with transaction.atomic():
        order(2)
        job_id = tasks.ship_order.enqueue(order_id=2)
        assert jobs(conn) == []  # not visible to others before the commit
    assert [row[:4] for row in jobs(conn)] == [(job_id, "ship-order", "default", "created")]


@pytest.mark.timeout(30)
def test_nested_atomic_savepoint_rolls_back_its_job_only(
    project: DjangoApp, conn: psycopg.Connection[Any]
) -> None:
    with transaction.atomic():
        kept = tasks.ship_order.enqueue(order_id=3)
        with pytest.raises(Rollback), transaction.atomic():
            tasks.ship_order.enqueue(order_id=4)
            raise Rollback
    assert [row[0] for row in jobs(conn)] == [kept]


@pytest.mark.timeout(30)
def test_outside_a_transaction_the_job_is_committed_at_once(
    project: DjangoApp, conn: psycopg.Connection[Any]
) -> None:
    job_id = tasks.ship_order.enqueue(order_id=5)
    assert [row[0] for row in jobs(conn)] == [job_id]
    assert project.enqueue_many([("ship-order", {"order_id": 6}), ("ship-order", {"order_id": 7})])


@pytest.mark.timeout(30)
def test_bad_data_inside_atomic_leaves_the_transaction_usable(
    project: DjangoApp, conn: psycopg.Connection[Any]
) -> None:
    with transaction.atomic():
        order(8)
        with pytest.raises(pgqueue.InvalidJob):
            tasks.ship_order.enqueue_many([{"order_id": 8}, {"order_id": object()}])
        tasks.ship_order.enqueue(order_id=8)
    assert conn.execute("SELECT count(*) FROM orders").fetchone() == (1,)
    assert len(jobs(conn)) == 1


@pytest.mark.timeout(60)
def test_worker_runs_the_committed_job_with_django_orm(
    project: DjangoApp, conn: psycopg.Connection[Any]
) -> None:
    with transaction.atomic():
        order(9)
        job_id = tasks.ship_order.enqueue(order_id=9)
    assert job_id is not None
    project.run_worker(burst=True, queues=project.queues, poll_interval=0.1)
    job = project.get_job(job_id)
    assert job.state is pgqueue.JobState.COMPLETED and job.output == {"shipped": 9}
    assert conn.execute("SELECT shipped FROM orders WHERE id = 9").fetchone() == (True,)
