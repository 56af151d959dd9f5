"""The raw-SQL ceiling: the tightest psycopg code on a minimal job table, in schema ``bench_raw``.

What PostgreSQL itself allows on this machine for each thing a queue does: insert one job per
transaction (with and without a NOTIFY), insert many at once (COPY, and one INSERT over
unnest), drain a backlog (claim k rows with SKIP LOCKED, complete them in one UPDATE), and
wake a listener. pgqueue's figures are read as ratios to these, measured in the same run.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import psycopg

from .clock import now_ns
from .harness import APPLICATION_NAME, Bench, Ready, Result, median, percentile, throughput

SCHEMA = "bench_raw"
CHANNEL = "bench_raw_jobs"
WARMUP = 5
"""Statements each client runs before the clock starts: psycopg prepares a statement on its
fifth execution, so timed statements all run prepared (pgqueue's clients get the same)."""

DDL = """
DROP SCHEMA IF EXISTS bench_raw CASCADE;
CREATE SCHEMA bench_raw;
CREATE TABLE bench_raw.job (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue    text NOT NULL,
    payload  jsonb NOT NULL,
    state    smallint NOT NULL DEFAULT 0,      -- 0 waiting, 1 running, 2 done
    attempts integer NOT NULL DEFAULT 0,
    run_at   timestamptz NOT NULL DEFAULT now()
);
-- The claim walks this index in its own order; only waiting rows are in it.
CREATE INDEX job_fetch ON bench_raw.job (queue, run_at, id) WHERE state = 0;
"""

INSERT = "INSERT INTO bench_raw.job (queue, payload) VALUES ('default', %s::jsonb) RETURNING id"

# One statement, so still one round trip: the notification is sent when the statement's
# (autocommit) transaction commits.
INSERT_NOTIFY = """
WITH i AS (
    INSERT INTO bench_raw.job (queue, payload) VALUES ('default', %s::jsonb) RETURNING id, queue
)
SELECT i.id, pg_notify('bench_raw_jobs', i.queue) FROM i
"""

# The latency runs name the job in the notification, to match each receipt to its commit.
INSERT_NOTIFY_SEQ = """
WITH i AS (
    INSERT INTO bench_raw.job (queue, payload) VALUES ('default', %s::jsonb) RETURNING id, payload
)
SELECT i.id, pg_notify('bench_raw_jobs', i.payload->>'n') FROM i
"""

INSERT_MANY = """
INSERT INTO bench_raw.job (queue, payload)
SELECT 'default', p::jsonb FROM unnest(%s::text[]) AS p
RETURNING id
"""

CLAIM = """
WITH picked AS (
    SELECT id FROM bench_raw.job
    WHERE queue = 'default' AND state = 0 AND run_at <= now()
    ORDER BY run_at, id
    LIMIT %s
    FOR UPDATE SKIP LOCKED
)
UPDATE bench_raw.job AS j SET state = 1, attempts = j.attempts + 1
FROM picked WHERE j.id = picked.id
RETURNING j.id, j.payload
"""

COMPLETE = """
UPDATE bench_raw.job AS j SET state = 2
FROM unnest(%s::bigint[]) AS d(id)
WHERE j.id = d.id AND j.state = 1
"""


def payloads(count: int, start: int = 0) -> list[str]:
    """Job payloads as JSON text, built before any clock starts (the ceiling measures the database)."""
    return [json.dumps({"n": n}, separators=(",", ":")) for n in range(start, start + count)]


def connect(dsn: str, role: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True, application_name=f"{APPLICATION_NAME}-raw-{role}")


def setup(bench: Bench) -> None:
    """(Re)create the ceiling's schema in the run's database."""
    bench.admin.execute(DDL)


def reset(bench: Bench) -> None:
    bench.admin.execute("TRUNCATE bench_raw.job RESTART IDENTITY")


def load_backlog(bench: Bench, jobs: int) -> None:
    """An empty table, then ``jobs`` waiting jobs by COPY, then fresh statistics (the ceiling
    claims with the plan a queue gets once autoanalyze has run)."""
    reset(bench)
    with bench.admin.cursor() as cur, cur.copy("COPY bench_raw.job (queue, payload) FROM STDIN") as copy:
        for payload in payloads(jobs):
            copy.write_row(("default", payload))
    bench.admin.execute("ANALYZE bench_raw.job")


# --- processes (module-level: they run in child processes) --------------------------------


def insert_client(ready: Ready, dsn: str, jobs: int, notify: bool) -> dict[str, Any]:
    """Insert ``jobs`` rows, one autocommit statement (one transaction) each."""
    return timed_inserts(ready, dsn, "insert", INSERT_NOTIFY if notify else INSERT, jobs)


def timed_inserts(
    ready: Ready, dsn: str, role: str, statement: Any, jobs: int, after: tuple[Any, ...] = ()
) -> dict[str, Any]:
    """Run ``statement`` once per job payload, with ``after`` as its further parameters, one
    autocommit statement each, after ``WARMUP`` untimed ones; the client's report."""
    work = payloads(jobs)
    with connect(dsn, role) as conn, conn.cursor() as cur:
        for payload in payloads(WARMUP, start=-WARMUP):
            cur.execute(statement, (payload, *after))
        ready()
        cpu = time.process_time()
        start = now_ns()
        for payload in work:
            cur.execute(statement, (payload, *after))
        end = now_ns()
        cpu = time.process_time() - cpu
    return {"jobs": jobs, "written": jobs + WARMUP, "start": start, "end": end, "cpu": cpu}


def drain_client(ready: Ready, dsn: str, batch: int) -> dict[str, Any]:
    """Claim up to ``batch`` jobs, complete them in one statement, repeat until none is left."""
    done = 0
    with connect(dsn, "drain") as conn, conn.cursor() as cur:
        ready()
        cpu = time.process_time()
        start = now_ns()
        while True:
            cur.execute(CLAIM, (batch,))
            ids = [row[0] for row in cur.fetchall()]
            if not ids:
                break
            cur.execute(COMPLETE, (ids,))
            done += len(ids)
        end = now_ns()
        cpu = time.process_time() - cpu
    return {"jobs": done, "start": start, "end": end, "cpu": cpu}


def latency_producer(ready: Ready, dsn: str, events: int, rate: float) -> list[tuple[int, int]]:
    """Insert a job and NOTIFY in one transaction, ``rate`` times a second on a fixed schedule;
    return ``(statement sent, commit returned)`` times per job."""
    committed = []
    interval = 1e9 / rate
    with connect(dsn, "producer") as conn, conn.cursor() as cur:
        for payload in payloads(WARMUP, start=-WARMUP):
            cur.execute(INSERT_NOTIFY_SEQ, (payload,))
        ready()
        time.sleep(0.2)  # the listener claims the warm-up jobs meanwhile
        origin = now_ns()
        for seq in range(events):
            delay = origin + seq * interval - now_ns()
            if delay > 0:
                time.sleep(delay / 1e9)
            sent = now_ns()
            cur.execute(INSERT_NOTIFY_SEQ, (json.dumps({"n": seq}),))
            committed.append((sent, now_ns()))
    return committed


def latency_listener(ready: Ready, dsn: str, events: int) -> list[tuple[int, int]]:
    """LISTEN; on each notification, note the time, claim the waiting jobs on a second
    connection (as a worker would), note the time again.

    Return ``(notification received, job claimed)`` per job, in job order.
    """
    received: dict[int, int] = {}
    claimed: dict[int, int] = {}
    with connect(dsn, "listener") as listener, connect(dsn, "claimer") as claimer:
        listener.execute(f"LISTEN {CHANNEL}")
        cur = claimer.cursor()
        for _ in range(WARMUP):
            cur.execute(CLAIM, (0,))
        ready()
        deadline = time.monotonic() + events / 10 + 30
        for notification in listener.notifies(timeout=max(1.0, deadline - time.monotonic())):
            got = now_ns()
            cur.execute(CLAIM, (100,))
            rows = cur.fetchall()
            done = now_ns()
            if rows:
                cur.execute(COMPLETE, ([row[0] for row in rows],))
            received[int(notification.payload)] = got
            for _, payload in rows:
                claimed[payload["n"]] = done
            if (
                all(seq in claimed and seq in received for seq in range(events))
                or time.monotonic() > deadline
            ):
                break
    missing = [seq for seq in range(events) if seq not in claimed or seq not in received]
    if missing:
        raise RuntimeError(
            f"{len(missing)} of {events} jobs were not seen by the listener, e.g. {missing[:5]}"
        )
    return [(received[seq], claimed[seq]) for seq in range(events)]


# --- scenarios (run in the parent) ---------------------------------------------------------


def enqueue(bench: Bench, clients: int, notify: bool) -> Result:
    """Single-row INSERT, one per transaction, from ``clients`` processes."""
    reset(bench)
    per_client = max(1, bench.sizes.enqueue_jobs // clients)
    with bench.meter(SCHEMA) as meter:
        reports = bench.group([(insert_client, (bench.dsn, per_client, notify))] * clients)
    key = f"raw.enqueue.c{clients}" + (".notify" if notify else "")
    title = f"INSERT 1/tx, {clients} client{'s' if clients > 1 else ''}" + (" + NOTIFY" if notify else "")
    result = throughput(key, title, reports)
    meter.apply(result, sum(r["written"] for r in reports))
    return bench.record(result)


def bulk_copy(bench: Bench) -> Result:
    """COPY ``bulk_jobs`` rows in one transaction."""
    return _bulk(bench, "raw.bulk.copy", "COPY bulk insert", _copy_rows)


def bulk_unnest(bench: Bench) -> Result:
    """One INSERT ... SELECT FROM unnest(text[]) RETURNING id, in one transaction."""
    return _bulk(bench, "raw.bulk.unnest", "INSERT ... unnest bulk insert", _insert_unnest)


def _copy_rows(conn: psycopg.Connection[Any], work: list[str]) -> None:
    with (
        conn.transaction(),
        conn.cursor() as cur,
        cur.copy("COPY bench_raw.job (queue, payload) FROM STDIN") as copy,
    ):
        for payload in work:
            copy.write_row(("default", payload))


def _insert_unnest(conn: psycopg.Connection[Any], work: list[str]) -> None:
    with conn.cursor() as cur:
        cur.execute(INSERT_MANY, (work,))
        cur.fetchall()


def _bulk(bench: Bench, key: str, title: str, insert: Any) -> Result:
    jobs = bench.sizes.bulk_jobs
    work = payloads(jobs)
    rates, cpus = [], []
    with bench.meter(SCHEMA) as meter:
        for _ in range(bench.sizes.bulk_repeats):
            reset(bench)
            with connect(bench.dsn, "bulk") as conn:
                conn.execute("SELECT 1")
                cpu = time.process_time()
                start = now_ns()
                insert(conn, work)
                seconds = (now_ns() - start) / 1e9
                cpus.append(time.process_time() - cpu)
            rates.append(jobs / seconds)
    rate = median(rates)
    result = Result(
        key=key,
        title=f"{title} of {jobs:,}",
        value=rate,
        unit="jobs/s",
        jobs=jobs,
        seconds=jobs / rate,
        client_cpu_us_per_job=median(cpus) / jobs * 1e6,
        note=f"median of {len(rates)}" if len(rates) > 1 else "",
    )
    meter.apply(result, jobs * len(rates))
    return bench.record(result)


def drain(bench: Bench, batch: int, connections: int) -> Result:
    """Drain a backlog of ``drain_jobs`` with ``connections`` processes claiming ``batch`` at a time."""
    jobs = bench.sizes.drain_jobs
    load_backlog(bench, jobs)
    with bench.meter(SCHEMA) as meter:
        reports = bench.group([(drain_client, (bench.dsn, batch))] * connections)
    row = bench.admin.execute(
        "SELECT count(*) FILTER (WHERE state = 2), count(*) FROM bench_raw.job"
    ).fetchone()
    if row is None or row[0] != jobs or row[1] != jobs:
        raise RuntimeError(f"raw drain left the table inconsistent: {row}")
    result = throughput(
        f"raw.drain.k{batch}.c{connections}",
        f"drain, claim {batch} + batched completion, {connections} conn{'s' if connections > 1 else ''}",
        reports,
    )
    meter.apply(result, jobs)
    return bench.record(result)


def best_drain(bench: Bench) -> Result | None:
    """The best drain rate of the matrix: the ceiling pgqueue's drain is compared to."""
    drains = [r for k, r in bench.results.items() if k.startswith("raw.drain.k")]
    if not drains:
        return None
    best = max(drains, key=lambda r: r.value)
    result = dataclasses.replace(
        best, key="raw.drain.best", title="drain, best tuned", note=best.title.removeprefix("drain, ")
    )
    bench.samples[result.key] = [result]
    return result


def latency(bench: Bench) -> tuple[Result, Result]:
    """LISTEN/NOTIFY wake-up and pick-up, measured from the moment the producer's commit returned."""
    reset(bench)
    events, rate = bench.sizes.latency_events, bench.sizes.latency_rate
    committed, seen = bench.group(
        [(latency_producer, (bench.dsn, events, rate)), (latency_listener, (bench.dsn, events))],
        timeout=events / rate + 120,
    )
    results = []
    for key, title, index in (
        ("raw.latency.wake", "LISTEN wake-up, commit → notification received", 0),
        ("raw.latency.pickup", "pick-up, commit → job claimed", 1),
    ):
        sample = [(seen_at[index] - returned) / 1e6 for (_, returned), seen_at in zip(committed, seen)]
        from_send = [(seen_at[index] - sent) / 1e6 for (sent, _), seen_at in zip(committed, seen)]
        results.append(
            bench.record(
                Result(
                    key=key,
                    title=title,
                    value=percentile(sample, 50),
                    unit="ms",
                    jobs=events,
                    metrics={
                        "p95": percentile(sample, 95),
                        "p99": percentile(sample, 99),
                        "max": max(sample),
                        "p50_from_send": percentile(from_send, 50),
                        "p99_from_send": percentile(from_send, 99),
                    },
                    note=(
                        f"{events} at {rate:g}/s; from the statement sent: p50 "
                        f"{percentile(from_send, 50):.2f}, p99 {percentile(from_send, 99):.2f}"
                    ),
                )
            )
        )
    return results[0], results[1]
