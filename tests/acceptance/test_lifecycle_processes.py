"""Dependencies and dead letters across real `pgqueue work` processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import lifecycle_app
from test_worker_processes import scalar, wait_for

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def flow_workers(dsn: str, conn: psycopg.Connection[Any]) -> Iterator[Callable[[int], None]]:
    conn.execute(lifecycle_app.STEPS_DDL)
    started: list[subprocess.Popen[str]] = []

    def start(count: int) -> None:
        env = {**os.environ, "PGQUEUE_DATABASE_URL": dsn, "PYTHONUNBUFFERED": "1"}
        for _ in range(count):
            started.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "pgqueue",
                        "work",
                        "lifecycle_app:app",
                        "--poll-interval",
                        "0.2",
                        "--concurrency",
                        "4",
                    ],
                    cwd=HERE,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )

    yield start
    for process in started:
        process.terminate()
    for process in started:
        try:
            process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate(timeout=10)


def test_a_chain_and_diamonds_run_in_order_under_four_workers(
    dsn: str, conn: psycopg.Connection[Any], flow_workers: Callable[[int], None]
) -> None:
    app = lifecycle_app.app
    step = lifecycle_app.step
    flow_workers(4)
    with psycopg.connect(dsn) as tx:  # the whole graph in one transaction, with no worker's help
        chain = [step.enqueue(conn=tx, name="chain-0")]
        for n in range(1, 40):
            chain.append(step.using(depends_on=[chain[-1]]).enqueue(conn=tx, name=f"chain-{n}"))
        diamonds = []
        for d in range(10):
            top = step.enqueue(conn=tx, name=f"top-{d}")
            sides = [step.using(depends_on=[top]).enqueue(conn=tx, name=f"side-{d}-{s}") for s in range(3)]
            bad = step.using(depends_on=[top]).enqueue(conn=tx, name=f"bad-{d}", fail=d % 2 == 1)
            bottom = step.using(depends_on=[*sides, bad]).enqueue(conn=tx, name=f"bottom-{d}")
            tail = step.using(depends_on=[bottom]).enqueue(conn=tx, name=f"tail-{d}")
            diamonds.append((top, sides, bad, bottom, tail))
    total = 40 + 10 * 7
    wait_for(
        lambda: scalar(conn, "SELECT count(*) FROM pgqueue.job WHERE state > 'active'") == total,
        90,
        "every job of the graph to finish",
    )
    finished = {
        row[0]: row[1:] for row in conn.execute("SELECT job_id, started, finished, pid FROM steps").fetchall()
    }
    # The chain ran link after link, each starting after the one before it had finished.
    for before, after in zip(chain, chain[1:]):
        assert finished[after][0] >= finished[before][1]
    assert len({finished[job][2] for job in chain}) > 1, "one worker ran the whole chain"
    for d, (top, sides, bad, bottom, tail) in enumerate(diamonds):
        if d % 2 == 0:
            assert min(finished[s][0] for s in (*sides, bad)) >= finished[top][1]
            assert finished[bottom][0] >= max(finished[s][1] for s in (*sides, bad))
            assert finished[tail][0] >= finished[bottom][1]
        else:
            assert app.get_job(bad, conn=conn).state.value == "failed"
            assert (app.get_job(bottom, conn=conn).state.value, app.get_job(bottom, conn=conn).error) == (
                "cancelled",
                f"dependency {bad} failed",
            )
            assert (
                app.get_job(tail, conn=conn).error
                == f"dependency {bottom} cancelled; caused by dependency {bad} failed"
            )
            assert all(s in finished for s in sides)
    assert scalar(conn, "SELECT count(*) FROM pgqueue.dependency") == 0
    app.close()


def test_dead_letters_from_real_workers_are_redriven_by_the_cli(
    dsn: str, conn: psycopg.Connection[Any], flow_workers: Callable[[int], None]
) -> None:
    app = lifecycle_app.app
    lifecycle_app.flaky.enqueue_many([{"n": n} for n in range(20)], conn=conn)
    flow_workers(2)
    wait_for(
        lambda: scalar(conn, "SELECT count(*) FROM pgqueue.job WHERE queue = 'flow-dead'") == 20,
        60,
        "twenty dead letters",
    )
    assert scalar(conn, "SELECT count(*) FROM pgqueue.job WHERE queue = 'flow' AND state = 'failed'") == 20
    env = {**os.environ, "PGQUEUE_DATABASE_URL": dsn}
    cli = [sys.executable, "-m", "pgqueue", "redrive", "flow-dead"]
    dry = subprocess.run([*cli, "--dry-run"], env=env, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert "20" in dry.stdout and "would" in dry.stdout
    assert scalar(conn, "SELECT count(*) FROM pgqueue.job WHERE queue = 'flow-dead'") == 20
    done = subprocess.run([*cli, "--yes"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "20" in done.stdout
    # Back on their queue with fresh attempts, they fail again (twice each) and come back.
    wait_for(
        lambda: (
            scalar(conn, "SELECT count(*) FROM pgqueue.job WHERE queue = 'flow-dead'") == 20
            and scalar(conn, "SELECT count(*) FROM pgqueue.job WHERE queue = 'flow' AND state = 'failed'")
            == 40
        ),
        60,
        "the redriven jobs to fail again",
    )
    attempts = conn.execute(
        "SELECT attempts, jsonb_array_length(errors) FROM pgqueue.job WHERE queue = 'flow-dead' LIMIT 1"
    ).fetchone()
    assert attempts == (2, 4)
    app.close()
