"""``pgqueue demo`` against the test database: every job ends completed or failed, runs do not mix."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import psycopg
import pytest


def run_demo(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_") and k != "DATABASE_URL"}
    env["PGQUEUE_DATABASE_URL"] = dsn
    return subprocess.run(
        [sys.executable, "-m", "pgqueue", "demo", *args], env=env, capture_output=True, text=True, timeout=60
    )


def demo_state(dsn: str) -> tuple[int, dict[str, int], set[int]]:
    """Users committed, jobs per state, and the user ids the jobs belong to."""
    with psycopg.connect(dsn) as conn:
        users = conn.execute("SELECT count(*) FROM pgqueue_demo.users").fetchone()[0]
        states = dict(
            conn.execute("SELECT state::text, count(*) FROM pgqueue_demo.job GROUP BY 1").fetchall()
        )
        owners = {
            row[0] for row in conn.execute("SELECT DISTINCT (data->>'user_id')::int FROM pgqueue_demo.job")
        }
        registered = {row[0] for row in conn.execute("SELECT id FROM pgqueue_demo.users")}
    assert owners == registered  # a registration that rolled back left no job behind
    return users, states, owners


@pytest.mark.timeout(90)
def test_the_demo_runs_every_job_to_completion_or_failure(dsn):
    result = run_demo(dsn, "--users", "20")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    out = result.stdout
    assert "summary" in out
    users, states, _ = demo_state(dsn)
    assert set(states) <= {"completed", "failed"}
    assert sum(states.values()) == 3 * users
    jobs_line = re.search(r"jobs\s+(\d+): (.*)", out)
    assert jobs_line and int(jobs_line.group(1)) == 3 * users
    assert f"{states.get('completed', 0)} completed" in jobs_line.group(2)
    assert re.search(r"registrations\s+20: \d+ committed, \d+ rolled back", out)
    assert re.search(r"retried\s+\d+ jobs needed more than one attempt", out)
    assert re.search(r"throughput\s+\d+ jobs in [\d.]+ s .*: [\d.]+ jobs/s", out)
    assert re.search(r"pick-up latency p50 [\d.]+ ms, p95 [\d.]+ ms", out)
    with psycopg.connect(dsn) as conn:
        # Some jobs needed a retry, and the pgqueue schema of the application was not touched.
        assert conn.execute("SELECT count(*) FROM pgqueue_demo.job WHERE attempts > 1").fetchone()[0] > 0
        assert conn.execute("SELECT count(*) FROM pgqueue.job").fetchone() == (0,)


@pytest.mark.timeout(120)
def test_a_second_run_starts_afresh(dsn):
    first = run_demo(dsn, "--users", "8", "--concurrency", "4")
    assert first.returncode == 0, first.stdout + first.stderr
    second = run_demo(dsn, "--users", "12")
    assert second.returncode == 0, second.stdout + second.stderr
    users, states, _ = demo_state(dsn)
    assert users <= 12
    assert sum(states.values()) == 3 * users


def test_the_demo_never_drops_a_schema_it_did_not_create(dsn):
    result = run_demo(dsn, "--schema", "pgqueue", "--users", "3")
    assert result.returncode == 2
    assert "was not created by pgqueue demo" in result.stderr
    assert "Traceback" not in result.stderr
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT to_regclass('pgqueue.job') IS NOT NULL").fetchone() == (True,)
