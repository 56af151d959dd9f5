"""pgqueue at scale: a big backlog, many finished jobs kept, and the table's size under churn.

Backlogs and finished jobs are written straight into ``pgqueue.job`` by ``INSERT ... SELECT
generate_series`` (a million rows in seconds; what is measured is the worker, not how the
rows arrived), then ``ANALYZE``d. Each drain runs ``pgqueue work`` (not in burst mode), and
stops it with SIGTERM once ``scale_measure`` jobs have completed; the rate is that of the
first ``scale_measure`` completions, on the database's clock.
"""

from __future__ import annotations

import threading
import time

import psycopg

from pgqueue import WorkerConfig
from pgqueue.db.sql import channel

from .harness import APPLICATION_NAME, Bench, Result, throughput
from .pgqueue_scenarios import enqueue_client, reset
from .pgqueue_workers import HUNG, JOB, db_now, finished_since, memory_note, span
from .tasks import NOOP, SCHEMA
from .workers import WorkerRun, api_worker_command, work_command

WAITING = f"""
INSERT INTO {JOB} (type, queue, data)
SELECT '{NOOP}', 'default', jsonb_build_object('n', g) FROM generate_series(1, %(n)s) AS g
"""

# Finished an instant ago: the default retention (an hour) keeps them all through the run.
FINISHED = f"""
INSERT INTO {JOB} (type, queue, data, state, attempts, started_at, finished_at, duration, worker_id)
SELECT '{NOOP}', 'default', jsonb_build_object('n', g), 'completed', 1, now(), now(), 0.0001, 'loaded'
FROM generate_series(1, %(n)s) AS g
"""

SHORT_RETENTION = {"completed_retention": 5.0, "prune_interval": 1.0, "rescue_interval": 1.0}
"""The churn run's short retention, through ``App.run_worker`` (``pgqueue work`` takes the same
as flags). The maintenance loop checks whether a prune is due once per ``rescue_interval``, so
that is shortened too."""
CHURN_PROCESSES = 2


def load(bench: Bench, waiting: int = 0, finished: int = 0) -> None:
    """An empty table, then ``finished`` completed jobs and ``waiting`` runnable ones, analyzed."""
    reset(bench)
    bench.retain_wal_from_now()  # the slot need not keep the load's WAL
    if finished:
        bench.admin.execute(FINISHED, {"n": finished})
    if waiting:
        bench.admin.execute(WAITING, {"n": waiting})
    bench.admin.execute(f"ANALYZE {JOB}")


def drain_first(bench: Bench, key: str, title: str, note: str = "") -> Result:
    """Run ``pgqueue work`` until ``scale_measure`` jobs completed; rate of those first ones."""
    measure, concurrency = bench.sizes.scale_measure, bench.sizes.worker_concurrency
    flags = ["--concurrency", str(concurrency), "--log-level", "warning"]
    with bench.meter(SCHEMA) as meter:
        since = db_now(bench)
        usage = (
            WorkerRun(bench, [work_command(*flags)])
            .start()
            .wait(until=lambda: finished_since(bench, since) >= measure)
        )
    got = span(bench, since, first=measure)
    done, seconds = got.jobs, got.seconds
    if done < measure:
        raise RuntimeError(f"only {done} of {measure} jobs completed")
    result = Result(
        key=key,
        title=title,
        value=done / seconds,
        unit="jobs/s",
        jobs=done,
        seconds=seconds,
        metrics={"cpu_s": usage.cpu_s, "rss_mb": usage.peak_rss_mb},
        note="; ".join(
            n
            for n in (
                note,
                f"first {measure:,} completions; concurrency {concurrency}; "
                f"{got.jobs_per_claim:.1f} jobs per claim",
                usage.hung and HUNG,
            )
            if n
        ),
    )
    meter.apply(result, finished_since(bench, since))
    return bench.record(result)


def enqueue(bench: Bench, key: str, title: str) -> Result:
    """``Task.enqueue`` one job per transaction from one client, as ``pgq.enqueue.c1``."""
    jobs = bench.sizes.scale_enqueue_jobs
    with bench.meter(SCHEMA) as meter:
        reports = bench.group([(enqueue_client, (bench.dsn, jobs))])
    result = throughput(key, title, reports)
    meter.apply(result, sum(r["written"] for r in reports))
    return bench.record(result)


def small_backlog(bench: Bench) -> None:
    """The reference: a table holding only a ``scale_small`` backlog; then single enqueues."""
    small = bench.sizes.scale_small
    load(bench, waiting=small)
    drain_first(bench, "pgq.scale.backlog_small", f"drain, backlog of {small:,}")
    enqueue(bench, "pgq.scale.enqueue_empty", "enqueue 1/tx, 1 client, near-empty table")


def big_backlog(bench: Bench) -> None:
    big = bench.sizes.scale_big
    load(bench, waiting=big)
    drain_first(bench, "pgq.scale.backlog_big", f"drain, backlog of {big:,}")


def retained(bench: Bench) -> None:
    """``scale_big`` completed jobs in the table, plus the small backlog: claim, then enqueue."""
    small, big = bench.sizes.scale_small, bench.sizes.scale_big
    load(bench, waiting=small, finished=big)
    drain_first(bench, "pgq.scale.retained", f"drain, backlog of {small:,}, {big:,} finished jobs kept")
    enqueue(bench, "pgq.scale.enqueue_retained", f"enqueue 1/tx, 1 client, {big:,} finished jobs kept")


# --- churn ---------------------------------------------------------------------------------

# When the table is due a vacuum, by autovacuum's own rule: dead rows over the threshold plus
# the scale factor (the job table sets its own) times the rows.
VACUUM_DUE = f"""
SELECT coalesce(s.n_dead_tup, 0) > current_setting('autovacuum_vacuum_threshold')::float8
       + greatest(c.reltuples, 0) * coalesce(
             (SELECT split_part(o, '=', 2)::float8 FROM unnest(c.reloptions) AS o
              WHERE o LIKE 'autovacuum_vacuum_scale_factor=%'),
             current_setting('autovacuum_vacuum_scale_factor')::float8)
FROM pg_class AS c LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid
WHERE c.oid = '{JOB}'::regclass
"""


class Autovacuum:
    """Autovacuum's part in a churn run.

    With ``autovacuum`` on, only counts how often it vacuumed the job table. With it off (the
    server's choice, which no queue's table survives for long), plays its part: every
    ``autovacuum_naptime`` seconds, if the table is due by autovacuum's own rule, VACUUM it
    from a thread of its own (unthrottled, so a little kinder than autovacuum would be).
    """

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        row = bench.admin.execute(
            "SELECT current_setting('autovacuum')::bool,"
            " (SELECT setting::float8 FROM pg_settings WHERE name = 'autovacuum_naptime'),"
            " (SELECT coalesce(autovacuum_count, 0) FROM pg_stat_user_tables WHERE relid = %s::regclass)",
            (JOB,),
        ).fetchone()
        assert row is not None
        self.on, self.naptime, self.before = bool(row[0]), float(row[1]), int(row[2] or 0)
        self.checked = time.monotonic()
        self.runs = 0
        self.thread: threading.Thread | None = None

    def tick(self) -> None:
        """Called often; acts at most once per naptime."""
        if self.on or time.monotonic() - self.checked < self.naptime:
            return
        self.checked = time.monotonic()
        if self.thread is not None and self.thread.is_alive():
            return
        due = self.bench.admin.execute(VACUUM_DUE).fetchone()
        if due and due[0]:
            self.runs += 1
            self.thread = threading.Thread(target=self._vacuum, name="bench-vacuum", daemon=True)
            self.thread.start()

    def _vacuum(self) -> None:
        with psycopg.connect(
            self.bench.dsn, autocommit=True, application_name=f"{APPLICATION_NAME}-vacuum"
        ) as c:
            c.execute(f"VACUUM {JOB}")

    def finish(self) -> str:
        """Wait for a vacuum in progress; say what vacuumed the table."""
        if self.thread is not None:
            self.thread.join()
        if not self.on:
            return (
                f"autovacuum is off on this server: the runner VACUUMed the table {self.runs} time(s), "
                f"as autovacuum would (due checked every {self.naptime:g} s)"
            )
        row = self.bench.admin.execute(
            "SELECT coalesce(autovacuum_count, 0) FROM pg_stat_user_tables WHERE relid = %s::regclass", (JOB,)
        ).fetchone()
        return f"autovacuum vacuumed the table {int(row[0] if row else 0) - self.before} time(s)"


SIZES = f"""
SELECT pg_total_relation_size('{JOB}'), pg_relation_size('{JOB}'), pg_indexes_size('{JOB}')
"""


def churn(bench: Bench, short_retention: bool) -> Result:
    """``churn_jobs`` jobs pass through the table (topped up every 0.1 s as the workers take
    them, the backlog kept near two batches) and are worked off by two worker processes at
    concurrency ``worker_concurrency``; the table's size is read during and after.

    With the defaults (``pgqueue work``: completed jobs kept an hour, pruned every 60 s), or
    with a short retention through ``App.run_worker`` (:data:`SHORT_RETENTION`).
    """
    total, concurrency = bench.sizes.churn_jobs, bench.sizes.worker_concurrency
    batch = min(20_000, max(2_000, total // 50))
    reset(bench)
    if short_retention:
        commands = [api_worker_command(concurrency=concurrency, **SHORT_RETENTION)] * CHURN_PROCESSES
    else:
        flags = [
            "--processes",
            str(CHURN_PROCESSES),
            "--concurrency",
            str(concurrency),
            "--log-level",
            "warning",
        ]
        commands = [work_command(*flags)]
    inserted = 0

    def add(n: int) -> None:
        nonlocal inserted
        n = min(n, total - inserted)
        if n > 0:
            bench.admin.execute(WAITING, {"n": n})
            bench.admin.execute("SELECT pg_notify(%s, 'default')", (channel(SCHEMA),))
            inserted += n

    add(2 * batch)
    bench.admin.execute(f"ANALYZE {JOB}")
    vacuum = Autovacuum(bench)
    peak = [0, 0, 0]
    state = {"checked": 0.0, "sized": 0.0}

    def step() -> bool:
        # Called every 50 ms while the workers run; counts at most 2 * batch index entries.
        now = time.monotonic()
        if now - state["checked"] < 0.1:
            return False
        state["checked"] = now
        vacuum.tick()
        if now - state["sized"] >= 1.0:
            state["sized"] = now
            sizes = bench.admin.execute(SIZES).fetchone()
            assert sizes is not None
            if sizes[0] > peak[0]:
                peak[:] = [int(v) for v in sizes]
            bench.retain_wal_from_now()
        row = bench.admin.execute(
            f"SELECT (SELECT count(*) FROM (SELECT 1 FROM {JOB} WHERE state < 'active' LIMIT %(n)s) AS w),"
            f" EXISTS (SELECT 1 FROM {JOB} WHERE state = 'active')",
            {"n": 2 * batch},
        ).fetchone()
        assert row is not None
        waiting, active = int(row[0]), bool(row[1])
        if inserted < total:
            if waiting < batch:
                add(2 * batch - waiting)
            return False
        return waiting == 0 and not active

    usage = WorkerRun(bench, commands, timeout=3600).start().wait(until=step)
    seconds = usage.wall_s
    vacuumed = vacuum.finish()
    size = bench.admin.execute(SIZES).fetchone()
    counts = bench.admin.execute(
        f"SELECT count(*), count(*) FILTER (WHERE state = 'completed') FROM {JOB}"
    ).fetchone()
    dead = bench.admin.execute(
        "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = %s::regclass", (JOB,)
    ).fetchone()
    assert size is not None and counts is not None and dead is not None
    mb = [v / 2**20 for v in size]
    peak_mb = max(peak[0], size[0]) / 2**20
    if short_retention:
        how = ", ".join(f"{k} {v:g} s" for k, v in SHORT_RETENTION.items())
    else:
        defaults = WorkerConfig()
        how = (
            f"pruning defaults (completed kept {defaults.completed_retention:g} s, "
            f"pruned every {defaults.prune_interval:g} s)"
        )
    return bench.record(
        Result(
            key="pgq.churn.short" if short_retention else "pgq.churn.defaults",
            title=f"table after {total:,} jobs of churn, "
            f"{'short retention' if short_retention else 'defaults'}",
            value=mb[0],
            unit="MB",
            jobs=total,
            seconds=seconds,
            metrics={
                "table_mb": mb[0],
                "heap_mb": mb[1],
                "index_mb": mb[2],
                "peak_mb": peak_mb,
                "rows": float(counts[0]),
                "rate": total / seconds,
            },
            note=(
                f"{how}; {CHURN_PROCESSES} processes × concurrency {concurrency}; heap {mb[1]:.1f} MB + "
                f"indexes {mb[2]:.1f} MB (+ TOAST/FSM/VM); peak {peak_mb:.1f} MB; {counts[0]:,} rows left "
                f"({counts[1]:,} completed, {dead[0]:,} dead); {vacuumed}; "
                f"{total / seconds:,.0f} jobs/s over "
                f"{seconds:.0f} s incl. start-up; {memory_note(usage, (seconds / 10, seconds))}"
                + (f"; {HUNG}" if usage.hung else "")
            ),
        )
    )
