"""``pgqueue jobs`` and ``pgqueue status`` on real jobs: filters, keyset paging, waiting ages,
throughput, gone workers, and failure summaries."""

from __future__ import annotations

import json

import pytest

import pgqueue
from test_cli import output, pgqueue_cli

pytestmark = pytest.mark.timeout(90)

SQLALCHEMY_STYLE = """Traceback (most recent call last):
  File "app.py", line 3, in handler
    session.execute(text("SELECT 1"))
psycopg.OperationalError: connection is bad

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "app.py", line 5, in handler
    raise exc
sqlalchemy.exc.OperationalError: (psycopg.OperationalError) connection is bad
[SQL: SELECT 1]
(Background on this error at: https://sqlalche.me/e/20/e3q8)
"""


@pytest.fixture
def jobs(dsn, conn):
    app = pgqueue.App(dsn)
    try:
        ids = app.enqueue_many(
            [("mail", {"n": i}, {"queue": "emails"}) for i in range(5)]
            + [("pdf", {"n": i}, {"queue": "pdf"}) for i in range(3)]
        )
    finally:
        app.close()
    conn.execute(
        "UPDATE pgqueue.job SET state = 'failed', attempts = 2, finished_at = now(), error = %s, "
        "errors = jsonb_build_array(jsonb_build_object('attempt', 1, 'error', %s::text), "
        "                           jsonb_build_object('attempt', 2, 'error', %s::text)) WHERE id = %s",
        (SQLALCHEMY_STYLE, "Traceback (most recent call last):\n  File \"x\", line 1\nRuntimeError: CRM call failed\nHTTP 503\n<html>", SQLALCHEMY_STYLE, ids[5]),
    )
    conn.execute(
        "UPDATE pgqueue.job SET state = 'completed', finished_at = now() WHERE id = ANY(%s)", (ids[:2],)
    )
    conn.execute("UPDATE pgqueue.job SET run_at = now() - interval '90 seconds' WHERE id = %s", (ids[2],))
    return ids


def test_jobs_filters_and_pages(dsn, jobs):
    env = {"PGQUEUE_DATABASE_URL": dsn}
    first = pgqueue_cli("jobs", "--queue", "emails", "--limit", "2", "--json", env=env)
    assert first.returncode == 0, output(first)
    page = json.loads(first.stdout)
    assert [j["id"] for j in page["jobs"]] == jobs[:2] and page["next_after"] == jobs[1]
    second = json.loads(pgqueue_cli("jobs", "--queue", "emails", "--limit", "2", "--after", str(jobs[1]), "--json", env=env).stdout)
    assert [j["id"] for j in second["jobs"]] == jobs[2:4]

    failed = pgqueue_cli("jobs", "--state", "failed", "--error-contains", "SQLALCHE.ME", env=env)
    assert failed.returncode == 0, output(failed)
    assert str(jobs[5]) in failed.stdout
    assert "sqlalchemy.exc.OperationalError: (psycopg.OperationalError) connection is bad" in failed.stdout
    assert "Background on this error" not in failed.stdout  # the summary is the first line only
    assert "no jobs" in pgqueue_cli("jobs", "--type", "pdf", "--state", "active", env=env).stdout
    bad = pgqueue_cli("jobs", "--state", "sleeping", env=env)
    assert bad.returncode == 2 and "--state" in bad.stderr

    shown = pgqueue_cli("show", str(jobs[5]), env=env)
    assert "attempt 1: RuntimeError: CRM call failed\n" in shown.stdout
    assert "attempt 2: sqlalchemy.exc.OperationalError: (psycopg.OperationalError) connection is bad" in shown.stdout
    assert "(Background on this error at" in shown.stdout  # the full report is still shown above


def test_status_shows_waiting_age_throughput_and_gone_workers(dsn, conn, jobs):
    env = {"PGQUEUE_DATABASE_URL": dsn}
    conn.execute(
        "INSERT INTO pgqueue.worker (id, hostname, pid, queues, concurrency, last_seen_at) VALUES "
        "('box:1:alive', 'box', 1, '{emails}', 7, now() - interval '2 seconds'), "
        "('box:2:dead', 'box', 2, '{emails}', 7, now() - interval '16 seconds')"
    )
    status = pgqueue_cli("status", env=env)
    assert status.returncode == 0, output(status)
    lines = status.stdout.splitlines()
    emails = next(line for line in lines if line.startswith("emails")).split()
    assert emails[:8] == ["emails", "3", "0", "0", "2", "0", "0", "5"]
    assert emails[8:] == [emails[8], "s", "0.4"] and 90 <= float(emails[8]) < 120
    assert next(line for line in lines if line.startswith("box:1:alive")).split()[-1] == "alive"
    assert next(line for line in lines if line.startswith("box:2:dead")).split()[-1] == "gone"
    longer = json.loads(pgqueue_cli("status", "--json", "--lease-seconds", "60", env=env).stdout)
    assert [w["gone"] for w in longer["workers"]] == [False, False]
    assert longer["activity"]["emails"]["completed_per_minute"] == pytest.approx(0.4)
