"""What the lifecycle triggers (dead letters, dependencies: migration 0007) cost ordinary jobs:
drain N no-op jobs with the triggers enabled and with them disabled, alternating rounds in one
database; and jobs that carry a dead-letter queue (another insert statement, the same drain).

    python -m benchmarks.lifecycle_cost [--jobs 20000] [--rounds 5] [--dsn DSN]

Prints enqueue and drain jobs/s per variant (medians of the rounds) and the drain's cost
against the triggers disabled.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time

import psycopg

import pgqueue
from pgqueue.migrate import upgrade

from .harness import throwaway_database

TRIGGERS = ("job_dead_letter", "job_finished_dependency", "job_deleted_dependency")
VARIANTS = ("triggers off", "triggers on", "dead_letter set")


def round_of(dsn: str, variant: str, jobs: int, concurrency: int) -> tuple[float, float]:
    app = pgqueue.App(dsn)

    @app.task("noop", dead_letter="noop-dead" if variant == "dead_letter set" else None)
    async def noop() -> None:
        return None

    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("TRUNCATE pgqueue.job")
            conn.execute("VACUUM ANALYZE pgqueue.job")
            switch = "DISABLE" if variant == "triggers off" else "ENABLE"
            for trigger in TRIGGERS:
                conn.execute(f"ALTER TABLE pgqueue.job {switch} TRIGGER {trigger}")
        started = time.perf_counter()
        for start in range(0, jobs, 1000):
            noop.enqueue_many([{}] * min(1000, jobs - start))
        enqueue = jobs / (time.perf_counter() - started)
        started = time.perf_counter()
        asyncio.run(app.arun_worker(burst=True, concurrency=concurrency, poll_interval=0.05))
        return enqueue, jobs / (time.perf_counter() - started)
    finally:
        app.close()


def statement_cost(dsn: str, rows: int, rounds: int) -> None:
    """The triggers' cost in the server alone: one UPDATE finishing ``rows`` active jobs, timed
    with the triggers enabled and disabled, alternating; medians."""
    timings: dict[str, list[float]] = {"DISABLE": [], "ENABLE": []}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for number in range(rounds * 2):
            switch = ("DISABLE", "ENABLE")[number % 2]
            conn.execute("TRUNCATE pgqueue.job")
            conn.execute(
                "INSERT INTO pgqueue.job (type, queue, data, state) "
                "SELECT 'noop', 'default', '{}', 'active' FROM generate_series(1, %s)",
                (rows,),
            )
            conn.execute("VACUUM ANALYZE pgqueue.job")
            for trigger in TRIGGERS:
                conn.execute(f"ALTER TABLE pgqueue.job {switch} TRIGGER {trigger}")
            started = time.perf_counter()
            conn.execute("UPDATE pgqueue.job SET state = 'completed', finished_at = now()")
            timings[switch].append(time.perf_counter() - started)
    off, on = statistics.median(timings["DISABLE"]), statistics.median(timings["ENABLE"])
    print(
        f"UPDATE of {rows} rows to completed: triggers off {off * 1e3:.0f} ms, on {on * 1e3:.0f} ms "
        f"({(on - off) / rows * 1e6:+.2f} us/row)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with throwaway_database(args.dsn) as dsn:
        upgrade(dsn, "pgqueue")
        rates: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
        for number in range(args.rounds):  # each round in another order: no variant always goes first
            for variant in VARIANTS[number % 3 :] + VARIANTS[: number % 3]:
                rates[variant].append(round_of(dsn, variant, args.jobs, args.concurrency))
        base = statistics.median(drain for _, drain in rates["triggers off"])
        for variant in VARIANTS:
            enqueue = statistics.median(e for e, _ in rates[variant])
            drain = statistics.median(d for _, d in rates[variant])
            cost = (1 / drain - 1 / base) * 1e6
            print(
                f"{variant:16} enqueue {enqueue:8.0f} jobs/s  drain {drain:8.0f} jobs/s  "
                f"({cost:+.1f} us/job against triggers off)"
            )
        statement_cost(dsn, args.jobs * 5, args.rounds)


if __name__ == "__main__":
    main()
