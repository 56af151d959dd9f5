"""Flow control in-process against a real database: limits across workers, queue limits kept in the
database, and bad options refused before anything is written. (Real `pgqueue work` processes:
tests/acceptance/test_flow_processes.py.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue.worker import Worker, WorkerConfig

pytestmark = pytest.mark.timeout(60)

Interval = tuple[float, float]


def most_at_once(intervals: list[Interval]) -> int:
    """The most intervals that overlap at any moment (a sweep over their starts and ends)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in events:  # at a tie an end (-1) sorts first: touching intervals do not overlap
        running += step
        peak = max(peak, running)
    return peak


async def run_workers(app: pgqueue.App, n: int, done: Callable[[], bool], timeout: float = 30, **config: Any) -> None:
    """Run ``n`` workers in this process until ``done()`` holds, then stop them."""
    workers = [Worker(app.runtime(), WorkerConfig(**{"poll_interval": 0.5, **config})) for _ in range(n)]
    running = [asyncio.create_task(worker.run()) for worker in workers]
    deadline = time.monotonic() + timeout
    try:
        while not done():
            for task in running:
                if task.done():
                    task.result()
                    raise AssertionError("a worker stopped on its own")
            assert time.monotonic() < deadline, "condition not reached in time"
            await asyncio.sleep(0.05)
    finally:
        for worker in workers:
            worker.stop()
        await asyncio.wait_for(asyncio.gather(*running), timeout=20)


def finished(conn: psycopg.Connection[Any], jobs: int) -> Callable[[], bool]:
    return lambda: conn.execute("SELECT count(*) FROM pgqueue.job WHERE state = 'completed'").fetchone()[0] >= jobs


async def test_global_concurrency_holds_across_workers_and_other_jobs_still_flow(app, conn):
    spans: list[Interval] = []
    plain_done: list[float] = []

    @app.task("scarce", queue="flow", global_concurrency=3)
    async def scarce() -> None:
        started = time.monotonic()
        await asyncio.sleep(0.15)
        spans.append((started, time.monotonic()))

    @app.task("plenty", queue="flow")
    async def plenty() -> None:
        plain_done.append(time.monotonic())

    scarce.enqueue_many([{}] * 24)
    plenty.enqueue_many([{}] * 10)
    began = time.monotonic()
    await run_workers(app, 3, finished(conn, 34), concurrency=10)
    assert len(spans) == 24
    assert most_at_once(spans) == 3
    # The plain jobs, behind the scarce ones in the queue, did not wait for them.
    assert max(plain_done) - began < 1.0, max(plain_done) - began


async def test_key_concurrency_counts_per_key(app, conn):
    spans: dict[str, list[Interval]] = {"a": [], "b": []}

    @app.task("per-tenant", queue="flow", key_concurrency=2)
    async def per_tenant(tenant: str) -> None:
        started = time.monotonic()
        await asyncio.sleep(0.1)
        spans[tenant].append((started, time.monotonic()))

    per_tenant.using(concurrency_key="a").enqueue_many([{"tenant": "a"}] * 12)
    per_tenant.using(concurrency_key="b").enqueue_many([{"tenant": "b"}] * 6)
    await run_workers(app, 2, finished(conn, 18), concurrency=10)
    assert most_at_once(spans["a"]) == 2 and most_at_once(spans["b"]) == 2
    assert most_at_once(spans["a"] + spans["b"]) == 4  # the keys run beside each other
    keys = dict(conn.execute("SELECT concurrency_key, count(*) FROM pgqueue.job GROUP BY 1").fetchall())
    assert keys == {"a": 12, "b": 6}


async def test_rate_limit_no_window_holds_more_than_the_limit(app, conn):
    @app.task("paced", queue="flow", rate_limit="10/s")
    async def paced() -> None:
        pass

    paced.enqueue_many([{}] * 25)
    began = time.monotonic()
    await run_workers(app, 2, finished(conn, 25), concurrency=10)
    took = time.monotonic() - began
    starts = [row[0] for row in conn.execute("SELECT extract(epoch FROM started_at)::float8 FROM pgqueue.job")]
    starts.sort()
    assert max(sum(1 for t in starts if s <= t < s + 1.0) for s in starts) == 10
    # 25 starts at 10 per second: the third window opens after two seconds, and no poll is waited for.
    assert 2.0 <= took < 4.0, took


async def test_queue_limits_from_the_database_apply_change_and_clear(app, conn):
    spans: list[Interval] = []

    @app.task("report", queue="reports")
    async def report() -> None:
        started = time.monotonic()
        await asyncio.sleep(0.2)
        spans.append((started, time.monotonic()))

    settings = app.configure_queue("reports", concurrency=2, rate_limit="50/s")
    assert settings["concurrency"] == 2 and settings["rate_limit"] == "50/s" and not settings["paused"]
    report.enqueue_many([{}] * 10)
    await run_workers(app, 2, finished(conn, 10), concurrency=5)
    assert most_at_once(spans) == 2

    spans.clear()
    app.configure_queue("reports", concurrency=pgqueue.UNLIMITED, paused=True)
    app.configure_queue("reports", paused=False)  # paused and resumed: the limits stay as they were
    assert app.queue_settings()["reports"]["concurrency"] is None
    assert app.queue_settings()["reports"]["rate_limit"] == "50/s"
    app.configure_queue("reports", rate_limit=pgqueue.UNLIMITED)
    report.enqueue_many([{}] * 10)
    await run_workers(app, 2, finished(conn, 20), concurrency=5)
    assert most_at_once(spans) > 2
    assert conn.execute("SELECT count(*) FROM pgqueue.flow_start").fetchone()[0] == 0


async def test_a_queue_limit_set_while_workers_run_takes_effect(app, conn):
    spans: list[Interval] = []

    @app.task("export", queue="exports")
    async def export() -> None:
        started = time.monotonic()
        await asyncio.sleep(0.1)
        spans.append((started, time.monotonic()))

    worker = Worker(app.runtime(), WorkerConfig(poll_interval=0.2, concurrency=8))
    running = asyncio.create_task(worker.run())
    try:
        deadline = time.monotonic() + 10
        while worker.flow.active:  # until the worker has read that its queue has no limits
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        app.configure_queue("exports", concurrency=1)
        export.enqueue_many([{}] * 6)
        deadline = time.monotonic() + 10
        while not finished(conn, 6)():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert worker.flow.active
        assert most_at_once(spans) == 1
    finally:
        worker.stop()
        await asyncio.wait_for(running, 15)


async def test_fair_claims_go_round_robin_over_keys(app, conn):
    order: list[str] = []

    @app.task("sync-tenant", queue="fair", fair=True)
    async def sync_tenant(tenant: str) -> None:
        order.append(tenant)
        await asyncio.sleep(0.005)

    # 2,000 jobs of one key wait ahead of 10 of another, then 5 of a third.
    sync_tenant.using(concurrency_key="big").enqueue_many([{"tenant": "big"}] * 2000)
    sync_tenant.using(concurrency_key="small").enqueue_many([{"tenant": "small"}] * 10)
    sync_tenant.using(concurrency_key="tiny").enqueue_many([{"tenant": "tiny"}] * 5)

    def few_done() -> bool:
        return order.count("small") == 10 and order.count("tiny") == 5

    await run_workers(app, 1, few_done, concurrency=4)
    # Round-robin: the few were not starved behind the many (in strict queue order none would
    # have run before 2,000 others).
    assert order.count("big") <= 40, order.count("big")
    cursor = conn.execute("SELECT queue, type FROM pgqueue.flow_cursor").fetchall()
    assert cursor == [("fair", "sync-tenant")]


def test_bad_limits_are_refused_before_anything_is_written(app, conn):
    for options in (
        {"rate_limit": "fast"},
        {"rate_limit": "10/fortnight"},
        {"rate_limit": "0/s"},
        {"rate_limit": 10},
        {"global_concurrency": 0},
        {"global_concurrency": -1},
        {"key_concurrency": 1.5},
        {"key_rate_limit": "-3/s"},
        {"fair": "yes"},
    ):
        with pytest.raises(pgqueue.ConfigurationError):
            app.task("bad", **options)(lambda: None)
    for options in ({"concurrency": 0}, {"rate_limit": "fast"}, {"rate_limit": "5/0s"}, {"paused": "yes"}):
        with pytest.raises(pgqueue.ConfigurationError):
            app.configure_queue("q", **options)

    @app.task("unkeyed", global_concurrency=2)
    def unkeyed() -> None: ...

    with pytest.raises(pgqueue.InvalidJob, match="concurrency_key"):
        unkeyed.using(concurrency_key="tenant-1").enqueue()
    with pytest.raises(pgqueue.InvalidJob):
        app.enqueue("anything", {}, concurrency_key="")
    assert conn.execute("SELECT count(*) FROM pgqueue.job").fetchone()[0] == 0
    assert app.queue_settings() == {}


def test_rate_limits_parse():
    from pgqueue.limits import parse_rate_limit

    assert parse_rate_limit("r", "100/s") == pgqueue.RateLimit(100, 1.0)
    assert parse_rate_limit("r", "600/m") == pgqueue.RateLimit(600, 60.0)
    assert parse_rate_limit("r", "1000 / h") == pgqueue.RateLimit(1000, 3600.0)
    assert parse_rate_limit("r", "10/5s") == pgqueue.RateLimit(10, 5.0)
    assert parse_rate_limit("r", "3/0.5s") == pgqueue.RateLimit(3, 0.5)
    assert str(pgqueue.RateLimit(10, 5.0)) == "10/5s" and str(pgqueue.RateLimit(7, 1.0)) == "7/s"
