"""What periodic schedules cost an idle worker: run one `pgqueue work` process with 0 schedules,
then with 10 (daily cron schedules: none falls due), and measure over the same window its CPU
time and the transactions it commits (each of its statements is one: the scheduler's read of
the schedule table, heartbeats, polls, maintenance).

    python -m benchmarks.scheduler_cost [--seconds 30] [--schedules 10] [--dsn DSN]

Prints, per variant, CPU seconds per minute of the worker process and statements per second.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg

import pgqueue
from pgqueue.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent
APP = "benchmarks.scheduler_cost:app"

app = pgqueue.App()


@app.task("noop", queue="bench")
def noop() -> None:
    return None


for n in range(int(os.environ.get("PGQUEUE_BENCH_SCHEDULES", "0"))):
    app.periodic(cron=f"{n} 3 * * *", tz="Europe/Berlin", name=f"daily-{n}")(noop)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def commits(dsn: str, dbname: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        query = "SELECT xact_commit FROM pg_stat_database WHERE datname = %s"
        row = conn.execute(query, (dbname,)).fetchone()
        assert row is not None
        return int(row[0])


def measure(server: str, seconds: float, schedules: int) -> tuple[float, float]:
    dbname = f"pgqueue_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    dsn = psycopg.conninfo.make_conninfo(server, dbname=dbname)
    try:
        upgrade(dsn, "pgqueue")
        env = {**os.environ, "PGQUEUE_DATABASE_URL": dsn, "PGQUEUE_BENCH_SCHEDULES": str(schedules)}
        worker = subprocess.Popen(
            [sys.executable, "-m", "pgqueue", "work", APP, "--log-level", "error"],
            cwd=ROOT,
            env=env,
        )
        try:
            time.sleep(5)  # started, schedules written, caches warm
            cpu0, tx0, t0 = cpu_seconds(worker.pid), commits(server, dbname), time.monotonic()
            time.sleep(seconds)
            cpu1, tx1, t1 = cpu_seconds(worker.pid), commits(server, dbname), time.monotonic()
        finally:
            worker.terminate()
            worker.wait(30)
        return (cpu1 - cpu0) / (t1 - t0) * 60, (tx1 - tx0) / (t1 - t0)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--schedules", type=int, default=10)
    parser.add_argument(
        "--dsn",
        default=os.environ.get("PGQUEUE_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    args = parser.parse_args()
    print(f"idle worker, {args.seconds:g} s per variant")
    print(f"{'schedules':>9}  {'CPU s/min':>9}  {'statements/s':>12}")
    for schedules in (0, args.schedules):
        cpu, tps = measure(args.dsn, args.seconds, schedules)
        print(f"{schedules:>9}  {cpu:>9.3f}  {tps:>12.2f}")


if __name__ == "__main__":
    main()
