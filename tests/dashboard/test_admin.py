"""The operators' actions on many jobs, and the read-only views the dashboard shows, on a real database."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pgqueue import InvalidJob
from pgqueue.db import admin, inspect
from pgqueue.db.driver import run

pytestmark = pytest.mark.timeout(60)


def _fail(conn, ids, error="boom"):
    conn.execute(
        "UPDATE pgqueue.job SET state = 'failed', finished_at = now(), attempts = max_attempts, "
        "error = %s, errors = jsonb_build_array(jsonb_build_object('attempt', 1, 'error', %s::text)) "
        "WHERE id = ANY(%s)",
        (error, error, ids),
    )


def test_actions_by_filter_count_what_they_change(app, conn):
    ids = app.enqueue_many([("mail", {"n": i}, {"queue": "emails"}) for i in range(30)])
    other = app.enqueue_many([("pdf", {"n": i}, {"queue": "pdf"}) for i in range(5)])
    _fail(conn, ids[:10], "SMTP timeout")
    _fail(conn, ids[10:12], "refused")

    assert app.retry_jobs(queue="emails", error="smtp") == 10
    states = dict(conn.execute("SELECT state::text, count(*) FROM pgqueue.job GROUP BY 1").fetchall())
    assert states == {"retry": 10, "failed": 2, "created": 23}
    assert app.retry_jobs(queue="pdf") == 0  # nothing failed there

    assert app.cancel_jobs(queue="emails", state="created") == 18
    assert app.cancel_jobs(queue="emails", state="created") == 0
    assert app.cancel_jobs(type="pdf", older_than=timedelta(hours=1)) == 0  # all are new
    assert app.cancel_jobs(type="pdf", older_than=0) == 5

    assert app.delete_jobs(queue="emails", state="failed") == 2
    assert app.delete_job(other[0]) is True
    assert app.delete_job(other[0]) is False
    left = conn.execute("SELECT count(*) FROM pgqueue.job").fetchone()[0]
    assert left == 35 - 3
    assert app.delete_jobs() == 32


def test_batches_walk_past_each_other(app, conn):
    """Small batches: every matching row is reached exactly once, however many batches it takes."""
    ids = app.enqueue_many([("t", {"i": i}) for i in range(23)])
    _fail(conn, ids[::2])
    assert run(conn, admin.retry_jobs("pgqueue", inspect.JobFilter(), batch=5)) == 12
    assert run(conn, admin.cancel_jobs("pgqueue", inspect.JobFilter(type="t"), batch=4)) == 23
    assert run(conn, admin.delete_jobs("pgqueue", inspect.JobFilter(state="cancelled"), batch=7)) == 23


def test_bad_filters_are_refused_before_any_statement(app):
    with pytest.raises(InvalidJob):
        app.cancel_jobs(state="sleeping")
    with pytest.raises(InvalidJob):
        app.retry_jobs(older_than=-1)
    with pytest.raises(InvalidJob):
        app.delete_jobs(queue="")
    with pytest.raises(InvalidJob):
        app.delete_jobs(older_than="1 hour")


def test_overview_throughput_list_and_workers(app, conn):
    ids = app.enqueue_many([("a", {"i": i}, {"queue": "q1"}) for i in range(7)])
    app.enqueue("a", {}, queue="q1", delay=3600)
    conn.execute(
        "UPDATE pgqueue.job SET state = 'completed', finished_at = now() WHERE id = ANY(%s)", (ids[:3],)
    )
    _fail(conn, ids[3:4])
    conn.execute("UPDATE pgqueue.job SET run_at = now() - interval '90 seconds' WHERE id = %s", (ids[4],))
    (stats,) = run(conn, inspect.queue_overview("pgqueue"))
    assert (stats.queue, stats.waiting, stats.scheduled, stats.failed) == ("q1", 3, 1, 1)
    assert stats.completed_last_minute == 3
    assert 89 < stats.oldest_waiting_seconds < 200

    minutes = run(conn, inspect.throughput("pgqueue", 60))
    assert len(minutes) == 60
    assert (minutes[-1]["completed"], minutes[-1]["failed"]) == (3, 1)
    assert sum(m["completed"] for m in minutes[:-1]) == 0

    first = run(conn, inspect.list_jobs("pgqueue", inspect.JobFilter(queue="q1"), limit=3))
    assert [j["id"] for j in first.jobs] == [ids[-1] + 1, ids[6], ids[5]]
    assert first.newer is None
    second = run(
        conn, inspect.list_jobs("pgqueue", inspect.JobFilter(queue="q1"), before=first.older, limit=3)
    )
    assert [j["id"] for j in second.jobs] == [ids[4], ids[3], ids[2]]
    back = run(conn, inspect.list_jobs("pgqueue", inspect.JobFilter(queue="q1"), after=second.newer, limit=3))
    assert back.jobs == first.jobs
    failed = run(conn, inspect.list_jobs("pgqueue", inspect.JobFilter(state="failed", error="BOO")))
    assert [j["id"] for j in failed.jobs] == [ids[3]] and failed.older is None
    assert run(conn, inspect.count_jobs("pgqueue", inspect.JobFilter(queue="q1", state="created"))) == 4

    conn.execute(
        "INSERT INTO pgqueue.worker (id, hostname, pid, queues, concurrency, last_seen_at) VALUES "
        "('w-new', 'h', 1, '{q1}', 4, now()), ('w-old', 'h', 2, '{q1}', 4, now() - interval '5 minutes')"
    )
    conn.execute("UPDATE pgqueue.job SET state = 'active', worker_id = 'w-new' WHERE id = %s", (ids[5],))
    workers = {w.id: w for w in run(conn, inspect.worker_list("pgqueue"))}
    assert workers["w-new"].alive and workers["w-new"].running == 1
    assert not workers["w-old"].alive and workers["w-old"].running == 0
