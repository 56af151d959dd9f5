"""Real `pgqueue work` processes, real signals, real crashes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import ledger_app
from processes import wait_for, worker_processes

HERE = Path(__file__).resolve().parent


@pytest.fixture
def ledger(dsn: str, conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute(ledger_app.LEDGER_DDL)
    return conn


@pytest.fixture
def workers(dsn: str) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    yield from worker_processes(dsn, "ledger_app:app", "--poll-interval", "0.2")


def scalar(conn: psycopg.Connection[Any], query: str, *params: Any) -> Any:
    return conn.execute(query, params).fetchone()[0]


@pytest.mark.timeout(240)
def test_ten_thousand_jobs_over_four_processes_each_complete_exactly_once(app, ledger, workers):
    # The producer needs no handler code: it enqueues by type name.
    job_ids = app.enqueue_many([("record", {"n": n}, {"queue": "acceptance"}) for n in range(10_000)])
    assert len(set(job_ids)) == 10_000
    supervisor = workers("--processes", "4", "--burst", "--concurrency", "20", "--log-level", "warning")
    output, _ = supervisor.communicate(timeout=200)
    assert supervisor.returncode == 0, output
    assert dict(ledger.execute("SELECT state::text, count(*) FROM pgqueue.job GROUP BY 1").fetchall()) == {
        "completed": 10_000
    }
    assert scalar(ledger, "SELECT count(*) FROM ledger") == 10_000
    assert scalar(ledger, "SELECT count(DISTINCT job_id) FROM ledger") == 10_000
    assert scalar(ledger, "SELECT count(*) FROM pgqueue.job WHERE attempts <> 1") == 0
    assert scalar(ledger, "SELECT count(DISTINCT pid) FROM ledger") >= 2


@pytest.mark.timeout(90)
def test_kill_9_with_eight_running_jobs_they_are_rescued_by_another_worker(app, ledger, workers):
    job_ids = app.enqueue_many([("hold", {"first_attempt_sleep": 600}, {"queue": "acceptance"})] * 8)
    victim = workers("--concurrency", "8", "--lease-seconds", "2", "--rescue-interval", "0.5")
    wait_for(lambda: scalar(ledger, "SELECT count(*) FROM ledger") == 8, 30, "8 running jobs")
    assert scalar(ledger, "SELECT count(*) FROM pgqueue.job WHERE state = 'active'") == 8
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    killed_at = time.monotonic()
    workers("--concurrency", "8", "--lease-seconds", "2", "--rescue-interval", "0.5")
    wait_for(
        lambda: scalar(ledger, "SELECT count(*) FROM pgqueue.job WHERE state = 'completed'") == 8, 30, "rescue"
    )
    recovery = time.monotonic() - killed_at
    # lease (2 s) + one sweep (0.5 s) + start-up of the new worker and slack for a loaded machine
    assert recovery < 12, recovery
    for job_id in job_ids:
        job = app.get_job(job_id)
        assert job.attempts == 2 and job.output["attempt"] == 2
        assert job.output["pid"] != victim.pid
        assert "lease expired" in job.errors[0]["error"]


@pytest.mark.timeout(90)
def test_stalled_worker_cannot_overwrite_the_outcome_of_the_worker_that_took_over(app, ledger, workers):
    job_id = app.enqueue("hold", {"first_attempt_sleep": 3, "later_sleep": 0}, queue="acceptance")
    stale = workers("--lease-seconds", "1", "--rescue-interval", "0.3")
    wait_for(lambda: scalar(ledger, "SELECT count(*) FROM ledger") == 1, 30, "first attempt to start")
    stale.send_signal(signal.SIGSTOP)
    try:
        other = workers("--lease-seconds", "5", "--rescue-interval", "0.3")
        wait_for(lambda: app.get_job(job_id).state.value == "completed", 30, "the other worker to finish it")
        winner = app.get_job(job_id)
        assert winner.output["attempt"] == 2 and winner.output["pid"] != stale.pid
    finally:
        stale.send_signal(signal.SIGCONT)
    # The stale worker wakes up, its 3 s sleep ends, and it tries to complete attempt 1.
    time.sleep(4)
    after = app.get_job(job_id)
    assert after.output == winner.output and after.finished_at == winner.finished_at
    assert after.attempts == 2
    stale.send_signal(signal.SIGTERM)
    other.send_signal(signal.SIGTERM)
    output, _ = stale.communicate(timeout=20)
    assert stale.returncode == 0, output
    assert "lease" in output and "outcome" in output, output


@pytest.mark.timeout(60)
def test_sigterm_lets_running_jobs_finish_then_exits_zero(app, ledger, workers):
    ids = app.enqueue_many([("hold", {"first_attempt_sleep": 1.0}, {"queue": "acceptance"})] * 4)
    worker = workers("--concurrency", "4", "--shutdown-grace", "10")
    wait_for(lambda: scalar(ledger, "SELECT count(*) FROM ledger") == 4, 30, "4 running jobs")
    worker.send_signal(signal.SIGTERM)
    output, _ = worker.communicate(timeout=15)
    assert worker.returncode == 0, output
    assert all(app.get_job(i).state.value == "completed" for i in ids)
    assert scalar(ledger, "SELECT count(*) FROM pgqueue.job WHERE state = 'active'") == 0


@pytest.mark.timeout(60)
def test_sigterm_hands_back_jobs_that_outlive_the_grace_and_a_second_signal_stops_at_once(app, ledger, workers):
    ids = app.enqueue_many([("hold", {"first_attempt_sleep": 600}, {"queue": "acceptance"})] * 3)
    worker = workers("--concurrency", "3", "--shutdown-grace", "1")
    wait_for(lambda: scalar(ledger, "SELECT count(*) FROM ledger") == 3, 30, "3 running jobs")
    signalled = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    output, _ = worker.communicate(timeout=15)
    assert worker.returncode == 0, output
    assert time.monotonic() - signalled < 6
    for job_id in ids:
        job = app.get_job(job_id)
        assert job.state.value == "created" and job.attempts == 0 and job.lease_id is None

    # Second signal: no grace at all.
    worker = workers("--concurrency", "3", "--shutdown-grace", "60")
    wait_for(lambda: scalar(ledger, "SELECT count(*) FROM ledger") == 6, 30, "3 running jobs again")
    signalled = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    worker.send_signal(signal.SIGINT)
    output, _ = worker.communicate(timeout=15)
    assert worker.returncode == 0, output
    assert time.monotonic() - signalled < 6
    assert scalar(ledger, "SELECT count(*) FROM pgqueue.job WHERE state = 'active'") == 0


@pytest.mark.timeout(90)
def test_terminating_every_worker_backend_loses_nothing(app, ledger, workers, conn):
    app.enqueue_many([("record", {"n": n}, {"queue": "acceptance"}) for n in range(2000)])
    worker = workers("--concurrency", "10", "--log-level", "warning")
    for _ in range(5):
        time.sleep(0.4)
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name LIKE 'pgqueue-%%' AND datname = current_database()"
        )
    wait_for(
        lambda: scalar(conn, "SELECT count(*) FROM pgqueue.job WHERE state = 'completed'") == 2000, 60, "all done"
    )
    assert scalar(conn, "SELECT count(DISTINCT job_id) FROM ledger") == 2000
    worker.send_signal(signal.SIGTERM)
    output, _ = worker.communicate(timeout=20)
    assert worker.returncode == 0, output


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("flag", "expected"), [("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")]
)
def test_the_worker_runs_its_jobs_on_the_event_loop_chosen(app, ledger, workers, flag, expected):
    # The dev extras install uvloop, so auto chooses it.
    jobs = app.enqueue_many([("record", {"n": n}, {"queue": "acceptance"}) for n in range(200)])
    probe = app.enqueue("loop", {}, queue="acceptance")
    worker = workers("--burst", "--concurrency", "20", "--event-loop", flag)
    output, _ = worker.communicate(timeout=90)
    assert worker.returncode == 0, output
    assert f"loop={expected}" in output, output
    assert app.get_job(probe).output == expected
    assert all(app.get_job(job_id).state == "completed" for job_id in jobs)
    assert scalar(ledger, "SELECT count(*) FROM ledger") == 201
    assert scalar(ledger, "SELECT count(*) FROM pgqueue.job WHERE attempts <> 1") == 0


@pytest.mark.timeout(60)
def test_asking_for_uvloop_where_it_is_not_installed_is_a_clear_error(app, ledger, dsn, tmp_path):
    blocked = tmp_path / "uvloop"
    blocked.mkdir()
    (blocked / "__init__.py").write_text("raise ImportError('uvloop is not installed here')\n")
    job_id = app.enqueue("record", {"n": 1}, queue="acceptance")
    path = os.pathsep.join([str(tmp_path), str(HERE)])
    env = {**os.environ, "PGQUEUE_DATABASE_URL": dsn, "PYTHONPATH": path}
    command = [sys.executable, "-m", "pgqueue", "work", "ledger_app:app", "--burst", "--event-loop"]
    run = {"cwd": HERE, "env": env, "capture_output": True, "text": True, "timeout": 40}
    refused = subprocess.run([*command, "uvloop"], **run)
    assert refused.returncode != 0
    assert "pip install 'pgqueue[uvloop]'" in refused.stdout + refused.stderr
    assert app.get_job(job_id).state == "created"  # nothing was claimed
    fallback = subprocess.run([*command, "auto"], **run)
    assert fallback.returncode == 0, fallback.stdout + fallback.stderr
    assert "loop=asyncio" in fallback.stdout + fallback.stderr
    assert app.get_job(job_id).state == "completed"
