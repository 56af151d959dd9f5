"""Workers killed, stopped and signalled: scenarios 1, 2, 10 and 12."""

from __future__ import annotations

import random
import signal
import time
from typing import Any

import pytest

import scoreboard
from fleet import FAST_RESCUE, Fleet, wait_for
from scoreboard import rescue_delays


def kill_randomly(fleet: Fleet, slots: list[Any], db: Any, job_ids: list[int], every: float,
                  timeout: float) -> dict[int, float]:
    """SIGKILL a random supervised worker every ``every`` seconds (±30 %) until the jobs are done."""
    rng = random.Random(1)
    kills: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(every * rng.uniform(0.7, 1.3))
        left = db.scalar("SELECT count(*) FROM pgqueue.job WHERE id = ANY(%s) "
                         "AND state NOT IN ('completed', 'failed')", job_ids)
        if left < 50:
            break
        victim = rng.choice(slots).current
        if victim.alive() and time.time() - victim.started > 1.0:
            victim.signal(signal.SIGKILL)
            kills[victim.pid] = time.time()
    return kills


def run_kill_scenario(db: Any, producer: Any, fleet: Fleet, name: str, jobs: int, every: float,
                      timeout: float) -> None:
    rng = random.Random(jobs)
    started = time.monotonic()
    ids = producer.enqueue_many([("work", {"n": n, "ms": rng.uniform(100, 400)}) for n in range(jobs)])
    slots = fleet.supervise(3, "--concurrency", "5", *FAST_RESCUE)
    kills = kill_randomly(fleet, slots, db, ids, every, timeout)
    scoreboard.wait_finished(db.conn, ids, timeout=60)
    fleet.stop()
    delays = rescue_delays(db, kills)
    score = scoreboard.measure(
        db.conn, name, ids, started=started, recovery=max(delays, default=None),
        kills=len(kills), rescues=len(delays),
    )
    assert len(kills) >= 3, "the run ended before the scenario could kill enough workers"
    scoreboard.assert_sound(score, max_re_executions=len(kills) * 5 * 3)
    # lease (2 s) + one sweep (0.5 s) + a loaded machine's slack
    assert score.recovery is not None and score.recovery < 6, delays


@pytest.mark.timeout(180)
def test_s01_sigkill_a_random_worker_every_few_seconds(db, producer, fleet):
    run_kill_scenario(db, producer, fleet, "s01 sigkill workers", jobs=1000, every=2.0, timeout=120)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_s01_long_sigkill_a_random_worker_every_few_seconds(db, producer, fleet):
    run_kill_scenario(db, producer, fleet, "s01 sigkill workers (long)", jobs=10_000, every=3.0, timeout=900)


def worker_claims_after(db: Any, worker: Any, after: float) -> int:
    """Jobs the worker claimed after ``after`` (epoch seconds), by its pid in the worker id."""
    return db.scalar(
        "SELECT count(*) FROM pgqueue.job WHERE worker_id LIKE %s AND started_at > to_timestamp(%s)",
        f"%:{worker.pid}:%", after,
    )


def ledger_count(db: Any, ids: list[int]) -> int:
    return db.scalar("SELECT count(*) FROM ledger WHERE job_id = ANY(%s)", ids)


@pytest.mark.timeout(90)
def test_s02_sigterm_drains_then_a_second_signal_hands_jobs_back_at_once(db, producer, fleet):
    started = time.monotonic()
    # Graceful: running jobs finish within the grace; nothing new is claimed after the signal.
    draining = producer.enqueue_many([("hold", {"first": 1.5})] * 30)
    first = fleet.start("--concurrency", "10", "--shutdown-grace", "10")
    wait_for(lambda: ledger_count(db, draining) >= 10, 30, "10 running jobs")
    signalled = time.time()
    first.signal(signal.SIGTERM)
    assert first.wait(15) == 0, first.output()
    drained_in = time.time() - signalled
    assert worker_claims_after(db, first, signalled + 0.05) == 0, "claimed after SIGTERM"
    assert db.scalar("SELECT count(*) FROM pgqueue.job WHERE id = ANY(%s) AND state = 'completed'", draining) == 10
    assert db.scalar("SELECT count(*) FROM pgqueue.job WHERE id = ANY(%s) AND state = 'active'", draining) == 0

    # Hard: a second signal hands running jobs back at once; an idle worker takes them without a rescue wait.
    stuck = producer.enqueue_many([("hold", {"first": 600})] * 5)
    second = fleet.start("--concurrency", "5", "--shutdown-grace", "60")
    wait_for(lambda: ledger_count(db, stuck) == 5, 30, "5 stuck jobs running")
    standby = fleet.start("--concurrency", "40", "--poll-interval", "5", "--lease-seconds", "30")
    time.sleep(1.0)  # the standby is up and listening
    signalled = time.time()
    second.signal(signal.SIGTERM)
    time.sleep(0.3)
    second.signal(signal.SIGINT)
    assert second.wait(10) == 0, second.output()
    stopped_in = time.time() - signalled
    taken_over = wait_for(
        lambda: db.scalar("SELECT count(*) FROM pgqueue.job WHERE id = ANY(%s) AND worker_id LIKE %s",
                          stuck, f"%:{standby.pid}:%") == 5, 10, "the standby to take the jobs back")
    recovery = time.time() - signalled
    ids = draining + stuck
    scoreboard.wait_finished(db.conn, ids, timeout=30)
    codes = fleet.stop()
    score = scoreboard.measure(db.conn, "s02 sigterm + second signal", ids, started=started, recovery=recovery,
                               drained_s=drained_in, hard_stop_s=stopped_in, takeover_s=taken_over)
    scoreboard.assert_sound(score, max_re_executions=5)
    assert set(codes.values()) == {0}, fleet.outputs()
    assert drained_in < 5 and stopped_in < 3
    # Well under a lease (30 s) and a poll (5 s): the hand-back woke the standby.
    assert recovery < 2.5, recovery


def run_stale_worker(db: Any, producer: Any, fleet: Fleet) -> None:
    started = time.monotonic()
    ids = producer.enqueue_many([("hold", {"first": 4.0, "later": 0.0})] * 10)
    stale = fleet.start("--concurrency", "10", *FAST_RESCUE)
    wait_for(lambda: ledger_count(db, ids) == 10, 30, "10 jobs running on the soon-stale worker")
    stale.signal(signal.SIGSTOP)
    stopped = time.time()
    try:
        other = fleet.start("--concurrency", "10", "--lease-seconds", "10", "--rescue-interval", "0.5")
        wait_for(lambda: db.scalar("SELECT count(*) FROM pgqueue.job WHERE id = ANY(%s) AND state = 'completed'",
                                   ids) == 10, 30, "the other worker to finish the stale worker's jobs")
        recovery = time.time() - stopped
        time.sleep(max(0.0, 5.0 - (time.time() - stopped)))  # past the stale handlers' 4 s sleep
    finally:
        stale.signal(signal.SIGCONT)
    before = db.conn.execute("SELECT id, output, finished_at FROM pgqueue.job WHERE id = ANY(%s) ORDER BY id",
                             (ids,)).fetchall()
    wait_for(lambda: "outcome" in stale.output() or "lease" in stale.output(), 15,
             "the stale worker to notice it lost its leases")
    time.sleep(1.5)  # time for any completion it might still (wrongly) record
    after = db.conn.execute("SELECT id, output, finished_at FROM pgqueue.job WHERE id = ANY(%s) ORDER BY id",
                            (ids,)).fetchall()
    assert after == before, "the stale worker overwrote outcomes"
    assert all(row[1]["pid"] == other.pid for row in after)
    # The stale worker is still of use: it takes new jobs.
    more = producer.enqueue_many([("work", {"n": n}) for n in range(20)])
    scoreboard.wait_finished(db.conn, more, timeout=20)
    assert stale.alive()
    codes = fleet.stop()
    score = scoreboard.measure(db.conn, "s10 stale worker (SIGSTOP)", ids + more, started=started,
                               recovery=recovery, stopped_for_s=time.time() - stopped)
    scoreboard.assert_sound(score, max_re_executions=10)
    assert set(codes.values()) == {0}, fleet.outputs()
    assert stale.output().count("lease") >= 1


@pytest.mark.timeout(90)
def test_s10_a_stale_worker_cannot_record_outcomes_after_its_lease_expired(db, producer, fleet):
    run_stale_worker(db, producer, fleet)


@pytest.mark.timeout(120)
def test_s12_a_poison_pill_kills_its_worker_at_most_three_times(db, producer, fleet):
    started = time.monotonic()
    rng = random.Random(12)
    normal = producer.enqueue_many([("work", {"n": n, "ms": rng.uniform(20, 80)}) for n in range(1000)])
    poison = producer.enqueue("poison")
    fleet.supervise(2, "--concurrency", "10", *FAST_RESCUE)
    finished = scoreboard.wait_finished(db.conn, [*normal, poison], timeout=90)
    # A process handler that kills itself takes only its child process: the job fails cleanly.
    in_a_process = producer.enqueue("poison_process")
    scoreboard.wait_finished(db.conn, [in_a_process], timeout=30)
    fleet.stop()
    ids = [*normal, poison, in_a_process]
    crashes = db.scalar("SELECT count(*) FROM ledger WHERE job_id = %s", poison)
    first_crash = db.scalar("SELECT extract(epoch FROM min(at)) FROM ledger WHERE job_id = %s", poison)
    failed_at = db.scalar("SELECT extract(epoch FROM finished_at) FROM pgqueue.job WHERE id = %s", poison)
    score = scoreboard.measure(
        db.conn, "s12 poison pill", ids, started=started,
        recovery=None if failed_at is None else float(failed_at - first_crash),
        worker_crashes=len(fleet.deaths), poison_runs=crashes, finished_s=finished,
    )
    scoreboard.assert_sound(score, max_failed=2, max_re_executions=3 * 10 + 3)
    assert crashes == 3 and len(fleet.deaths) == 3, (crashes, fleet.deaths)
    killed = db.job(poison)
    assert killed.state.value == "failed" and killed.attempts == 3
    assert all("lease expired" in entry["error"] for entry in killed.errors)
    process_job = db.job(in_a_process)
    assert process_job.state.value == "failed" and process_job.attempts == 3
    assert all("killed by signal 9" in entry["error"] for entry in process_job.errors), process_job.errors
    assert db.scalar("SELECT count(*) FROM pgqueue.job WHERE id = ANY(%s) AND state = 'completed'", normal) == 1000
