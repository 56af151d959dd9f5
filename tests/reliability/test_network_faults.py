"""The network between a worker and PostgreSQL misbehaves: scenario 5 and its relatives.

The worker connects through :class:`FaultProxy`; producers, the ledger and the test's own
connection go straight to the database, so only the worker sees the fault.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

import roles
import scoreboard
from fault_proxy import FaultProxy, app_is, every
from fleet import FAST_RESCUE, Fleet, wait_for


def start_latency(db: Any, job_id: int) -> float | None:
    """Seconds from the job's insert to its handler's first ledger row (None while it has not run)."""
    return db.scalar("SELECT extract(epoch FROM min(l.at) - j.created_at) FROM pgqueue.job AS j "
                     "JOIN ledger AS l ON l.job_id = j.id WHERE j.id = %s GROUP BY j.created_at", job_id)


def timed_job(db: Any, producer: Any, timeout: float = 15) -> tuple[int, float]:
    job_id = producer.enqueue("work", {"n": 0})
    wait_for(lambda: start_latency(db, job_id) is not None, timeout, f"job {job_id} to start")
    return job_id, float(start_latency(db, job_id))


@pytest.mark.timeout(90)
def test_s05_a_silently_dead_listener_costs_one_poll_interval_and_is_reestablished(db, producer, fleet, proxy):
    started = time.monotonic()
    through_proxy = db.dsn(roles.WORKER, port=proxy.port)
    fleet.start("--concurrency", "4", "--poll-interval", "1", dsn=through_proxy)
    wait_for(lambda: proxy.live(app_is("pgqueue-listener")), 20, "the worker's listener")
    time.sleep(0.5)  # LISTEN has been sent
    ids, before = [], []
    for _ in range(3):
        job_id, latency = timed_job(db, producer)
        ids.append(job_id)
        before.append(latency)
    dead = proxy.blackhole(app_is("pgqueue-listener"))
    assert len(dead) == 1
    silenced = time.monotonic()
    during = []
    reestablished = None
    while time.monotonic() - silenced < 40:
        job_id, latency = timed_job(db, producer)
        ids.append(job_id)
        if reestablished is None:
            during.append(latency)
        fresh = [link for link in proxy.live(app_is("pgqueue-listener")) if link not in dead]
        if fresh and reestablished is None:
            reestablished = time.monotonic() - silenced
            time.sleep(0.5)
        elif reestablished is not None:
            break
        time.sleep(0.3)
    after = [timed_job(db, producer) for _ in range(3)]
    ids += [job_id for job_id, _ in after]
    scoreboard.wait_finished(db.conn, ids, timeout=10)
    codes = fleet.stop()
    score = scoreboard.measure(
        db.conn, "s05 silent listener death", ids, started=started, recovery=reestablished,
        latency_before_s=max(before), latency_during_max_s=max(during, default=0.0),
        latency_after_s=max(latency for _, latency in after),
    )
    scoreboard.assert_sound(score)
    assert reestablished is not None, "the listener was never re-established"
    assert max(before) < 0.5, before  # woken by NOTIFY
    assert max(during) < 1.0 + 0.6, during  # the poll interval, plus slack for a loaded machine
    assert max(latency for _, latency in after) < 0.5, after  # NOTIFY works again
    # health check (5 s idle + 5 s for SELECT 1) + the driver's wait after cancelling + reconnect
    assert reestablished < 25, reestablished
    assert set(codes.values()) == {0}, fleet.outputs()


def run_partition(db: Any, producer: Any, fleet: Fleet, proxy: FaultProxy, name: str, heal: bool) -> None:
    """Cut one worker off the database while it runs jobs, longer than its lease; another worker,
    connected directly, takes its jobs over. With ``heal``, the held bytes then arrive (a
    partition TCP survives); without, its connections stay silent forever (half-open)."""
    started = time.monotonic()
    ids = producer.enqueue_many([("hold", {"first": 3.0, "later": 0.0})] * 6)
    cut_off = fleet.start("--concurrency", "6", *FAST_RESCUE, dsn=db.dsn(roles.WORKER, port=proxy.port))
    wait_for(lambda: db.scalar("SELECT count(*) FROM ledger") == 6, 20, "6 jobs on the worker behind the proxy")
    if heal:
        proxy.stall(every)
    else:
        proxy.blackhole(every)
    partitioned = time.monotonic()
    fleet.start("--concurrency", "6", *FAST_RESCUE)
    wait_for(lambda: db.scalar("SELECT count(*) FROM pgqueue.job WHERE state = 'completed'") == 6, 30,
             "the other worker to take the jobs over")
    takeover = time.monotonic() - partitioned
    time.sleep(max(0.0, 6.0 - (time.monotonic() - partitioned)))
    if heal:
        proxy.resume()
    healed = time.monotonic()
    # The cut-off worker must come back to work: it claims and completes new jobs itself. Jobs
    # keep arriving (the other worker would drain one batch alone before a half-open link is
    # given up), until the cut-off worker has completed one of them.
    more: list[int] = []
    recovery = None
    while time.monotonic() - healed < 40:
        more += producer.enqueue_many([("work", {"n": n, "ms": 200}) for n in range(6)])
        if db.scalar("SELECT count(*) FROM pgqueue.job WHERE id = ANY(%s) AND state = 'completed' "
                     "AND worker_id LIKE %s", more, f"%:{cut_off.pid}:%") > 0:
            recovery = time.monotonic() - partitioned
            break
        time.sleep(0.5)
    scoreboard.wait_finished(db.conn, ids + more, timeout=20)
    codes = fleet.stop(timeout=20)
    score = scoreboard.measure(db.conn, name, ids + more, started=started, recovery=recovery,
                               takeover_s=takeover, cut_for_s=healed - partitioned)
    scoreboard.assert_sound(score, max_re_executions=6)
    outcomes = db.conn.execute("SELECT output->>'pid' FROM pgqueue.job WHERE id = ANY(%s)", (ids,)).fetchall()
    assert all(int(pid) != cut_off.pid for (pid,) in outcomes), "a fenced outcome was recorded"
    assert recovery is not None, (
        f"the worker cut off for {healed - partitioned:.0f} s never worked again:\n{cut_off.output()[-3000:]}"
    )
    assert set(codes.values()) == {0}, fleet.outputs()


@pytest.mark.timeout(150)
def test_s05b_a_partition_that_heals_fences_the_cut_off_worker_then_it_works_again(db, producer, fleet, proxy):
    run_partition(db, producer, fleet, proxy, "s05b partition heals", heal=True)


@pytest.mark.timeout(150)
def test_s05c_half_open_connections_are_abandoned_and_the_worker_reconnects(db, producer, fleet, proxy):
    run_partition(db, producer, fleet, proxy, "s05c half-open connections", heal=False)
