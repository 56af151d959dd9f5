"""Place orders in Django transactions that enqueue their jobs, run a worker, show the results.

    python -m examples.django_shop

Three orders commit and one rolls back: the committed ones get a receipt (a Django ``@task``)
and a shipment (a pgqueue task), the rolled-back one gets nothing, because each job is written
in the order's own ``transaction.atomic()``.
"""

from __future__ import annotations

import os
import sys

import django


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_shop.settings")
    django.setup()
    from django.core.management import call_command
    from django.db import connection, transaction

    from examples.django_shop.tasks import send_receipt, ship_order

    call_command("pgqueue_migrate")
    with connection.cursor() as cur:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS shop_order (id bigserial PRIMARY KEY, item text NOT NULL, "
            "receipt_sent boolean NOT NULL DEFAULT false, shipped boolean NOT NULL DEFAULT false)"
        )
    receipts = {}
    for item in ("book", "lamp", "kettle", "declined card"):
        try:
            with transaction.atomic():
                with connection.cursor() as cur:
                    cur.execute("INSERT INTO shop_order (item) VALUES (%s) RETURNING id", [item])
                    (order_id,) = cur.fetchone()
                result = send_receipt.enqueue(order_id)  # no conn=: it joins this transaction
                ship_order.enqueue(order_id=order_id)
                if item == "declined card":
                    raise RuntimeError("payment declined")
            receipts[order_id] = result.id
            print(f"order {order_id} ({item}) committed with its two jobs")
        except RuntimeError:
            print(f"order {order_id} ({item}) rolled back: its jobs were never written")

    call_command("pgqueue_work", "--burst")

    for order_id, result_id in receipts.items():
        result = send_receipt.get_result(result_id)
        print(f"order {order_id}: receipt task {result.status}: {result.return_value}")
    with connection.cursor() as cur:
        cur.execute("SELECT id, item, receipt_sent, shipped FROM shop_order ORDER BY id")
        for order_id, item, receipt_sent, shipped in cur.fetchall():
            print(f"order {order_id} ({item}): receipt sent {receipt_sent}, shipped {shipped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
