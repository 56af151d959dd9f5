"""Testing handlers with pgqueue's pytest plugin (``pip install 'pgqueue[testing]'``), on the
example app of ``examples/tasks.py``. Run it with:

    pytest examples/test_tasks.py -p no:cacheprovider -o pgqueue_app=examples.tasks:app

In a project, name the App once in the pytest configuration instead:

    [tool.pytest.ini_options]
    pgqueue_app = "myproject.tasks:app"

Each test gets a fresh database with pgqueue's schema (on $PGQUEUE_TEST_DATABASE_URL, else the
embedded server), and ``pgqueue_app`` is that App pointed at it.
"""

from __future__ import annotations

import pgqueue
from pgqueue.testing import assert_enqueued, assert_not_enqueued

from examples.tasks import enqueue_registrations, make_avatar, notify_slack, send_welcome_email


def test_a_registration_enqueues_its_three_jobs(pgqueue_app: pgqueue.App) -> None:
    enqueue_registrations(2)
    assert_enqueued(send_welcome_email, user_id=2, email="user2@example.com")
    assert_enqueued(notify_slack, user_id=1)
    assert len(assert_enqueued(make_avatar)) == 2


def test_drain_runs_the_jobs_through_the_real_worker(pgqueue_app: pgqueue.App) -> None:
    welcome_id, _, avatar_id = enqueue_registrations(1)
    stats = pgqueue_app.drain()
    assert stats["completed"] == 3
    assert_not_enqueued(send_welcome_email)
    assert welcome_id is not None and avatar_id is not None
    assert pgqueue_app.get_job(welcome_id).output == {"to": "user1@example.com"}
    assert len(pgqueue_app.get_job(avatar_id).output) == 16


def test_a_delayed_job_runs_once_its_time_has_come(pgqueue_app: pgqueue.App, pgqueue_clock) -> None:
    job_id = send_welcome_email.using(delay=3600).enqueue(user_id=9, email="later@example.com")
    assert job_id is not None
    pgqueue_app.drain()
    assert pgqueue_app.get_job(job_id).state == "created"  # not yet: the hour has not passed
    pgqueue_clock.advance(3600)
    pgqueue_app.drain()
    assert pgqueue_app.get_job(job_id).state == "completed"
