"""What flow control costs the claim: drain the same backlog of no-op jobs with one in-process
worker, first plain (no limits: the plain claim), then under limits that never bind (so that only
the limited claim's own cost shows): a global concurrency, a rate limit, a per-key concurrency
over 100 keys, and a queue concurrency kept in the database. Figures side by side, one run.

    python -m benchmarks.flow_cost [--jobs 20000] [--concurrency 50] [--rounds 3] [--dsn DSN]

Prints, per variant, jobs per second and the time per claim round trip as the worker saw it, the
best of ``--rounds`` rounds (the variants take turns in each round: a busy machine's noise
falls on all of them).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

import psycopg

import pgqueue
from pgqueue.migrate import upgrade
from pgqueue.worker.events import WorkerEvents

VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "global_concurrency=10000": {"global_concurrency": 10_000},
    "rate_limit=1000000/s": {"rate_limit": "1000000/s"},
    "key_concurrency=10000, 100 keys": {"key_concurrency": 10_000},
    "queue concurrency=10000": {},
}


class ClaimTimer(WorkerEvents):
    def __init__(self) -> None:
        self.claims = 0
        self.seconds = 0.0

    def claimed(self, n: int, seconds: float) -> None:
        self.claims += 1
        self.seconds += seconds


def run_variant(dsn: str, name: str, jobs: int, concurrency: int) -> tuple[float, float]:
    app = pgqueue.App(dsn)
    timer = ClaimTimer()
    app._worker_events.append(timer)
    try:

        @app.task("noop", queue="bench", **VARIANTS[name])
        async def noop() -> None:
            return None

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("TRUNCATE pgqueue.job, pgqueue.flow_start, pgqueue.queue")
            conn.execute("VACUUM ANALYZE pgqueue.job")
        if name.startswith("queue"):
            app.configure_queue("bench", concurrency=10_000)
        if name.startswith("key"):
            for key in range(100):
                noop.using(concurrency_key=f"tenant-{key}").enqueue_many([{}] * (jobs // 100))
        else:
            noop.enqueue_many([{}] * jobs)
        started = time.perf_counter()
        asyncio.run(app.arun_worker(burst=True, concurrency=concurrency, queues=["bench"], listen=False))
        took = time.perf_counter() - started
    finally:
        app.close()
    return jobs / took, timer.seconds / max(timer.claims, 1) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    dbname = f"pgqueue_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    dsn = psycopg.conninfo.make_conninfo(args.dsn, dbname=dbname)
    try:
        upgrade(dsn, "pgqueue")
        best: dict[str, tuple[float, float]] = {}
        for _ in range(args.rounds):
            for name in VARIANTS:
                rate, per_claim = run_variant(dsn, name, args.jobs, args.concurrency)
                if rate > best.get(name, (0.0, 0.0))[0]:
                    best[name] = (rate, per_claim)
        print(f"{args.jobs} no-op jobs, one worker, concurrency {args.concurrency}, best of {args.rounds}")
        print(f"{'variant':34} {'jobs/s':>9} {'ms/claim':>9}")
        for name, (rate, per_claim) in best.items():
            print(f"{name:34} {rate:9.0f} {per_claim:9.2f}")
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


if __name__ == "__main__":
    main()
