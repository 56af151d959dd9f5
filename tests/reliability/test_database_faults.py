"""The database goes away under the workers: scenarios 3 (restarts) and 4 (terminated backends)."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import psycopg
import pytest

import scoreboard
from fleet import Fleet, wait_for


def completed_since(db: Any, since: float) -> int:
    return db.scalar("SELECT count(*) FROM pgqueue.job WHERE state = 'completed' AND finished_at > to_timestamp(%s)",
                     since)


def run_restarts(db: Any, producer: Any, fleet: Fleet, name: str, jobs: int, modes: list[str]) -> None:
    rng = random.Random(3)
    started = time.monotonic()
    ids = producer.enqueue_many([("work", {"n": n, "ms": rng.uniform(30, 90)}) for n in range(jobs)])
    producer.close()  # its pool would only be broken by the restarts
    for _ in range(4):
        fleet.start("--concurrency", "8", "--lease-seconds", "5", "--rescue-interval", "1")
    recoveries, downtimes = [], []
    for mode in modes:
        wait_for(lambda: completed_since(db, time.time() - 1.5) > 100, 60, "jobs flowing before the restart")
        downtimes.append(db.cluster.restart(mode, down_for=0.5))
        up = time.time()
        db.reconnect()
        recoveries.append(wait_for(lambda: completed_since(db, up) > 0, 60, f"work to resume after a {mode} restart"))
    scoreboard.wait_finished(db.conn, ids, timeout=120)
    codes = fleet.stop()
    score = scoreboard.measure(db.conn, name, ids, started=started, recovery=max(recoveries),
                               restarts=",".join(modes), down_s=max(downtimes),
                               recoveries_s=",".join(f"{r:.2f}" for r in recoveries))
    scoreboard.assert_sound(score, max_re_executions=len(modes) * 4 * 8 * 2)
    assert set(codes.values()) == {0}, fleet.outputs()
    assert max(recoveries) < 10, recoveries


@pytest.mark.timeout(180)
def test_s03_postgresql_restarts_immediate_and_fast_during_a_run(db, producer, fleet):
    run_restarts(db, producer, fleet, "s03 postgres restarts", 4000, ["immediate", "fast"])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_s03_long_postgresql_restarts_during_a_ten_thousand_job_run(db, producer, fleet):
    run_restarts(db, producer, fleet, "s03 postgres restarts (long)", 10_000,
                 ["immediate", "fast", "immediate", "fast"])


TERMINATE = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE datname = current_database() AND application_name LIKE 'pgqueue%%' AND pid <> pg_backend_pid()"
)


class Producer(threading.Thread):
    """Enqueues numbered batches until stopped; a batch that raised is enqueued again."""

    def __init__(self, app: Any, batch: int = 20, pause: float = 0.1) -> None:
        super().__init__(name="producer", daemon=True)
        self.app, self.batch, self.pause = app, batch, pause
        self.acknowledged: dict[int, int] = {}
        self.errors: list[str] = []
        self.stopping = threading.Event()
        self.next = 0

    def run(self) -> None:
        while not self.stopping.is_set():
            numbers = list(range(self.next, self.next + self.batch))
            try:
                ids = self.app.enqueue_many([("work", {"n": n, "ms": 20}) for n in numbers])
            except psycopg.Error as exc:
                self.errors.append(type(exc).__name__)
                time.sleep(0.05)
                continue
            self.acknowledged.update(zip(numbers, ids))
            self.next += self.batch
            time.sleep(self.pause)


def run_terminations(db: Any, producer: Any, fleet: Fleet, name: str, seconds: float) -> None:
    started = time.monotonic()
    fleet.start("--concurrency", "8", "--lease-seconds", "3", "--rescue-interval", "0.5")
    fleet.start("--concurrency", "8", "--lease-seconds", "3", "--rescue-interval", "0.5")
    # Once both are up: the start-up check's short-lived connection ('pgqueue-cli') is not the point.
    wait_for(lambda: db.scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                               "AND application_name = 'pgqueue-listener'") == 2, 30, "both workers listening")
    feeder = Producer(producer)
    feeder.start()
    rng = random.Random(4)
    terminated = rounds = 0
    listeners_hit = 0
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        time.sleep(rng.uniform(0.3, 1.0))
        listeners_hit += db.scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                   "AND application_name = 'pgqueue-listener'")
        terminated += db.scalar(TERMINATE)
        rounds += 1
    last = time.time()
    feeder.stopping.set()
    feeder.join(30)
    recovery = wait_for(
        lambda: db.scalar("SELECT count(DISTINCT application_name) FROM pg_stat_activity WHERE datname = "
                          "current_database() AND application_name IN "
                          "('pgqueue-worker', 'pgqueue-heartbeat', 'pgqueue-listener')") == 3
        and db.scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                      "AND application_name = 'pgqueue-listener'") == 2,
        30, "every worker to have its connections back",
    )
    ids = [row[0] for row in db.conn.execute("SELECT id FROM pgqueue.job ORDER BY id")]
    scoreboard.wait_finished(db.conn, ids, timeout=60)
    after_churn = time.time() - last
    codes = fleet.stop()
    numbers = [row[0] for row in db.conn.execute("SELECT (data->>'n')::int FROM pgqueue.job")]
    duplicates = len(numbers) - len(set(numbers))
    missing = [n for n, job_id in feeder.acknowledged.items() if job_id not in set(ids)]
    score = scoreboard.measure(db.conn, name, ids, started=started, recovery=recovery, rounds=rounds,
                               backends_terminated=terminated, listeners_terminated=listeners_hit,
                               enqueue_errors=len(feeder.errors), duplicate_enqueues=duplicates,
                               drained_after_s=after_churn)
    scoreboard.assert_sound(score)
    assert not missing, f"acknowledged enqueues missing from the table: {missing[:10]}"
    assert listeners_hit >= rounds, "the listener was not there to be terminated each round"
    assert set(codes.values()) == {0}, fleet.outputs()


@pytest.mark.timeout(120)
def test_s04_terminating_every_pgqueue_backend_repeatedly(db, producer, fleet):
    run_terminations(db, producer, fleet, "s04 terminate backends", seconds=15)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_s04_long_terminating_every_pgqueue_backend_for_a_minute(db, producer, fleet):
    run_terminations(db, producer, fleet, "s04 terminate backends (long)", seconds=60)
