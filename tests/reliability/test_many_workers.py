"""Scenario 18: hundreds of worker processes against one PostgreSQL, through pgbouncer.

Every worker, its ledger and the producer go through pgbouncer in transaction mode, whose
server pools are 16 connections for the workers and 4 for the producer: PostgreSQL never sees
more than 20 of them however many processes there are, and a sampler of ``pg_stat_activity``
checks that it does not. pgbouncer 1.18 (Debian's) cannot keep prepared statements across
transactions (``max_prepared_statements`` came in 1.21), so they stay off everywhere.

Wake-ups: LISTEN cannot work through transaction pooling, and a direct listener per process
would need as many server connections as processes (200 against ``max_connections`` 100 on a
default server). So the workers poll (``--no-listen``) every ``poll`` seconds. Polls are
spread over the interval, so an idle fleet of N picks a job up after about ``poll / N``
seconds, at the price of N / ``poll`` cheap claims a second on the database: the idle phase
measures both (transactions a second from ``pg_stat_database``, and pick-up latency of jobs
enqueued one at a time). The busy phase enqueues a backlog and measures the claim rate (jobs
started a second) and pick-up latency while it drains. Concurrency varies from 1 to 5 per process.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import psycopg
import pytest

import reliability_app
import roles
import scoreboard
from conftest import running_pgbouncer
from fleet import Fleet, Worker, wait_for

WORKER_POOL = 16
PRODUCER_POOL = 4


class ServerConnections(threading.Thread):
    """Peak number of the worker and producer roles' backends in the test database."""

    def __init__(self, db: Any) -> None:
        super().__init__(name="server-connections", daemon=True)
        # On another database: its queries stay out of the test database's transaction counts.
        self.conn = psycopg.connect(db.cluster.dsn("postgres"), autocommit=True, application_name="sampler")
        self.name_ = db.name
        self.peak = 0
        self.samples = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        with self.conn:
            while not self.stopping.wait(0.05):
                count = self.conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND usename = ANY(%s)",
                    (self.name_, [roles.WORKER, roles.PRODUCER]),
                ).fetchone()[0]
                self.peak = max(self.peak, count)
                self.samples += 1


def pickup(db: Any, ids: list[int]) -> tuple[float, float, float]:
    """Pick-up latency of ``ids`` (run_at to the handler's first ledger row): p50, p95, max seconds."""
    return db.conn.execute(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lat), percentile_cont(0.95) WITHIN GROUP (ORDER BY lat), "
        "max(lat) FROM (SELECT extract(epoch FROM min(l.at) - j.run_at) AS lat FROM pgqueue.job AS j "
        "JOIN ledger AS l ON l.job_id = j.id WHERE j.id = ANY(%s) GROUP BY j.id, j.run_at) AS s", (ids,)
    ).fetchone()


def commits(db: Any) -> int:
    return db.scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")


def run_fleet(db: Any, fleet: Fleet, name: str, processes: int, *, poll: float, stagger: float, backlog: int,
              trickle: int, max_re_executions: int = 0) -> None:
    started = time.monotonic()
    rng = random.Random(18)
    with running_pgbouncer(db, worker_pool=WORKER_POOL, producer_pool=PRODUCER_POOL,
                           max_client_conn=processes * 6 + 50) as bouncer:
        sampler = ServerConnections(db)
        sampler.start()
        producer = reliability_app.make_app(bouncer.url("producer"), prepared_statements=False, pool_size=2)
        env = {"PGQUEUE_PREPARED_STATEMENTS": "false", "RELIABILITY_LEDGER_DSN": bouncer.url("worker")}
        workers: list[Worker] = []
        try:
            for i in range(processes):
                workers.append(fleet.start("--no-listen", "--poll-interval", str(poll),
                                           "--concurrency", str(1 + i % 5), dsn=bouncer.url("worker"), env=env))
                time.sleep(stagger)
            pids = [w.pid for w in workers]
            up = wait_for(lambda: db.scalar("SELECT count(*) FROM pgqueue.worker WHERE pid = ANY(%s)", pids)
                          == processes, 60 + processes * 0.5, f"{processes} workers to register")
            # Idle: the polls' load, then jobs one at a time.
            time.sleep(poll)
            before, at = commits(db), time.monotonic()
            time.sleep(max(4.0, 2 * poll))
            idle_tps = (commits(db) - before) / (time.monotonic() - at)
            idle_ids = []
            for n in range(trickle):
                idle_ids.append(producer.enqueue("work", {"n": n}))
                time.sleep(0.25 + rng.random() * 0.25)
            scoreboard.wait_finished(db.conn, idle_ids, timeout=30)
            # Busy: a backlog of short jobs at once.
            began = time.monotonic()
            busy_ids = producer.enqueue_many([("work", {"n": n, "ms": rng.uniform(0, 50)}) for n in range(backlog)])
            drained = scoreboard.wait_finished(db.conn, busy_ids, timeout=max(120.0, backlog / 10))
            busy_s = time.monotonic() - began
            time.sleep(poll)  # idle again
            rss = [w.rss_kib() / 1024 for w in workers]
            codes = fleet.stop(timeout=60)
        finally:
            producer.close()
            sampler.stopping.set()
            sampler.join(10)
        bouncer_log = bouncer.output()
    logs = fleet.outputs()
    idle_p50, idle_p95, idle_max = pickup(db, idle_ids)
    busy_p50, busy_p95, busy_max = pickup(db, busy_ids)
    busiest = db.scalar("SELECT count(DISTINCT pid) FROM ledger WHERE job_id = ANY(%s)", busy_ids)
    score = scoreboard.measure(
        db.conn, name, idle_ids + busy_ids, started=started, recovery=None, processes=processes,
        poll_s=poll, registered_s=up, idle_db_tps=idle_tps, idle_tps_per_worker=idle_tps / processes, idle_pickup_p50_ms=idle_p50 * 1000,
        idle_pickup_p95_ms=idle_p95 * 1000, idle_pickup_max_ms=idle_max * 1000,
        busy_jobs_per_s=backlog / busy_s, busy_pickup_p50_ms=busy_p50 * 1000,
        busy_pickup_p95_ms=busy_p95 * 1000, workers_that_ran_jobs=busiest,
        rss_mib_mean=sum(rss) / len(rss), rss_mib_max=max(rss),
        server_connections_peak=sampler.peak, samples=sampler.samples,
        rescued_logged=logs.count("whose worker stopped renewing"), fenced_logged=logs.count("outcome discarded"),
    )
    scoreboard.assert_sound(score, max_re_executions=max_re_executions)
    assert drained is not None, score.line()
    assert sampler.samples > 50
    # Everything goes through pgbouncer, no direct listener: its pools bound the server's connections.
    assert sampler.peak <= WORKER_POOL + PRODUCER_POOL, score.line()
    assert idle_max < poll + 1.0, score.line()  # at worst one poll interval, plus slack for a loaded machine
    assert set(codes.values()) == {0}, logs[-5000:]
    # pgbouncer accepted every client: its open-files limit is above max_client_conn.
    assert "Too many open files" not in bouncer_log, bouncer_log[-3000:]
    clashes = [line for line in (logs + bouncer_log).splitlines() if "prepared statement" in line]
    assert not clashes, "\n".join(clashes[:5])


@pytest.mark.timeout(120)
def test_s18_forty_workers_through_pgbouncer(db, fleet):
    run_fleet(db, fleet, "s18 40 workers through pgbouncer", 40, poll=1.0, stagger=0.1, backlog=600, trickle=10)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_s18_two_hundred_workers_through_pgbouncer(db, fleet):
    # Five times the processes, five times the poll interval: the same expected pick-up (about
    # 25 ms when idle) for the same idle load of claims on the database. 200 processes on a
    # machine of two cores starve one another (and the heartbeats): a few leases may expire
    # under a running job, which then runs again (at least once); a few, not many.
    run_fleet(db, fleet, "s18 200 workers through pgbouncer (long)", 200, poll=5.0, stagger=0.3, backlog=3000,
              trickle=40, max_re_executions=60)
