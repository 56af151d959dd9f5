"""pgqueue's side of the table: the same scenarios as :mod:`benchmarks.ceiling`, through pgqueue's API.

Each scenario records a :class:`~benchmarks.harness.Result` under a ``pgq.*`` key; the
comparisons in :mod:`benchmarks.run` put it beside the matching ceiling and print the ratio.
A scenario added here runs once it is in :func:`benchmarks.run.plan`.
"""

from __future__ import annotations

import time
from typing import Any

from .harness import Bench, Ready, Result, median, now_ns, throughput
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


# --- scenarios (run in the parent) ---------------------------------------------------------


def enqueue(bench: Bench, clients: int) -> Result:
    """``Task.enqueue`` one job per transaction from ``clients`` processes, wake-ups on (the default)."""
    reset(bench)
    per_client = max(1, bench.sizes.enqueue_jobs // clients)
    with bench.meter(SCHEMA) as meter:
        reports = bench.group([(enqueue_client, (bench.dsn, per_client))] * clients)
    result = throughput(
        f"pgq.enqueue.c{clients}",
        f"enqueue 1/tx, {clients} client{'s' if clients > 1 else ''}, notify on",
        reports,
    )
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


# --- worker scenarios: the place for drain, pick-up latency, scale and many workers --------
#
# They need the worker (``pgqueue work``); each records the keys that benchmarks.run's
# COMPARISONS already name, so their rows fill in as soon as the scenario is added to
# benchmarks.run's plan (next to the ceiling it is compared to). How to measure each,
# so that the ratios to the ceiling hold:
#
# pgq.drain.async.p1 / pgq.drain.async.p2 / pgq.drain.sync.p1 / pgq.drain.sync.p2
#     Load ``drain_jobs`` no-op jobs (NOOP or NOOP_SYNC) with enqueue_many, then ANALYZE the
#     job table (the ceiling claims with fresh statistics too). Start 1 or 2
#     ``pgqueue work benchmarks.tasks:app --burst`` subprocesses with PGQUEUE_DATABASE_URL set
#     to bench.dsn, inside ``bench.meter(SCHEMA)``. Rate = drain_jobs / (max(finished_at) -
#     min(started_at)) read from the job table: the database's clock, start-up excluded, the
#     same span the ceiling's processes measure from their first claim to their last
#     completion. Check every job ended 'completed'. Record the workers' CPU seconds
#     (psutil cpu_times) and peak RSS (psutil memory_info sampled every 50 ms) as metrics
#     "cpu_s" and "rss_mb". Ceiling: raw.drain.best (targets 0.5x for one process, 0.7x for two).
#
# pgq.latency.listen / pgq.latency.poll
#     An idle ``pgqueue work`` (and with ``--no-listen``); enqueue latency_events jobs one per
#     transaction at latency_rate/s on a fixed schedule, taking now_ns() right after each
#     enqueue returns (commit returned: the same origin as the ceiling's); the handler records
#     now_ns() at start (e.g. inserts it in a side table, or appends it to a file named by
#     job data). p50 is the value, p95/p99/max go in metrics.
#     Ceiling: raw.latency.pickup (commit -> job claimed); target p50 <= 1.0x, p99 <= 5 ms.
#
# pgq.scale.backlog_10k / pgq.scale.backlog_1m / pgq.scale.retained_1m
#     Drain rate with 10,000 vs 1,000,000 waiting jobs (load with COPY-speed enqueue_many
#     batches), and the claim/enqueue rate with 1,000,000 completed jobs left in the table;
#     metrics "table_mb"/"index_mb" from pg_total_relation_size after churn. Targets are
#     ratios between pgqueue's own figures (1m / 10k >= 0.8; retained costs <= 10 %).
#
# pgq.many_workers
#     8 worker processes, concurrency 50 each, SLEEP handlers; jobs/s and the peak count of
#     the run's connections in pg_stat_activity as metric "connections".
