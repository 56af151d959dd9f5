"""Scenario 6: producers and workers behind pgbouncer in transaction mode."""

from __future__ import annotations

import threading
import time

import pytest

import reliability_app
import roles
import scoreboard
from fleet import wait_for


@pytest.mark.timeout(120)
def test_s06_behind_pgbouncer_in_transaction_mode_nothing_is_lost(db, fleet, pgbouncer):
    started = time.monotonic()
    bouncer = f"postgresql://{{user}}@127.0.0.1:{pgbouncer.port}/{{db}}?sslmode=disable&connect_timeout=5"
    # Prepared statements off: a prepared statement lives on one server connection, and
    # transaction pooling hands the client another at its next transaction (pgbouncer < 1.21).
    producer = reliability_app.make_app(bouncer.format(user=roles.PRODUCER, db="producer"),
                                        prepared_statements=False)
    errors: list[str] = []
    ids: list[int] = []

    def enqueue_singly(first: int) -> None:
        for n in range(first, first + 50):
            try:
                ids.append(producer.enqueue("work", {"n": n, "ms": 5}))
            except Exception as exc:  # noqa: BLE001 - counted and shown
                errors.append(f"{type(exc).__name__}: {exc}")

    try:
        # Single enqueues from four threads repeat one statement on pooled connections (the
        # driver would prepare it after a few runs).
        threads = [threading.Thread(target=enqueue_singly, args=(50 * t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for batch in range(10):
            try:
                ids += producer.enqueue_many([("work", {"n": 1000 * batch + n}) for n in range(100)])
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        producer.close()
    worker_dsn = bouncer.format(user=roles.WORKER, db="worker")
    for _ in range(2):
        fleet.start("--concurrency", "8", "--log-level", "info", dsn=worker_dsn,
                    env={"PGQUEUE_PREPARED_STATEMENTS": "false"})
    finished = scoreboard.wait_finished(db.conn, ids, timeout=60)
    # LISTEN cannot work through transaction pooling: each worker must find out and say so.
    try:
        noticed = wait_for(lambda: all("pooler" in w.output() for w in fleet.workers), 40,
                           "the workers to warn that LISTEN does not work here")
    except AssertionError:
        noticed = None
    codes = fleet.stop()
    logs = fleet.outputs()
    score = scoreboard.measure(db.conn, "s06 pgbouncer transaction mode", ids, started=started,
                               recovery=noticed, enqueue_errors=len(errors), drained_s=finished,
                               prepared_statement_errors=logs.count("prepared statement"))
    scoreboard.assert_sound(score)
    assert not errors, errors[:5]
    assert len(ids) == 1200
    assert set(codes.values()) == {0}, logs
    clashes = [line for line in logs.splitlines() if "prepared statement" in line]
    assert not clashes, "\n".join(clashes[:5])
    assert noticed is not None, logs[-3000:]
