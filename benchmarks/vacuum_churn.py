"""The job table under churn with autovacuum off, without and with the worker's vacuum duty.

``python -m benchmarks.vacuum_churn --jobs 200000``: ``--jobs`` jobs pass through the job table
of a throwaway database (its autovacuum is switched off on the job table, whatever the
server's setting): the runner tops the backlog up (server-side inserts + a NOTIFY) every 0.1 s
while one real ``pgqueue work`` process (concurrency 100, completed jobs kept 2 s, pruned every
second) works them off. Once without and once with ``--vacuum-interval 10``, each in a fresh
database. At the end: the job table's size (heap + indexes, ``pg_total_relation_size``) and
its peak, its dead rows, vacuums run, and the drain rate (overall, and over the second and the
ninth tenth of the jobs), side by side.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from pgqueue import migrate
from pgqueue.db.sql import channel

from .harness import APPLICATION_NAME, describe_server, resolve_dsn, throwaway_database
from .tasks import NOOP, SCHEMA
from .workers import work_command

JOB = f"{SCHEMA}.job"
WAITING = f"""
INSERT INTO {JOB} (type, queue, data)
SELECT '{NOOP}', 'default', jsonb_build_object('n', g) FROM generate_series(1, %(n)s) AS g
"""
# Each count walks a partial index (waiting jobs; active ones), not the whole bloating table.
UNFINISHED = (
    f"SELECT (SELECT count(*) FROM {JOB} WHERE state < 'active'),"
    f" (SELECT count(*) FROM {JOB} WHERE state = 'active')"
)
SIZES = f"SELECT pg_total_relation_size('{JOB}'), pg_relation_size('{JOB}'), pg_indexes_size('{JOB}')"
BACKENDS = "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
TICKS = os.sysconf("SC_CLK_TCK")
STATS = f"SELECT n_dead_tup, vacuum_count FROM pg_stat_user_tables WHERE relid = '{JOB}'::regclass"
FLAGS = [
    "--concurrency",
    "100",
    "--completed-retention",
    "2",
    "--prune-interval",
    "1",
    "--log-level",
    "warning",
]


@dataclass
class Run:
    label: str
    seconds: float = 0.0
    rate: float = 0.0
    first_tenth: float = 0.0
    last_tenth: float = 0.0
    size: tuple[int, int, int] = (0, 0, 0)
    peak: int = 0
    dead: int = 0
    vacuums: int = 0
    rows: int = 0
    wal: int = 0
    """WAL bytes written server-wide during the run (other databases' included)."""
    db_cpu: float = 0.0
    """CPU seconds of the run database's backends (the worker's and the runner's sessions)."""
    worker_cpu: float = 0.0
    """CPU seconds of the worker process."""


def churn(server_dsn: str, jobs: int, vacuum_interval: float | None, keep: bool) -> Run:
    run = Run("autovacuum off" + (f", --vacuum-interval {vacuum_interval:g}" if vacuum_interval else ""))
    batch = min(20_000, max(2_000, jobs // 50))
    with throwaway_database(server_dsn, keep) as dsn:
        migrate.upgrade(dsn, SCHEMA)
        with psycopg.connect(dsn, autocommit=True, application_name=APPLICATION_NAME) as admin:
            admin.execute(f"ALTER TABLE {JOB} SET (autovacuum_enabled = off)")
            inserted = 0

            def add(n: int) -> None:
                nonlocal inserted
                n = min(n, jobs - inserted)
                if n > 0:
                    admin.execute(WAITING, {"n": n})
                    admin.execute("SELECT pg_notify(%s, 'default')", (channel(SCHEMA),))
                    inserted += n

            add(2 * batch)
            admin.execute(f"ANALYZE {JOB}")
            cpu: dict[int, float] = {}
            own = admin.info.backend_pid
            baseline = backend_cpu(own) or 0.0
            wal_start = admin.execute("SELECT pg_current_wal_lsn()").fetchone()
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            flags = [*FLAGS, *(["--vacuum-interval", f"{vacuum_interval:g}"] if vacuum_interval else [])]
            env = {**os.environ, "PGQUEUE_DATABASE_URL": dsn}
            with tempfile.TemporaryFile() as output:
                worker = subprocess.Popen(work_command(*flags), env=env, stdout=output, stderr=output)
                started = time.monotonic()
                progress: list[tuple[float, int]] = [(started, 0)]
                sized = 0.0
                try:
                    while True:
                        if worker.poll() is not None:
                            output.seek(0)
                            raise SystemExit(f"the worker exited early:\n{output.read().decode()[-3000:]}")
                        now = time.monotonic()
                        if now - sized >= 1.0:
                            sized = now
                            size = admin.execute(SIZES).fetchone()
                            assert size is not None
                            run.peak = max(run.peak, int(size[0]))
                            sample_cpu(admin, cpu)
                        counts = admin.execute(UNFINISHED).fetchone()
                        assert counts is not None
                        waiting, active = int(counts[0]), int(counts[1])
                        progress.append((now, inserted - waiting - active))
                        if inserted < jobs:
                            if waiting < batch:
                                add(2 * batch - waiting)
                        elif waiting == 0 and active == 0:
                            break
                        time.sleep(0.1)
                    run.seconds = time.monotonic() - started
                    sample_cpu(admin, cpu)
                finally:
                    worker.terminate()
                    try:
                        worker.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        worker.kill()
                        worker.wait()
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                run.worker_cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
            run.db_cpu = sum(cpu.values()) - baseline
            assert wal_start is not None
            wal = admin.execute("SELECT pg_current_wal_lsn() - %s::pg_lsn", (wal_start[0],)).fetchone()
            assert wal is not None
            run.wal = int(wal[0])
            run.rate = jobs / run.seconds
            run.first_tenth, run.last_tenth = tenth_rates(progress, jobs)
            time.sleep(1.0)  # the worker's statistics reach the server as its sessions end
            size = admin.execute(SIZES).fetchone()
            stats = admin.execute(STATS).fetchone()
            rows = admin.execute(f"SELECT count(*) FROM {JOB}").fetchone()
            assert size is not None and stats is not None and rows is not None
            run.size = (int(size[0]), int(size[1]), int(size[2]))
            run.peak = max(run.peak, run.size[0])
            run.dead, run.vacuums, run.rows = int(stats[0]), int(stats[1]), int(rows[0])
    return run


def backend_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a server process so far (the server runs on this machine)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


def sample_cpu(admin: psycopg.Connection[Any], cpu: dict[int, float]) -> None:
    """Record the CPU used so far by each backend of the run's database."""
    for (pid,) in admin.execute(BACKENDS).fetchall():
        used = backend_cpu(int(pid))
        if used is not None:
            cpu[int(pid)] = max(cpu.get(int(pid), 0.0), used)


def tenth_rates(progress: list[tuple[float, int]], jobs: int) -> tuple[float, float]:
    """Jobs/s over the second and the ninth tenth of the jobs (10-20 % and 80-90 %: start-up and
    the final drain left out), from (time, jobs done) samples."""

    def rate(start: int, end: int) -> float:
        began = next(t for t, d in progress if d >= start)
        ended = next(t for t, d in progress if d >= end)
        return (end - start) / max(ended - began, 0.1)

    tenth = jobs // 10
    return rate(tenth, 2 * tenth), rate(8 * tenth, 9 * tenth)


def per(jobs: int, seconds: float) -> str:
    return f"{jobs / seconds:,.0f}" if seconds > 0 else "not measured"


def table(runs: list[Run], jobs: int) -> str:
    mb = 2**20
    rows: list[tuple[str, Any]] = [
        ("job table at the end, MB (heap + indexes)", [f"{r.size[0] / mb:.1f}" for r in runs]),
        ("  heap MB / indexes MB", [f"{r.size[1] / mb:.1f} / {r.size[2] / mb:.1f}" for r in runs]),
        ("job table peak, MB", [f"{r.peak / mb:.1f}" for r in runs]),
        ("dead rows at the end", [f"{r.dead:,}" for r in runs]),
        ("rows left", [f"{r.rows:,}" for r in runs]),
        ("vacuums of the job table", [f"{r.vacuums}" for r in runs]),
        ("drain, jobs/s (whole run)", [f"{r.rate:,.0f}" for r in runs]),
        ("drain, jobs/s, 10-20 % of the jobs", [f"{r.first_tenth:,.0f}" for r in runs]),
        ("drain, jobs/s, 80-90 % of the jobs", [f"{r.last_tenth:,.0f}" for r in runs]),
        ("seconds", [f"{r.seconds:.0f}" for r in runs]),
        ("jobs per CPU-second of the database's backends", [per(jobs, r.db_cpu) for r in runs]),
        ("jobs per CPU-second of the worker process", [per(jobs, r.worker_cpu) for r in runs]),
        ("WAL B/job (server-wide, full-page images included)", [f"{r.wal / jobs:,.0f}" for r in runs]),
    ]
    lines = [
        f"| {jobs:,} jobs of churn | " + " | ".join(r.label for r in runs) + " |",
        "|---|" + "---:|" * len(runs),
    ]
    lines += [f"| {name} | " + " | ".join(values) + " |" for name, values in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.vacuum_churn", description=__doc__)
    parser.add_argument("--jobs", type=int, default=200_000, help="jobs per run (default 200,000)")
    parser.add_argument("--vacuum-interval", type=float, default=10.0, help="the second run's (default 10)")
    parser.add_argument("--dsn", help="the server (default: $PGQUEUE_BENCH_DSN, else the local one)")
    parser.add_argument("--keep-db", action="store_true", help="keep the throwaway databases")
    args = parser.parse_args(argv)
    server_dsn = resolve_dsn(args.dsn)
    print(describe_server(server_dsn), file=sys.stderr)
    runs = []
    for interval in (None, args.vacuum_interval):
        print(f"churn of {args.jobs:,} jobs, vacuum interval {interval}...", file=sys.stderr)
        runs.append(churn(server_dsn, args.jobs, interval, args.keep_db))
    print(table(runs, args.jobs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
