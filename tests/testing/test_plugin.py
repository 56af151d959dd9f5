"""The pytest plugin's fixtures, drain, assertions and clock, on a real database."""

from __future__ import annotations

import os
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue.testing import assert_enqueued, assert_not_enqueued, bound, enqueued

pytestmark = pytest.mark.timeout(60)


def effects(url: str) -> list[tuple[str, int]]:
    with psycopg.connect(url) as conn:
        return [(r[0], r[1]) for r in conn.execute("SELECT kind, user_id FROM effects ORDER BY id")]


@pytest.fixture
def signup(pgqueue_app: pgqueue.App, pgqueue_database_url: str) -> Any:
    """Tasks that write effects; the welcome email enqueues a follow-up job, which enqueues nothing."""
    with psycopg.connect(pgqueue_database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE effects (id serial PRIMARY KEY, kind text, user_id int)")

    def record(kind: str, user_id: int) -> None:
        with psycopg.connect(pgqueue_database_url, autocommit=True) as conn:
            conn.execute("INSERT INTO effects (kind, user_id) VALUES (%s, %s)", (kind, user_id))

    @pgqueue_app.task("send-welcome-email")
    def welcome(user_id: int, email: str) -> str:
        record("email", user_id)
        follow_up.enqueue(user_id=user_id)
        return email

    @pgqueue_app.task("follow-up", retry_delay=0)
    async def follow_up(user_id: int) -> None:
        record("follow-up", user_id)

    @pgqueue_app.task("flaky", max_attempts=3, retry_delay=0)
    def flaky(user_id: int) -> None:
        if pgqueue.current_job().attempt < 3:
            raise RuntimeError("try again")
        record("flaky", user_id)

    return welcome, follow_up, flaky


def test_the_fixture_app_is_migrated_and_drained_in_a_fresh_database(pgqueue_app, pgqueue_database_url, signup):
    welcome, follow_up, flaky = signup
    assert pgqueue_app.database_url == pgqueue_database_url
    welcome.enqueue(user_id=1, email="ada@example.com")
    flaky.enqueue(user_id=2)
    stats = pgqueue_app.drain()
    # The follow-up the welcome handler enqueued ran in the same drain, and the flaky job's retries too.
    assert sorted(effects(pgqueue_database_url)) == [("email", 1), ("flaky", 2), ("follow-up", 1)]
    assert stats["completed"] == 3 and stats["failed"] == 2
    assert pgqueue_app.counts() == {"default": {"completed": 3}}
    assert pgqueue_app.drain() == {}  # nothing left: returns at once


def test_assert_enqueued_matches_a_subset_of_the_data(pgqueue_app, signup):
    welcome, follow_up, _ = signup
    job_id = welcome.enqueue(user_id=7, email="grace@example.com")
    follow_up.enqueue(user_id=8)
    [job] = assert_enqueued(welcome, user_id=7)
    assert job.id == job_id and job.data == {"user_id": 7, "email": "grace@example.com"}
    assert_enqueued(welcome)
    assert_enqueued("send-welcome-email", pgqueue_app, email="grace@example.com", user_id=7)
    assert_enqueued(welcome.using(delay=5), user_id=7)
    assert_not_enqueued(welcome, user_id=8)
    assert_not_enqueued("notify-slack", pgqueue_app)
    assert [j.data for j in enqueued(follow_up)] == [{"user_id": 8}]

    with pytest.raises(AssertionError) as failure:
        assert_enqueued(welcome, user_id=8)
    message = str(failure.value)
    assert "expected a 'send-welcome-email' job with data including {'user_id': 8}" in message
    assert f"#{job_id} send-welcome-email created {{'email': 'grace@example.com', 'user_id': 7}}" in message
    assert "follow-up created {'user_id': 8}" in message

    with pytest.raises(AssertionError, match=r"expected no 'follow-up' job to be enqueued, found 1"):
        assert_not_enqueued(follow_up)
    with pytest.raises(TypeError, match="needs the App"):
        assert_enqueued("follow-up", user_id=8)

    pgqueue_app.drain()
    assert_not_enqueued(welcome)
    with pytest.raises(AssertionError, match="no job waits or runs"):
        assert_enqueued(follow_up)


def test_assert_enqueued_sees_jobs_inside_an_open_transaction(pgqueue_app, pgqueue_database_url, signup):
    welcome, _, _ = signup
    with psycopg.connect(pgqueue_database_url) as conn:
        welcome.enqueue(user_id=3, email="x@example.com", conn=conn)
        assert_enqueued(welcome, conn=conn, user_id=3)
        assert_not_enqueued(welcome, user_id=3)  # not committed: the App's pool cannot see it
        conn.rollback()
    assert_not_enqueued(welcome)


def test_the_clock_makes_delayed_jobs_and_retries_runnable(pgqueue_app, pgqueue_clock, pgqueue_database_url, signup):
    _, follow_up, _ = signup

    @pgqueue_app.task("slow-retry", max_attempts=2, retry_delay=2400, retry_backoff=False)
    def slow_retry() -> None:
        if pgqueue.current_job().attempt == 1:
            raise RuntimeError("later")

    follow_up.using(delay=3600).enqueue(user_id=5)
    retry_id = slow_retry.enqueue()
    assert pgqueue_app.drain() == {"failed": 1}
    assert effects(pgqueue_database_url) == []
    assert pgqueue_app.get_job(retry_id).state == "retry"

    assert pgqueue_clock.advance(1800) == 2
    assert pgqueue_app.drain() == {}
    assert pgqueue_app.get_job(retry_id).state == "retry"
    pgqueue_clock.advance(1800)
    assert pgqueue_app.drain() == {"completed": 2}
    assert effects(pgqueue_database_url) == [("follow-up", 5)]
    assert pgqueue_clock.advanced == 3600
    with pytest.raises(ValueError):
        pgqueue_clock.advance(-1)


async def test_adrain_and_aenqueue_in_an_async_test(pgqueue_app, pgqueue_database_url, signup):
    welcome, _, _ = signup
    await welcome.aenqueue(user_id=4, email="async@example.com")
    stats = await pgqueue_app.adrain()
    assert stats["completed"] == 2
    assert sorted(effects(pgqueue_database_url)) == [("email", 4), ("follow-up", 4)]
    # no aclose(): the fixture closes the async pool


def test_bound_points_an_app_at_another_database_and_back(pgqueue_database_url):
    app = pgqueue.App("postgresql://nobody@127.0.0.1:1/none")
    with bound(app, pgqueue_database_url):
        assert app.enqueue("anything") is not None
        assert app.counts() == {"default": {"created": 1}}
    assert app.database_url == "postgresql://nobody@127.0.0.1:1/none"
