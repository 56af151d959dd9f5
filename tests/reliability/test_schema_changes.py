"""Scenario 15: migrations while workers run, and workers older than the schema."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

import pgqueue
import reliability_app
import scoreboard
from fleet import HERE


def migrate(dsn: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pgqueue", "migrate", "--database-url", dsn], cwd=HERE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=reliability_env())


def reliability_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_") and k != "DATABASE_URL"}


@pytest.mark.timeout(120)
def test_s15_four_concurrent_migrations_while_workers_run(db, producer, fleet):
    started = time.monotonic()
    ids = producer.enqueue_many([("work", {"n": n, "ms": 10}) for n in range(1000)])
    fleet.start("--concurrency", "8")
    fleet.start("--concurrency", "8")
    time.sleep(1.0)
    runs = [migrate(db.owner) for _ in range(4)]
    results = [(run.wait(60), run.communicate()[0]) for run in runs]
    finished = scoreboard.wait_finished(db.conn, ids, timeout=60)
    codes = fleet.stop()
    score = scoreboard.measure(db.conn, "s15 concurrent migrate x4", ids, started=started, recovery=None,
                               migrations_ok=sum(code == 0 for code, _ in results), drained_s=finished)
    scoreboard.assert_sound(score)
    assert all(code == 0 for code, _ in results), results
    assert all("is at version" in out for _, out in results), results
    assert set(codes.values()) == {0}, fleet.outputs()


@pytest.mark.timeout(60)
def test_s15_a_worker_or_producer_older_than_the_schema_refuses_to_start(db, fleet):
    db.conn.execute("UPDATE pgqueue.pgqueue_alembic_version SET version_num = '9999'")
    try:
        old = fleet.start("--concurrency", "2")
        code = old.wait(30)
        said = old.output()
        producer = reliability_app.make_app(db.producer)
        try:
            with pytest.raises(pgqueue.SchemaOutOfDate) as refused:
                producer.enqueue("work", {"n": 1})
        finally:
            producer.close()
    finally:
        db.conn.execute(f"UPDATE pgqueue.pgqueue_alembic_version SET version_num = '{pgqueue.migrate.SCHEMA_VERSION}'")
    assert code != 0, said
    assert "newer than this pgqueue knows" in said and "upgrade pgqueue" in said, said
    assert "Traceback" not in said, said
    assert said.strip().count("\n") == 0, f"more than one line: {said}"
    assert "newer than this pgqueue knows" in str(refused.value)
    assert db.scalar("SELECT count(*) FROM pgqueue.job") == 0
