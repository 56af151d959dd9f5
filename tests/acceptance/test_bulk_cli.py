"""`pgqueue cancel/retry/delete` with filters, --dry-run and the confirmation prompt."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import psycopg
import pytest

import pgqueue

pytestmark = pytest.mark.timeout(120)


def cli(dsn: str, *args: str, answer: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PGQUEUE_DATABASE_URL": dsn}
    return subprocess.run(
        [sys.executable, "-m", "pgqueue", *args],
        env=env,
        input=answer,
        capture_output=True,
        text=True,
        timeout=60,
    )


def states(conn: psycopg.Connection[Any]) -> dict[tuple[str, str], int]:
    rows = conn.execute("SELECT queue, state::text, count(*) FROM pgqueue.job GROUP BY 1, 2").fetchall()
    return {(queue, state): count for queue, state, count in rows}


def test_bulk_actions_count_first_ask_and_touch_only_what_the_filters_match(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    app.enqueue_many([("mail", {"n": n}, {"queue": "emails"}) for n in range(5)])
    app.enqueue_many([("pdf", {"n": n}, {"queue": "pdf"}) for n in range(3)])
    conn.execute(
        "UPDATE pgqueue.job SET created_at = now() - interval '2 hours' WHERE data->>'n' IN ('0', '1')"
    )

    dry = cli(dsn, "cancel", "--queue", "emails", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would touch 5 job(s)" in dry.stdout
    assert states(conn) == {("emails", "created"): 5, ("pdf", "created"): 3}

    refused = cli(dsn, "cancel", "--queue", "emails", answer="n\n")
    assert refused.returncode == 1 and "cancel 5 jobs?" in refused.stdout and "nothing done" in refused.stdout
    assert states(conn) == {("emails", "created"): 5, ("pdf", "created"): 3}

    older = cli(dsn, "cancel", "--queue", "emails", "--older-than", "1h", answer="y\n")
    assert older.returncode == 0, older.stderr
    assert "cancel 2 jobs?" in older.stdout and "cancel: 2 job(s)" in older.stdout
    assert states(conn)[("emails", "cancelled")] == 2

    done = cli(dsn, "retry", "--state", "cancelled", "--yes")
    assert "retry: 2 job(s)" in done.stdout and "?" not in done.stdout
    assert states(conn)[("emails", "retry")] == 2

    one = cli(dsn, "delete", "--type", "pdf", "--dry-run")
    assert "would touch 3 job(s)" in one.stdout
    deleted = cli(dsn, "delete", "--type", "pdf", "--yes")
    assert "delete: 3 job(s)" in deleted.stdout
    assert ("pdf", "created") not in states(conn)

    job_id = app.enqueue("single", {})
    single = cli(dsn, "cancel", str(job_id))  # one job: no question
    assert single.returncode == 0 and f"job {job_id} cancelled" in single.stdout
    assert cli(dsn, "delete", str(job_id)).returncode == 0
    assert cli(dsn, "delete", str(job_id)).returncode == 1

    both = cli(dsn, "cancel", "7", "--queue", "emails")
    assert both.returncode != 0 and "not both" in both.stderr
    bad = cli(dsn, "cancel", "--older-than", "soon")
    assert bad.returncode != 0 and "duration" in bad.stderr
    nothing = cli(dsn, "retry", "--queue", "nowhere")
    assert nothing.returncode == 0 and "no job matches" in nothing.stdout
