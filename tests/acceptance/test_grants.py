"""Least privilege: `pgqueue grants` gives a worker role and a producer role just what they need."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import pgqueue

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def roles(dsn: str, conn: psycopg.Connection[Any]) -> Iterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    worker, producer = f"pgq_w_{suffix}", f"pgq_p_{suffix}"
    for role in (worker, producer):
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
    conn.execute(f'GRANT CONNECT ON DATABASE "{conn.info.dbname}" TO "{worker}", "{producer}"')
    yield worker, producer
    for role in (worker, producer):
        conn.execute(f'DROP OWNED BY "{role}"')
        conn.execute(f'DROP ROLE "{role}"')


def as_role(dsn: str, role: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, user=role, password="")


def pgqueue_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgqueue", *args], capture_output=True, text=True, timeout=60)


def test_printed_grants_name_the_roles_quoted_and_touch_no_database() -> None:
    done = pgqueue_cli("grants", "--worker", 'w"; DROP TABLE x; --', "--producer", "p",
                       "--database-url", "postgresql://nobody@127.0.0.1:1/none")
    assert done.returncode == 0, done.stderr
    assert 'TO "w""; DROP TABLE x; --"' in done.stdout
    assert "GRANT INSERT ON \"pgqueue\".job TO \"p\"" in done.stdout


def test_worker_and_producer_roles_can_do_their_jobs_and_nothing_more(dsn, conn, roles) -> None:
    worker, producer = roles
    done = pgqueue_cli("grants", "--worker", worker, "--producer", producer, "--apply", "--database-url", dsn)
    assert done.returncode == 0, done.stderr

    producer_app = pgqueue.App(as_role(dsn, producer))
    worker_app = pgqueue.App(as_role(dsn, worker))
    ran: list[int] = []

    @worker_app.task("work")
    async def work(n: int) -> int:
        ran.append(n)
        return n * 2

    try:
        ids = [producer_app.enqueue("work", {"n": n}) for n in range(3)]
        ids += producer_app.enqueue_many([("work", {"n": n}) for n in range(3, 103)])
        assert producer_app.enqueue("work", {"n": 0}, unique_key="once") is not None
        assert producer_app.enqueue("work", {"n": 0}, unique_key="once") is None
        # Throttled and debounced enqueues: the producer takes keys and replaces waiting jobs' data.
        throttled = producer_app.enqueue("work", {"n": 0}, unique_key="t", unique_for=60)
        assert producer_app.enqueue("work", {"n": 1}, unique_key="t", unique_for=60) == throttled
        debounced = producer_app.enqueue("work", {"n": 0}, unique_key="d", debounce=0.01)
        again = producer_app.enqueue("work", {"n": 0}, unique_key="d", debounce=0.01)
        assert again == debounced and not again.created and again.uid == debounced.uid
        time.sleep(0.05)
        worker_app.run_worker(burst=True, concurrency=20)
        assert sorted(ran) == [0, 0, 0] + list(range(103))
        assert worker_app.get_job(ids[1]).output == 2
        # The producer cannot read jobs' data, and neither role can change the schema.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            producer_app.get_job(ids[0])
        for role in (worker, producer):
            with psycopg.connect(as_role(dsn, role), autocommit=True) as their:
                for ddl in ("CREATE TABLE pgqueue.evil (id int)", "DROP TABLE pgqueue.job",
                            "ALTER TABLE pgqueue.job ADD COLUMN evil int", "TRUNCATE pgqueue.job"):
                    with pytest.raises(psycopg.errors.InsufficientPrivilege):
                        their.execute(ddl)
        with psycopg.connect(as_role(dsn, producer), autocommit=True) as theirs:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                theirs.execute("DELETE FROM pgqueue.job")
    finally:
        producer_app.close()
        worker_app.close()


def test_the_roles_can_use_dependencies_dead_letters_and_pubsub(dsn, conn, roles) -> None:
    worker, producer = roles
    done = pgqueue_cli("grants", "--worker", worker, "--producer", producer, "--apply", "--database-url", dsn)
    assert done.returncode == 0, done.stderr
    producer_app = pgqueue.App(as_role(dsn, producer))
    worker_app = pgqueue.App(as_role(dsn, worker))
    ran: list[str] = []

    @worker_app.task("step", max_attempts=1, dead_letter="step-dead")
    async def step(name: str) -> None:
        ran.append(name)
        if name == "bad":
            raise RuntimeError("bad")

    try:
        worker_app.subscribe("happened", "step")
        first = producer_app.enqueue("step", {"name": "first"})
        second = producer_app.enqueue("step", {"name": "second"}, depends_on=[first], dead_letter="step-dead")
        bad = producer_app.enqueue("step", {"name": "bad"}, dead_letter="step-dead", max_attempts=1)
        after_bad = producer_app.enqueue("step", {"name": "never"}, depends_on=[bad])
        assert len(producer_app.publish("happened", {"name": "published"})) == 1
        worker_app.run_worker(burst=True, concurrency=4)
        assert sorted(ran) == ["bad", "first", "published", "second"]
        assert worker_app.get_job(second).state.value == "completed"
        assert worker_app.get_job(after_bad).error == f"dependency {bad} failed"
        assert worker_app.redrive("step-dead", dry_run=True) == 1
        # The producer marks dependencies, but cannot change a job's state.
        with psycopg.connect(as_role(dsn, producer), autocommit=True) as theirs:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                theirs.execute("UPDATE pgqueue.job SET state = 'completed' WHERE id = %s", (first,))
    finally:
        producer_app.close()
        worker_app.close()
