"""Debounce and throttle keys with a real `pgqueue work` process."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import debounce_app
import pgqueue
from processes import wait_for, worker_processes



@pytest.fixture
def worker(dsn: str, conn: psycopg.Connection[Any]) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    conn.execute(debounce_app.RUNS_DDL)
    yield from worker_processes(dsn, "debounce_app:app", "--poll-interval", "0.2")


@pytest.mark.timeout(90)
def test_bursts_of_debounced_enqueues_run_once_each_with_the_last_data(
    app: pgqueue.App, conn: psycopg.Connection[Any], worker: Callable[..., subprocess.Popen[str]]
) -> None:
    process = worker("--prune-interval", "0.2")
    returned: dict[int, list[pgqueue.JobId | None]] = {1: [], 2: []}
    for version in range(20):  # two interleaved bursts, 20 ms apart: shorter than the debounce
        for doc in (1, 2):
            returned[doc].append(
                app.enqueue(
                    "reindex", {"doc": doc, "version": version}, queue="keys", unique_key=f"doc-{doc}", debounce=1.0
                )
            )
        time.sleep(0.02)
    throttled = app.enqueue("reindex", {"doc": 3, "version": 0}, queue="keys", unique_key="doc-3", unique_for=0.5)
    wait_for(lambda: conn.execute("SELECT count(*) FROM runs").fetchone() == (3,), 30, "three runs")
    time.sleep(1.5)  # and no more
    runs = conn.execute("SELECT job_id, uid, data, at FROM runs ORDER BY data->>'doc'").fetchall()
    assert [data for _, _, data, _ in runs] == [
        {"doc": 1, "version": 19}, {"doc": 2, "version": 19}, {"doc": 3, "version": 0}
    ]
    for doc, (job_id, uid, _, ran_at) in zip((1, 2), runs, strict=False):
        assert {(int(r), r.uid) for r in returned[doc] if r is not None} == {(job_id, uid)}
        job = app.get_job(uid)
        assert job.state is pgqueue.JobState.COMPLETED and job.attempts == 1
        assert ran_at >= job.run_at  # not before the debounce after the last enqueue
    assert (runs[2][0], runs[2][1]) == (throttled, throttled.uid)
    # The worker's pruner removes the throttle's key once its window is over.
    wait_for(lambda: conn.execute("SELECT count(*) FROM pgqueue.job_key").fetchone() == (0,), 10, "the prune")
    assert process.poll() is None
