"""What worker observers cost: drain N no-op jobs with no observer, with Prometheus metrics, and
with metrics and tracing (an SDK tracer whose spans go nowhere), alternating, in one database.

    python -m benchmarks.observer_cost [--jobs 20000] [--rounds 3] [--dsn DSN]

Prints jobs/s per variant (median of the rounds) and the cost per job against no observer.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
import uuid

import psycopg
from prometheus_client import CollectorRegistry

import pgqueue
import pgqueue.metrics
import pgqueue.tracing
from pgqueue.migrate import upgrade


def make_app(dsn: str, variant: str) -> pgqueue.App:
    app = pgqueue.App(dsn)

    @app.task("noop")
    async def noop() -> None:
        return None

    if variant in ("metrics", "metrics+tracing"):
        pgqueue.metrics.instrument(app, CollectorRegistry())
    if variant == "metrics+tracing":
        from opentelemetry.sdk.trace import TracerProvider

        pgqueue.tracing.instrument(app, TracerProvider())
    return app


def drain(dsn: str, variant: str, jobs: int, concurrency: int) -> float:
    app = make_app(dsn, variant)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("TRUNCATE pgqueue.job")
            conn.execute("VACUUM ANALYZE pgqueue.job")
        plain = pgqueue.App(dsn)  # enqueued untraced: the drain alone is measured
        plain.enqueue_many([("noop", {})] * jobs)
        plain.close()
        started = time.perf_counter()
        asyncio.run(app.arun_worker(burst=True, concurrency=concurrency, poll_interval=0.05))
        return jobs / (time.perf_counter() - started)
    finally:
        app.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    name = f"pgqueue_observer_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    dsn = psycopg.conninfo.make_conninfo(args.dsn, dbname=name)
    try:
        upgrade(dsn, "pgqueue")
        variants = ("none", "metrics", "metrics+tracing")
        rates: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(args.rounds):
            for variant in variants:
                rates[variant].append(drain(dsn, variant, args.jobs, args.concurrency))
        base = statistics.median(rates["none"])
        for variant in variants:
            rate = statistics.median(rates[variant])
            extra_us = (1 / rate - 1 / base) * 1e6
            spread = ", ".join(f"{r:,.0f}" for r in rates[variant])
            print(f"{variant:16} {rate:8,.0f} jobs/s  ({spread})  {extra_us:+.1f} us/job vs none")
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
