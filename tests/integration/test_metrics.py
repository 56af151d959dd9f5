"""Worker metrics: the events a worker reports, counted by prometheus-client, against a real database."""

from __future__ import annotations

import asyncio
import time
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

import pgqueue
import pgqueue.metrics
from pgqueue.worker import Worker, WorkerConfig
from pgqueue.worker.events import WorkerEvents

pytestmark = pytest.mark.timeout(60)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


async def test_counters_follow_completions_retries_and_failures(app, conn):
    @app.task("ok", queue="q1")
    def ok() -> None:
        pass

    @app.task("flaky", queue="q1", max_attempts=2, retry_delay=0, retry_backoff=False)
    def flaky() -> None:
        raise RuntimeError("no luck\nmore text")

    registry = CollectorRegistry()
    pgqueue.metrics.instrument(app, registry)
    assert pgqueue.metrics.instrument(app, registry) is pgqueue.metrics.instrument(app)  # once per app
    for _ in range(5):
        ok.enqueue()
    flaky.enqueue()
    # The retry recorded in a burst's last exchange is not visible to that exchange's claim: a
    # second burst runs it.
    for _ in range(2):
        await app.arun_worker(burst=True, poll_interval=0.1, queues=["q1"])

    assert value(registry, "pgqueue_jobs_started_total", queue="q1", type="ok") == 5
    assert value(registry, "pgqueue_jobs_completed_total", queue="q1", type="ok") == 5
    assert value(registry, "pgqueue_jobs_started_total", queue="q1", type="flaky") == 2
    assert value(registry, "pgqueue_jobs_retried_total", queue="q1", type="flaky") == 1
    assert value(registry, "pgqueue_jobs_failed_total", queue="q1", type="flaky") == 1
    assert value(registry, "pgqueue_jobs_failed_total", queue="q1", type="ok") == 0
    assert value(registry, "pgqueue_job_duration_seconds_count", queue="q1", type="ok") == 5
    assert value(registry, "pgqueue_claim_duration_seconds_count") >= 2
    assert value(registry, "pgqueue_jobs_in_flight") == 0


async def test_rescues_are_counted_and_metrics_are_served_over_http(app, conn, unused_tcp_port):
    @app.task("ok")
    def ok() -> None:
        pass

    registry = CollectorRegistry()
    pgqueue.metrics.instrument(app, registry)
    job_id = ok.enqueue()
    # A job claimed by a worker that died: active, with its lease long expired.
    conn.execute(
        "UPDATE pgqueue.job SET state = 'active', attempts = 1, lease_id = gen_random_uuid(), "
        "lease_expires_at = now() - interval '1 minute', worker_id = 'dead' WHERE id = %s",
        (job_id,),
    )
    worker = Worker(app.runtime(), WorkerConfig(poll_interval=0.1, rescue_interval=0.1, metrics_port=unused_tcp_port))
    running = asyncio.create_task(worker.run())
    try:
        deadline = time.monotonic() + 20
        while value(registry, "pgqueue_jobs_completed_total", queue="default", type="ok") < 1:
            assert time.monotonic() < deadline and not running.done()
            await asyncio.sleep(0.05)
        body = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{unused_tcp_port}/metrics", timeout=5).read().decode()
        )
    finally:
        worker.stop()
        await asyncio.wait_for(running, 15)
    assert value(registry, "pgqueue_lease_rescues_total") == 1
    assert 'pgqueue_jobs_completed_total{queue="default",type="ok"} 1.0' in body
    assert "pgqueue_claim_duration_seconds_bucket" in body
    with pytest.raises(OSError):  # the server stopped with the worker
        urllib.request.urlopen(f"http://127.0.0.1:{unused_tcp_port}/metrics", timeout=2)


async def test_an_observer_that_raises_does_not_stop_jobs(app, conn):
    class Broken(WorkerEvents):
        def job_started(self, job):
            raise ValueError("observer bug")

    @app.task("ok")
    def ok() -> None:
        pass

    app.add_worker_events(Broken())
    ok.enqueue()
    await app.arun_worker(burst=True, poll_interval=0.1)
    assert conn.execute("SELECT state::text FROM pgqueue.job").fetchone()[0] == "completed"
