"""The shop's background work: a Django ``@task`` (run by pgqueue's task backend) and a pgqueue
task, both enqueued in the order's own transaction."""

from __future__ import annotations

from typing import Any

from django.db import connection

from pgqueue.contrib.django import app

try:
    from django.tasks import task  # Django 6
except ImportError:  # Django 4.2 to 5.2, with the django-tasks backport
    from django_tasks import task


@task()
def send_receipt(order_id: int) -> str:
    """Django's tasks framework: the return value is what ``get_result`` reports."""
    with connection.cursor() as cur:
        cur.execute("UPDATE shop_order SET receipt_sent = true WHERE id = %s", [order_id])
    return f"receipt for order {order_id} sent"


@app.task("ship-order")
def ship_order(order_id: int) -> dict[str, Any]:
    """A pgqueue task on the project's App: its output is the job's output."""
    with connection.cursor() as cur:
        cur.execute("UPDATE shop_order SET shipped = true WHERE id = %s", [order_id])
    return {"shipped": order_id}
