"""Scenario 11: handlers that never return, and handler processes outliving their worker."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

import scoreboard
from fleet import FAST_RESCUE, wait_for

HUNG = ["hang_sleep", "hang_deaf", "hang_socket", "hang_process"]


@pytest.mark.timeout(120)
def test_s11_hung_handlers_time_out_and_other_jobs_keep_flowing(db, producer, fleet):
    started = time.monotonic()
    hung = {name: producer.enqueue(name) for name in HUNG}
    rng = random.Random(11)
    normal = producer.enqueue_many([("work", {"n": n, "ms": rng.uniform(20, 50)}) for n in range(300)])
    worker = fleet.start("--concurrency", "6", "--shutdown-grace", "2")
    ids = [*hung.values(), *normal]
    scoreboard.wait_finished(db.conn, ids, timeout=60)
    # From each attempt's start (its ledger row) to its failure being recorded.
    overruns, never_ran = {}, []
    for name, job_id in hung.items():
        starts = dict(db.conn.execute(
            "SELECT attempt, extract(epoch FROM min(at)) FROM ledger WHERE job_id = %s GROUP BY attempt", (job_id,)
        ).fetchall())
        job = db.job(job_id)
        assert job.state.value == "failed" and job.attempts == 2, (name, job.state, job.errors)
        assert all("timed out after 2 s" in entry["error"] for entry in job.errors), (name, job.errors)
        never_ran += [f"{name} attempt {e['attempt']}" for e in job.errors if e["attempt"] not in starts]
        overruns[name] = max(
            (entry_at(e) - float(starts[e["attempt"]]) for e in job.errors if e["attempt"] in starts), default=0.0
        )
    during = db.scalar(
        "SELECT count(*) FROM pgqueue.job WHERE id = ANY(%s) AND state = 'completed' AND finished_at < "
        "(SELECT max(finished_at) FROM pgqueue.job WHERE id = ANY(%s))", normal, list(hung.values()))
    signalled = time.monotonic()
    worker.signal(signal.SIGTERM)
    try:
        code = worker.wait(15)
    except Exception:  # noqa: BLE001 - reported below
        code = None
    stopped_in = time.monotonic() - signalled
    score = scoreboard.measure(db.conn, "s11 hung handlers", ids, started=started, recovery=max(overruns.values()),
                               completed_while_hung=during, stop_s=stopped_in,
                               **{f"{name}_s": value for name, value in overruns.items()})
    scoreboard.assert_sound(score, max_failed=len(HUNG))
    problems = []
    if max(overruns.values()) >= 3.5:  # 2 s timeout, 1 s grace for cancellation, recording
        problems.append(f"hung attempts took too long to fail: {overruns}")
    if never_ran:
        # It waited behind a hung thread, and would run later, after its job was failed or retried.
        problems.append(f"attempts recorded as timed out that never started: {never_ran}")
    if during < 100:
        problems.append("other jobs stalled while the hung handlers held their slots")
    if code != 0:
        # An abandoned handler (one ignores cancellation forever) must not keep the worker from exiting.
        problems.append(f"the worker did not exit 0 within 15 s of SIGTERM ({code}): {worker.output()[-1500:]}")
    assert not problems, "\n".join(problems)


@pytest.mark.timeout(60)
def test_s11c_sync_handlers_run_side_by_side(db, producer, fleet):
    """Eight one-second sync handlers with eight slots take about one second, not several."""
    started = time.monotonic()
    ids = producer.enqueue_many([("nap_thread", {"seconds": 1.0})] * 8)
    fleet.start("--concurrency", "8")
    scoreboard.wait_finished(db.conn, ids, timeout=30)
    span = db.scalar("SELECT extract(epoch FROM max(finished_at) - min(started_at)) FROM pgqueue.job "
                     "WHERE id = ANY(%s)", ids)
    start_spread = db.scalar("SELECT extract(epoch FROM max(l.at) - min(l.at)) FROM ledger AS l "
                             "WHERE l.job_id = ANY(%s)", ids)
    codes = fleet.stop()
    score = scoreboard.measure(db.conn, "s11c sync handlers in parallel", ids, started=started, recovery=None,
                               span_s=float(span), handler_start_spread_s=float(start_spread))
    scoreboard.assert_sound(score)
    assert set(codes.values()) == {0}
    assert start_spread < 0.5, f"sync handlers waited for each other: starts spread over {start_spread:.2f} s"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.timeout(60)
def test_s11b_a_killed_worker_leaves_no_handler_process_running(db, producer, fleet):
    started = time.monotonic()
    job_id = producer.enqueue("nap_process", {"seconds": 30})
    worker = fleet.start("--concurrency", "2", *FAST_RESCUE)
    wait_for(lambda: db.scalar("SELECT count(*) FROM ledger WHERE job_id = %s", job_id) == 1, 30,
             "the process handler to start")
    child = db.scalar("SELECT pid FROM ledger WHERE job_id = %s", job_id)
    assert child != worker.pid
    worker.signal(signal.SIGKILL)
    worker.wait(10)
    killed = time.monotonic()
    try:
        gone_in = wait_for(lambda: not alive(child), 5, "the orphaned handler process to end")
    except AssertionError:
        gone_in = None
    orphan_alive = alive(child)
    if orphan_alive:
        os.kill(child, signal.SIGKILL)  # do not leave it behind the test
    score = scoreboard.measure(db.conn, "s11b orphaned process handler", [], started=started,
                               recovery=gone_in, orphan_outlived_worker_s=round(time.monotonic() - killed, 1))
    scoreboard.assert_sound(score)
    assert not orphan_alive, (
        f"handler process {child} kept running after its worker was killed: the job will run twice at once"
    )


def entry_at(entry: dict) -> float:
    from datetime import datetime

    return datetime.fromisoformat(entry["at"]).timestamp()
