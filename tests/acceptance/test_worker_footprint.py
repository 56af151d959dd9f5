"""What one ``pgqueue work`` process costs the server: connections, and queries while idle.

Connections, without a pooler: the README's sizing advice rests on this figure: a pool of at most 3 (claims, outcomes,
rescue, prune, xmin watch), 1 listener, 1 heartbeat, and 1 more for the vacuum duty. A sampler
reads ``pg_stat_activity`` every few milliseconds while one worker drains a backlog with its
maintenance running as often as it may, and keeps the peak of each kind of connection (and of
their sum: the figure a server's ``max_connections`` must allow for each worker process).

Idle queries: a fleet of hundreds of workers polling every few seconds must not pay a fixed
query a second each for anything else (the scheduler reads the schedule table once per poll
interval when that is longer than a second).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest

import ledger_app

HERE = Path(__file__).resolve().parent

BUSY = ("--rescue-interval", "0.05", "--prune-interval", "0.1", "--completed-retention", "0",
        "--xmin-warning", "1", "--poll-interval", "0.05")
"""Every pool user as busy as it can be: the pool's peak is then its ceiling."""


class Sampler(threading.Thread):
    """Peak count of the database's ``pgqueue-*`` connections, by application name and in all."""

    def __init__(self, dsn: str) -> None:
        super().__init__(name="connection-sampler", daemon=True)
        self.dsn = dsn
        self.peak: Counter[str] = Counter()
        self.peak_total = 0
        self.samples = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True, application_name="sampler") as conn:
            while not self.stopping.wait(0.005):
                rows = conn.execute(
                    "SELECT application_name, count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name LIKE 'pgqueue-%%' GROUP BY 1"
                ).fetchall()
                now = Counter(dict(rows))
                self.peak |= now
                self.peak_total = max(self.peak_total, sum(now.values()))
                self.samples += 1


def peak_connections(dsn: str, conn: psycopg.Connection[Any], log: Path, *flags: str, jobs: int = 3000) -> Sampler:
    """Run one worker over ``jobs`` jobs with ``flags``; the sampler that watched it."""
    conn.execute(ledger_app.LEDGER_DDL)
    app = ledger_app.pgqueue.App(dsn)
    try:
        app.enqueue_many([("record", {"n": n}, {"queue": "acceptance"}) for n in range(jobs)])
    finally:
        app.close()
    sampler = Sampler(dsn)
    sampler.start()
    env = {**os.environ, "PGQUEUE_DATABASE_URL": dsn, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "pgqueue", "work", "ledger_app:app", "--concurrency", "50", *BUSY, *flags]
    with log.open("wb") as out:  # a file, not a pipe nobody reads while the worker logs
        worker = subprocess.Popen(argv, cwd=HERE, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while conn.execute("SELECT count(*) FROM ledger").fetchone()[0] < jobs:
            if time.monotonic() > deadline or worker.poll() is not None:
                raise AssertionError(f"the worker did not drain its jobs:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        time.sleep(1.0)  # idle: polls, rescues, prunes and heartbeats go on
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, log.read_text()[-3000:]
    finally:
        sampler.stopping.set()
        sampler.join(10)
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    print(f"\nconnections per worker process {' '.join(flags) or '(defaults)'}: peak {sampler.peak_total} "
          f"{dict(sampler.peak)} over {sampler.samples} samples")
    return sampler


@pytest.mark.timeout(120)
def test_a_worker_process_holds_at_most_five_connections(dsn, conn, tmp_path):
    sampler = peak_connections(dsn, conn, tmp_path / "worker.log")
    assert sampler.samples > 100
    assert sampler.peak["pgqueue-listener"] == 1
    assert sampler.peak["pgqueue-heartbeat"] == 1
    assert 1 <= sampler.peak["pgqueue-worker"] <= 3
    # pgqueue-cli: `pgqueue work` checks the schema version on a connection it closes before the worker starts.
    assert set(sampler.peak) <= {"pgqueue-worker", "pgqueue-listener", "pgqueue-heartbeat", "pgqueue-cli"}
    assert 3 <= sampler.peak_total <= 5


@pytest.mark.timeout(120)
def test_without_listen_four_and_with_the_vacuum_duty_one_more(dsn, conn, tmp_path):
    sampler = peak_connections(dsn, conn, tmp_path / "worker.log", "--no-listen", "--vacuum-interval", "1")
    assert sampler.peak["pgqueue-listener"] == 0
    assert sampler.peak["pgqueue-heartbeat"] == 1
    assert sampler.peak["pgqueue-vacuum"] == 1
    assert 1 <= sampler.peak["pgqueue-worker"] <= 3
    assert 3 <= sampler.peak_total <= 5


def table_reads(conn: psycopg.Connection[Any], table: str) -> int:
    return conn.execute(
        "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables "
        "WHERE schemaname = 'pgqueue' AND relname = %s", (table,)
    ).fetchone()[0]


@pytest.mark.timeout(60)
def test_an_idle_worker_polling_every_four_seconds_reads_the_schedules_as_often(dsn, conn, tmp_path):
    before = table_reads(conn, "schedule")
    commits = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").fetchone()[0]
    env = {**os.environ, "PGQUEUE_DATABASE_URL": dsn}
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "pgqueue", "work", "ledger_app:app", "--no-listen", "--poll-interval", "4"],
            cwd=HERE, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        time.sleep(14)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    # A backend's statistics reach the views by the time it has exited; give them a moment.
    time.sleep(1.5)
    conn.execute("SELECT pg_stat_clear_snapshot()")
    reads = table_reads(conn, "schedule") - before
    per_second = (conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
                  .fetchone()[0] - commits) / 14
    print(f"\nidle worker, --poll-interval 4, 14 s: {reads} reads of the schedule table, "
          f"{per_second:.2f} transactions/s in the database")
    # At start, then every 4 s: 4 or 5 (it was one a second: 14 or 15).
    assert 1 <= reads <= 6, reads
