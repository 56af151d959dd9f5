"""pgqueue's side of the table: the same scenarios as :mod:`benchmarks.ceiling`, through pgqueue's API.

This module holds the enqueue scenarios; the worker's (drain, pick-up latency, many workers)
are in :mod:`benchmarks.pgqueue_workers` and the scale ones in :mod:`benchmarks.pgqueue_scale`.
Each scenario records a :class:`~benchmarks.harness.Result` under a ``pgq.*`` key; the
comparisons in :mod:`benchmarks.run` put it beside the matching ceiling and print the ratio.
A scenario added here runs once it is in :func:`benchmarks.run.plan`.
"""

from __future__ import annotations

import time
from typing import Any

from .clock import now_ns
from .harness import Bench, Ready, Result, median, throughput
from .tasks import NOOP, SCHEMA, build_app

WARMUP = 5
"""Jobs each client enqueues before the clock starts: the pool connects, the schema version is
checked once, and psycopg prepares the insert (as the ceiling's clients do)."""


def setup(bench: Bench) -> None:
    """Migrate pgqueue's schema into the run's database."""
    from pgqueue.migrate import upgrade

    upgrade(bench.dsn, SCHEMA)


def reset(bench: Bench) -> None:
    bench.admin.execute(f"TRUNCATE {SCHEMA}.job RESTART IDENTITY")


# --- processes (module-level: they run in child processes) --------------------------------


def enqueue_client(ready: Ready, dsn: str, jobs: int) -> dict[str, Any]:
    """Enqueue ``jobs`` no-op jobs with ``Task.enqueue``, one transaction each (the App's pool)."""
    app = build_app(dsn)
    task = app.tasks[NOOP]
    try:
        for n in range(-WARMUP, 0):
            task.enqueue(n=n)
        ready()
        cpu = time.process_time()
        start = now_ns()
        for n in range(jobs):
            task.enqueue(n=n)
        end = now_ns()
        cpu = time.process_time() - cpu
    finally:
        app.close()
    return {"jobs": jobs, "written": jobs + WARMUP, "start": start, "end": end, "cpu": cpu}


def insert_client(ready: Ready, dsn: str, jobs: int) -> dict[str, Any]:
    """Insert ``jobs`` rows into pgqueue's job table with pgqueue's one-job statement
    (``insert_job``), one autocommit statement each, from a bare psycopg cursor: the enqueue's
    floor on pgqueue's table, without pgqueue's client code around it."""
    from pgqueue.db.sql import queries

    from .ceiling import timed_inserts

    app = build_app(dsn)
    template = app.tasks[NOOP]._call._template.values  # the parameters Task.enqueue sends
    app.close()
    return timed_inserts(ready, dsn, "insert-pgqueue", queries(SCHEMA).insert_job, jobs, template)


# --- scenarios (run in the parent) ---------------------------------------------------------


def enqueue(bench: Bench, clients: int, floor: bool = False) -> Result:
    """``Task.enqueue`` one job per transaction from ``clients`` processes, wake-ups on (the
    default). With ``floor``, pgqueue's one-job INSERT on its own table from bare psycopg cursors
    instead, no wake-up: what the table costs beside the ceiling's, and what pgqueue's client
    code costs beside it."""
    reset(bench)
    per_client = max(1, bench.sizes.enqueue_jobs // clients)
    client = insert_client if floor else enqueue_client
    with bench.meter(SCHEMA) as meter:
        reports = bench.group([(client, (bench.dsn, per_client))] * clients)
    counted = f"{clients} client{'s' if clients > 1 else ''}"
    if floor:
        key, title = f"pgq.enqueue.floor.c{clients}", f"INSERT into pgqueue's table 1/tx, {counted}"
    else:
        key, title = f"pgq.enqueue.c{clients}", f"enqueue 1/tx, {counted}, notify on"
    result = throughput(key, title, reports)
    meter.apply(result, sum(r["written"] for r in reports))
    return bench.record(result)


def bulk(bench: Bench) -> Result:
    """``Task.enqueue_many`` of ``bulk_jobs`` jobs in one call (validation and encoding included)."""
    jobs = bench.sizes.bulk_jobs
    rates, cpus = [], []
    with bench.meter(SCHEMA) as meter:
        for _ in range(bench.sizes.bulk_repeats):
            reset(bench)
            items = [{"n": n} for n in range(jobs)]
            app = build_app(bench.dsn)
            task = app.tasks[NOOP]
            try:
                task.enqueue_many([{"n": n} for n in range(-WARMUP, 0)])
                cpu = time.process_time()
                start = now_ns()
                ids = task.enqueue_many(items)
                seconds = (now_ns() - start) / 1e9
                cpus.append(time.process_time() - cpu)
            finally:
                app.close()
            if len(ids) != jobs or None in ids:
                raise RuntimeError(f"enqueue_many returned {len(ids)} ids for {jobs} jobs")
            rates.append(jobs / seconds)
    rate = median(rates)
    result = Result(
        key="pgq.bulk",
        title=f"enqueue_many of {jobs:,}",
        value=rate,
        unit="jobs/s",
        jobs=jobs,
        seconds=jobs / rate,
        client_cpu_us_per_job=median(cpus) / jobs * 1e6,
        note=f"median of {len(rates)}" if len(rates) > 1 else "",
    )
    meter.apply(result, (jobs + WARMUP) * len(rates))
    return bench.record(result)
