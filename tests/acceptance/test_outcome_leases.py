"""A finished job whose outcome cannot be recorded for a while keeps its lease.

Between a handler's end and the statement that records its outcome, the job is still the
worker's: when that statement waits (behind a lock, in a pooler's queue, through a few failed
exchanges) longer than what is left of the lease, the heartbeat renews it, so the job is not
rescued and run again. Here a transaction locks the queue settings table, which every claim
and outcome statement reads, while the heartbeat (which does not read it) goes on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

import ledger_app

HERE = Path(__file__).resolve().parent


@pytest.mark.timeout(90)
def test_an_outcome_held_up_longer_than_the_lease_is_recorded_and_the_job_runs_once(dsn, conn, app, tmp_path):
    conn.execute(ledger_app.LEDGER_DDL)
    job_id = app.enqueue("hold", {"first_attempt_sleep": 1.0}, queue="acceptance")
    log = tmp_path / "worker.log"
    env = {**os.environ, "PGQUEUE_DATABASE_URL": dsn, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "pgqueue", "work", "ledger_app:app", "--lease-seconds", "2",
            "--rescue-interval", "0.2", "--poll-interval", "0.2", "--log-level", "info"]
    with log.open("wb") as out:
        worker = subprocess.Popen(argv, cwd=HERE, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while conn.execute("SELECT count(*) FROM ledger").fetchone()[0] == 0:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        with psycopg.connect(dsn) as blocker:
            blocker.execute("LOCK TABLE pgqueue.queue IN ACCESS EXCLUSIVE MODE")
            # The handler ends after 1 s; its outcome then waits 6 s, three leases, while the
            # worker's rescuer (which does not read the locked table) sweeps every 0.2 s.
            time.sleep(7)
            state = conn.execute("SELECT state::text FROM pgqueue.job WHERE id = %s", (job_id,)).fetchone()[0]
            blocker.rollback()
        deadline = time.monotonic() + 20
        while conn.execute("SELECT state::text FROM pgqueue.job WHERE id = %s", (job_id,)).fetchone()[0] != "completed":
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        time.sleep(1.0)  # a rescued job would run again by now
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    output = log.read_text()
    assert state == "active", f"the finished job was {state} while its outcome waited\n{output[-3000:]}"
    attempts, errors = conn.execute("SELECT attempts, errors FROM pgqueue.job WHERE id = %s", (job_id,)).fetchone()
    assert attempts == 1 and not errors, (attempts, errors)
    assert conn.execute("SELECT count(*) FROM ledger WHERE job_id = %s", (job_id,)).fetchone()[0] == 1
    assert "outcome discarded" not in output, output[-3000:]
