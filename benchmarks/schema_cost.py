"""What the job table's shape costs the server per job, measured without a worker's Python.

One connection drains the same backlog of no-op jobs, one statement per round trip that records
the previous batch's outcomes and claims the next (the worker's exchange), in turn on:

- ``raw``: the raw-SQL ceiling's table (6 columns, a primary key and the fetch index) and its
  statements (``ceiling.py``), both in one statement;
- ``pgqueue``: pgqueue's own ``exchange_one`` on a migrated schema, every index and trigger;
- ``pgqueue, no feature indexes``: the same with the indexes only features need dropped
  (unique and debounce keys, per-key concurrency, dead letters, legacy uids);
- ``pgqueue, pkey + fetch only``: dropped as well, the lease index (rescue) and the finished
  index (retention);
- ``hot + history``: finished jobs leave the job table: the exchange deletes them from it and
  appends them to a history table (primary key only; retention would drop its partitions), and
  the job table keeps every index but the finished one.

Prints jobs per second and WAL bytes per job (including full-page images: each variant starts
right after a checkpoint), best of ``--rounds`` rounds taken in turns, and each as a ratio to
``raw``. With one connection and 100 jobs a claim, jobs/s is the server's time per job plus a
round trip shared by 100 jobs: the figure to read is where the shapes differ.

    python -m benchmarks.schema_cost [--jobs 50000] [--batch 100] [--rounds 3] [--dsn DSN]
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from pgqueue.db.sql import queries
from pgqueue.migrate import upgrade

from . import ceiling
from .harness import resolve_dsn, throwaway_database

SCHEMA = "bench_shape"
QUEUE = "default"

FEATURE_INDEXES = ("job_unique_key", "job_debounce_key", "job_fair", "job_dead_letters", "job_uid_legacy")
WORK_INDEXES = ("job_lease", "job_finished")

RAW_EXCHANGE = """
WITH done AS (
    UPDATE bench_raw.job AS j SET state = 2
    FROM unnest(%(done)s::bigint[]) AS d(id)
    WHERE j.id = d.id AND j.state = 1
    RETURNING j.id
), picked AS (
    SELECT id FROM bench_raw.job
    WHERE queue = 'default' AND state = 0 AND run_at <= now()
    ORDER BY run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE bench_raw.job AS j SET state = 1, attempts = j.attempts + 1
    FROM picked WHERE j.id = picked.id
    RETURNING j.id, j.payload
)
SELECT (SELECT count(*) FROM done),
       (SELECT json_agg(json_build_array(id, payload)) FROM claimed)
"""

# The history variant's exchange: pgqueue's claim, and successes moved from the job table to
# the history table (the columns a finished job keeps) under the same lease guard.
SPLIT_EXCHANGE = """
WITH done AS (
    DELETE FROM {schema}.job AS j
    USING unnest(%(done_id)s::bigint[], %(done_lease)s::uuid[], %(done_duration)s::float8[])
          AS v(id, lease_id, duration)
    WHERE j.id = v.id AND j.lease_id = v.lease_id
    RETURNING j.*, v.duration AS took
), kept AS (
    INSERT INTO {schema}.history (id, uid, type, queue, data, state, priority, attempts, max_attempts,
                                  run_at, created_at, started_at, finished_at, duration, worker_id)
    SELECT id, uid, type, queue, data, 'completed', priority, attempts, max_attempts,
           run_at, created_at, started_at, now(), took, worker_id
    FROM done
    RETURNING id
), picked AS ({claim_one_candidates}
), claimed AS ({claim_picked}
)
SELECT (SELECT array_agg(id) FROM kept), {claimed_json}
"""


def _schema_sql(schema: str) -> dict[str, Any]:
    q = queries(schema)
    return {
        "claim_one_candidates": q.claim_one_candidates,
        "claim_picked": q.claim_picked,
        "claimed_json": q.claimed_json,
        "schema": sql.Identifier(schema),
    }


class Variant:
    """A table shape: ``prepare`` makes it (empty), ``load`` fills its backlog, ``drain`` empties it."""

    def __init__(
        self, name: str, schema: str | None, drop: tuple[str, ...] = (), split: bool = False
    ) -> None:
        self.name, self.schema, self.drop, self.split = name, schema, drop, split

    @property
    def table(self) -> str:
        return "bench_raw.job" if self.schema is None else f"{self.schema}.job"

    def prepare(self, conn: psycopg.Connection[Any], dsn: str) -> None:
        if self.schema is None:
            conn.execute(ceiling.DDL)
            return
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema)))
        upgrade(dsn, self.schema)
        for index in self.drop:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(self.schema, index)))
        if self.split:
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {history} (LIKE {job} INCLUDING DEFAULTS INCLUDING CONSTRAINTS);"
                    "ALTER TABLE {history} ADD PRIMARY KEY (id)"
                ).format(
                    history=sql.Identifier(self.schema, "history"), job=sql.Identifier(self.schema, "job")
                )
            )

    def load(self, conn: psycopg.Connection[Any], jobs: int) -> None:
        if self.schema is None:
            conn.execute("TRUNCATE bench_raw.job RESTART IDENTITY")
            conn.execute(
                "INSERT INTO bench_raw.job (queue, payload) SELECT 'default', '{\"n\": 1}'"
                " FROM generate_series(1, %s)",
                (jobs,),
            )
        else:
            tables = [sql.Identifier(self.schema, "job")]
            if self.split:
                tables.append(sql.Identifier(self.schema, "history"))
            conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY").format(sql.SQL(", ").join(tables)))
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (type, queue, data) SELECT 'noop', 'default', '{{\"n\": 1}}'"
                    " FROM generate_series(1, %s)"
                ).format(sql.Identifier(self.schema, "job")),
                (jobs,),
            )
        conn.execute(f"VACUUM ANALYZE {self.table}")
        conn.execute("CHECKPOINT")

    def exchange(self, conn: psycopg.Connection[Any], batch: int) -> Callable[[Any], tuple[Any, int]]:
        """A function from the previous claim's result to (this claim's result, jobs claimed)."""
        if self.schema is None:

            def raw(previous: Any) -> tuple[Any, int]:
                done = [row[0] for row in previous or ()]
                row = conn.execute(RAW_EXCHANGE, {"done": done, "limit": batch}).fetchone()
                claimed = row[1] if row is not None else None
                return claimed, len(claimed or ())

            return raw

        q = queries(self.schema)
        statement = (
            sql.SQL(SPLIT_EXCHANGE).format(**_schema_sql(self.schema)) if self.split else q.exchange_one
        )
        worker_id = f"bench-shape:{os.getpid()}:{uuid.uuid4().hex[:8]}"

        def pgq(previous: Any) -> tuple[Any, int]:
            done = previous or []
            params = {
                "done_id": [job[0] for job in done],
                "done_lease": [job[11] for job in done],
                "done_output": None,
                "done_duration": [0.0001] * len(done),
                "failed_id": [],
                "failed_lease": [],
                "failed_error": [],
                "failed_retry_in": [],
                "failed_duration": [],
                "queue": QUEUE,
                "limit": batch,
                "lease_seconds": 60.0,
                "worker_id": worker_id,
            }
            row = conn.execute(statement, params).fetchone()
            claimed = row[-1] if self.split else row[2]  # type: ignore[index]
            return claimed, len(claimed or ())

        return pgq

    def drain(self, conn: psycopg.Connection[Any], batch: int) -> tuple[float, int, int]:
        """Drain the backlog; (seconds, jobs, WAL bytes)."""
        step, idle = self.exchange(conn, batch), self.exchange(conn, 0)
        for _ in range(ceiling.WARMUP):  # psycopg prepares the statement on its fifth execution
            idle([])
        start_lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
        jobs, previous = 0, None
        started = time.perf_counter()
        while True:
            previous, claimed = step(previous)
            jobs += claimed
            if not claimed:
                break
        seconds = time.perf_counter() - started
        wal = conn.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)::bigint", (start_lsn,)
        ).fetchone()[0]  # type: ignore[index]
        return seconds, jobs, int(wal)


VARIANTS = (
    Variant("raw", None),
    Variant("pgqueue", SCHEMA),
    Variant("pgqueue, no feature indexes", f"{SCHEMA}_lean", FEATURE_INDEXES),
    Variant("pgqueue, pkey + fetch only", f"{SCHEMA}_bare", FEATURE_INDEXES + WORK_INDEXES),
    Variant("hot + history", f"{SCHEMA}_split", ("job_finished",), split=True),
)


def run(dsn: str, jobs: int, batch: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Best jobs/s and its WAL bytes per job, per variant, in a database of the run's own."""
    best: dict[str, tuple[float, float]] = {}
    with throwaway_database(dsn) as database, psycopg.connect(database, autocommit=True) as conn:
        for variant in VARIANTS:
            variant.prepare(conn, database)
        for _ in range(rounds):
            for variant in VARIANTS:
                variant.load(conn, jobs)
                seconds, drained, wal = variant.drain(conn, batch)
                if drained != jobs:
                    raise AssertionError(f"{variant.name}: drained {drained} of {jobs} jobs")
                rate = drained / seconds
                if rate > best.get(variant.name, (0.0, 0.0))[0]:
                    best[variant.name] = (rate, wal / drained)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dsn", help="server (default $PGQUEUE_BENCH_DSN, else local 5432)")
    args = parser.parse_args()
    if args.jobs < 1 or args.batch < 1 or args.rounds < 1:
        parser.error("--jobs, --batch and --rounds must be at least 1")
    best = run(resolve_dsn(args.dsn), args.jobs, args.batch, args.rounds)
    raw_rate = best["raw"][0]
    print(f"{args.jobs} no-op jobs, {args.batch} a claim, one connection, best of {args.rounds} rounds")
    print(f"{'table shape':<30} {'jobs/s':>9} {'x raw':>6} {'WAL B/job':>10}")
    for variant in VARIANTS:
        rate, wal = best[variant.name]
        print(f"{variant.name:<30} {rate:>9,.0f} {rate / raw_rate:>6.2f} {wal:>10,.0f}")


if __name__ == "__main__":
    main()
