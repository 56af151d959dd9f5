"""pgqueue's worker scenarios: drain, pick-up latency, many workers.

Each runs real ``pgqueue work`` processes (:mod:`benchmarks.workers`) on the run's database and
reads what they did back from the job table: rates are spans on the database's clock, from the
first claim (``started_at``) to the last completion (``finished_at``), so process start-up is
left out, as the ceiling's processes start their clocks once connected. The scale scenarios
are in :mod:`benchmarks.pgqueue_scale`.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from pgqueue.db.sql import channel, queries
from pgqueue.worker.aio import new_loop

from .clock import now_ns
from .harness import APPLICATION_NAME, Bench, Ready, Result, percentile
from .pgqueue_scenarios import WARMUP, reset
from .tasks import NOOP, SCHEMA, SLEEP, STAMP, build_app
from .workers import Usage, WorkerRun, wait_for, work_command

JOB = f"{SCHEMA}.job"
MANY_PROCESSES = 8
MANY_CONCURRENCY = 50

_startup_cpu: dict[tuple[str, int], float] = {}


# --- reading the job table ------------------------------------------------------------------


def db_now(bench: Bench) -> datetime:
    row = bench.admin.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    at: datetime = row[0]
    return at


@dataclass(frozen=True)
class Mark:
    """The database's clock and this machine's monotonic clock read together, to place
    database timestamps on a worker run's timeline (within a round trip)."""

    db: datetime
    monotonic: float

    @classmethod
    def now(cls, bench: Bench) -> Mark:
        db = db_now(bench)
        return cls(db, time.monotonic())

    def on(self, run: WorkerRun, when: datetime) -> float:
        """``when`` as seconds since ``run`` started."""
        return self.monotonic + (when - self.db).total_seconds() - run.started


def finished_since(bench: Bench, since: datetime) -> int:
    """Jobs finished since ``since`` (walks the finished-jobs index only)."""
    row = bench.admin.execute(
        f"SELECT count(*) FROM {JOB} WHERE state > 'active' AND finished_at >= %s", (since,)
    ).fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class Span:
    """What the jobs claimed since some moment tell about the run that worked them."""

    jobs: int
    """Jobs completed (the first ``first`` to complete, when given)."""
    first_claim: datetime
    last_finish: datetime
    """When the last of those ``jobs`` completed."""
    processes: int
    """Worker processes that claimed at least one of the jobs."""
    lag: float
    """Seconds between the first claims of the first and the last of those processes."""
    claims: int
    """Claim transactions that took the completed jobs (all of them, not only the first
    ``first``): jobs claimed together share ``started_at`` (the transaction's ``now()``) and worker."""
    completed: int
    """All the jobs claimed since the moment and completed."""
    all_started: datetime
    """When the last of the processes made its first claim: from then on, all of them worked."""
    jobs_all_started: int
    """Of the ``jobs``, those that completed from ``all_started`` on."""

    @property
    def jobs_per_claim(self) -> float:
        return self.completed / self.claims

    @property
    def seconds(self) -> float:
        return (self.last_finish - self.first_claim).total_seconds()

    @property
    def working(self) -> tuple[int, float]:
        """(jobs, seconds) with every process working: from the last process's first claim (each
        process's start-up left out, the last one's as much as the first one's) to the last
        completion; one process: the whole span. The whole span too when fewer than half the
        jobs fall in that window (a process that came very late)."""
        window = (self.last_finish - self.all_started).total_seconds()
        if self.jobs_all_started * 2 < self.jobs or window <= 0:
            return self.jobs, self.seconds
        return self.jobs_all_started, window


def span(bench: Bench, since: datetime, first: int | None = None) -> Span:
    """The jobs claimed since ``since`` and completed, on the database's clock."""
    row = bench.admin.execute(
        f"""
        WITH done AS (
            SELECT started_at, finished_at, worker_id FROM {JOB}
            WHERE state = 'completed' AND started_at >= %(since)s
        ), firsts AS (
            SELECT finished_at FROM done ORDER BY finished_at LIMIT %(first)s
        ), starts AS (
            SELECT min(started_at) AS at FROM done GROUP BY worker_id
        )
        SELECT (SELECT count(*) FROM firsts), (SELECT min(started_at) FROM done),
               (SELECT max(finished_at) FROM firsts), (SELECT count(*) FROM starts),
               extract(epoch FROM (SELECT max(at) - min(at) FROM starts)),
               (SELECT count(DISTINCT (worker_id, started_at)) FROM done), (SELECT count(*) FROM done),
               (SELECT max(at) FROM starts),
               (SELECT count(*) FROM firsts WHERE finished_at >= (SELECT max(at) FROM starts))
        """,
        {"since": since, "first": first},
    ).fetchone()
    assert row is not None
    if not row[0]:
        raise RuntimeError("no job was completed")
    jobs, first_claim, last_finish, processes, lag, claims, completed, all_started, after = row
    return Span(
        int(jobs), first_claim, last_finish, int(processes), float(lag or 0.0), int(claims), int(completed),
        all_started, int(after),
    )


def states(bench: Bench) -> dict[str, int]:
    rows = bench.admin.execute(f"SELECT state::text, count(*) FROM {JOB} GROUP BY 1").fetchall()
    return {state: int(count) for state, count in rows}


def load_with_enqueue_many(bench: Bench, task: str, jobs: int, analyze: bool = True) -> None:
    """An empty job table, then ``jobs`` waiting jobs of ``task`` by ``enqueue_many`` (what an
    application would do), then fresh statistics, as the ceiling's drain gets."""
    reset(bench)
    app = build_app(bench.dsn)
    try:
        app.tasks[task].enqueue_many([{"n": n} for n in range(jobs)])
    finally:
        app.close()
    if analyze:
        bench.admin.execute(f"ANALYZE {JOB}")


def startup_cpu(bench: Bench, processes: int) -> float:
    """CPU seconds ``pgqueue work --burst`` spends starting and stopping with nothing to do
    (imports, connections, schema check), measured once per process count: the drains'
    per-job CPU leaves it out."""
    key = (bench.dsn, processes)
    if key not in _startup_cpu:
        reset(bench)
        flags = ["--burst", "--log-level", "warning"]
        if processes > 1:
            flags += ["--processes", str(processes)]
        _startup_cpu[key] = WorkerRun(bench, [work_command(*flags)]).start().wait(done=lambda: True).cpu_s
    return _startup_cpu[key]


HUNG = "the worker did not exit by itself once its work was over, and was killed"


def memory_note(usage: Usage, window: tuple[float, float] = (0.0, float("inf"))) -> str:
    """Peak RSS per process, and how RSS moved over ``window`` (seconds since the run started)."""
    first, last, peak = usage.memory(*window)
    return (
        f"peak RSS {usage.peak_rss_mb:.0f} MB/process; over the drain RSS {first:.0f} → {last:.0f} MB"
        f" (peak so far {peak:.0f})"
    )


# --- drain ---------------------------------------------------------------------------------


def drain(
    bench: Bench, task: str, processes: int, log_level: str = "warning", async_commit: bool = False,
    concurrency: int | None = None, claim_ahead: bool = True,
) -> Result:
    """``drain_jobs`` waiting no-op jobs worked off by ``pgqueue work --burst`` with
    ``--processes N`` (one supervisor, N worker processes), concurrency ``worker_concurrency``
    unless given (a worker claims as many jobs at once as it has free slots)."""
    jobs = bench.sizes.drain_jobs
    tuned = concurrency is not None
    concurrency = concurrency or bench.sizes.worker_concurrency
    startup = startup_cpu(bench, processes)
    load_with_enqueue_many(bench, task, jobs)
    flags = ["--burst", "--concurrency", str(concurrency), "--log-level", log_level]
    flags += ["--async-commit"] if async_commit else []
    flags += [] if claim_ahead else ["--no-claim-ahead"]
    if processes > 1:
        flags += ["--processes", str(processes)]
    with bench.meter(SCHEMA) as meter:
        mark = Mark.now(bench)
        run = WorkerRun(bench, [work_command(*flags)]).start()
        usage = run.wait(done=lambda: finished_since(bench, mark.db) >= jobs)
    left = states(bench)
    if left != {"completed": jobs}:
        raise RuntimeError(f"the drain left {left}, expected {jobs} completed jobs")
    got = span(bench, mark.db)
    done, seconds = got.working
    from_first_claim = got.jobs / got.seconds
    kind = "async" if task == NOOP else "sync"
    info = log_level != "warning"
    key = (f"pgq.drain.{kind}.p{processes}" + (f".{log_level}" if info else "")
           + (".async_commit" if async_commit else "") + (f".c{concurrency}" if tuned else "")
           + ("" if claim_ahead else ".no_claim_ahead"))
    window = (mark.on(run, got.first_claim), mark.on(run, got.last_finish))
    early, end, peak = usage.memory(*window)
    notes = [
        f"concurrency {concurrency}",
        f"{got.jobs_per_claim:.1f} jobs per claim",
        "1 process" if processes == 1 else f"--processes {processes}",
        f"--log-level {log_level}" + (" (the default)" if info else ""),
        *(["--async-commit"] if async_commit else []),
        *([] if claim_ahead else ["--no-claim-ahead"]),
        f"worker CPU {usage.cpu_s:.2f} s ({startup:.2f} s of it start-up)",
        memory_note(usage, window),
    ]
    if processes > 1:
        notes.append(
            f"{got.processes} processes took jobs, the last {got.lag * 1000:.0f} ms after the first; "
            f"timed from the last one's first claim ({done:,} of the {got.jobs:,} jobs); from the first "
            f"one's: {from_first_claim:,.0f} jobs/s"
        )
    if usage.hung:
        notes.append(HUNG)
    result = Result(
        key=key,
        title=f"drain, {kind} no-op, {processes} process{'es' if processes > 1 else ''}"
        + (f", {log_level.upper()} logs" if info else "") + (", --async-commit" if async_commit else "")
        + (f", --concurrency {concurrency}" if tuned else "") + ("" if claim_ahead else ", --no-claim-ahead"),
        value=done / seconds,
        unit="jobs/s",
        jobs=done,
        seconds=seconds,
        metrics={
            "cpu_s": usage.cpu_s,
            "rss_mb": usage.peak_rss_mb,
            "from_first_claim": from_first_claim,
            "rss_drain_start_mb": early,
            "rss_drain_end_mb": end,
            "rss_growth_mb": end - early,
            "rss_drain_peak_mb": peak,
            "start_lag_ms": got.lag * 1000,
            "jobs_per_claim": got.jobs_per_claim,
        },
        client_cpu_us_per_job=max(0.0, usage.cpu_s - startup) / got.jobs * 1e6,
        note="; ".join(notes),
    )
    meter.apply(result, got.jobs)  # the WAL of every job the run worked
    return bench.record(result)


# --- pick-up latency ------------------------------------------------------------------------


def stamp_producer(ready: Ready, dsn: str, events: int, rate: float) -> list[tuple[int, int, int]]:
    """Enqueue STAMP jobs with ``Task.enqueue`` (one transaction each, wake-ups on), ``rate``
    a second on a fixed schedule; return ``(job id, call made, call returned)`` per job."""
    app = build_app(dsn)
    task = app.tasks[STAMP]
    out: list[tuple[int, int, int]] = []
    try:
        for n in range(-WARMUP, 0):
            task.enqueue(n=n)
        ready()
        time.sleep(0.2)  # the worker runs the warm-up jobs meanwhile
        interval = 1e9 / rate
        origin = now_ns()
        for seq in range(events):
            delay = origin + seq * interval - now_ns()
            if delay > 0:
                time.sleep(delay / 1e9)
            sent = now_ns()
            job_id = task.enqueue(n=seq)
            assert job_id is not None  # no unique key: always a new job
            out.append((job_id, sent, now_ns()))
    finally:
        app.close()
    return out


def wake_listener(ready: Ready, dsn: str, seconds: float) -> list[int]:
    """LISTEN on pgqueue's channel beside the worker, for ``seconds`` after the group starts;
    return when each wake-up arrived: it splits the pick-up latency into the enqueuer's part
    (commit → wake-up delivered) and the worker's (wake-up → handler started)."""
    received = []
    with psycopg.connect(dsn, autocommit=True, application_name=f"{APPLICATION_NAME}-listener") as conn:
        conn.execute(f"LISTEN {channel(SCHEMA)}")
        ready()
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            for _ in conn.notifies(timeout=left):
                received.append(now_ns())
    return received


def claim_listener(ready: Ready, dsn: str, events: int, seconds: float) -> dict[int, int]:
    """The floor under the worker's pick-up: an event loop (uvloop when installed, as the
    worker's default) with a LISTEN connection and a claiming one that, on each wake-up, runs
    the worker's one-queue claim (``claim_one``, durable commit) and notes when it returned;
    nothing around them (no pool, no claim loop, no handler, no outcome recorded). Return when
    each job was claimed, by id."""
    loop = new_loop("auto")
    try:
        return loop.run_until_complete(_claim_listener(ready, dsn, events, seconds))
    finally:
        loop.close()


async def _claim_listener(ready: Ready, dsn: str, events: int, seconds: float) -> dict[int, int]:
    claimed: dict[int, int] = {}
    real = 0
    params = {"queue": "default", "limit": 10, "lease_seconds": 60.0, "worker_id": "bench-floor"}
    name = f"{APPLICATION_NAME}-floor"
    async with (
        await psycopg.AsyncConnection.connect(dsn, autocommit=True, application_name=name) as listener,
        await psycopg.AsyncConnection.connect(dsn, autocommit=True, application_name=name) as claimer,
    ):
        await listener.execute(f"LISTEN {channel(SCHEMA)}")
        claim = queries(SCHEMA).claim_one
        ready()
        async for _ in listener.notifies(timeout=seconds):  # seconds in all, not per notification
            cur = await claimer.execute(claim, params)
            row = await cur.fetchone()  # claim_one answers one row, its jobs (or NULL) third
            at = now_ns()
            assert row is not None
            for job in row[2] or ():
                claimed[job[0]] = at
                real += job[3]["n"] >= 0  # the producer's warm-up jobs count from -WARMUP
            if real >= events:
                break
    return claimed


def latency_floor(bench: Bench) -> Result:
    """Pick-up with :func:`claim_listener` in place of the worker, from the same producer as
    :func:`latency`: what the event loop, the driver and the claim statement cost by themselves."""
    reset(bench)
    events, rate = bench.sizes.latency_events, bench.sizes.latency_rate
    sent, claimed = bench.group(
        [
            (stamp_producer, (bench.dsn, events, rate)),
            (claim_listener, (bench.dsn, events, events / rate + 30)),
        ],
        timeout=events / rate + 120,
    )
    missing = [job_id for job_id, _, _ in sent if job_id not in claimed]
    if missing:
        raise RuntimeError(f"{len(missing)} of {events} jobs were not claimed, e.g. {missing[:5]}")
    sample = [(claimed[job_id] - returned) / 1e6 for job_id, _, returned in sent]
    reset(bench)
    return bench.record(
        Result(
            key="pgq.latency.floor",
            title="pick-up floor, commit → claim returned: LISTEN + claim_one on an event loop, no worker",
            value=percentile(sample, 50),
            unit="ms",
            jobs=events,
            metrics={"p95": percentile(sample, 95), "p99": percentile(sample, 99), "max": max(sample)},
            note=f"{events} at {rate:g}/s, enqueued as for the worker's pick-up; one claim per wake-up",
        )
    )


def _after(times: list[int], moment: int) -> int | None:
    """The first of the sorted ``times`` at or after ``moment``."""
    i = bisect.bisect_left(times, moment)
    return times[i] if i < len(times) else None


def _worker_ready(bench: Bench, listen: bool) -> bool:
    row = bench.admin.execute(
        f"""
        SELECT (SELECT count(*) FROM {SCHEMA}.worker),
               (SELECT count(*) FROM pg_stat_activity
                WHERE datname = current_database() AND application_name = 'pgqueue-listener'
                  AND query ILIKE 'LISTEN%%')
        """
    ).fetchone()
    assert row is not None
    return row[0] >= 1 and (row[1] >= 1 or not listen)


def _completed(bench: Bench, ids: list[int]) -> int:
    row = bench.admin.execute(
        f"SELECT count(*) FROM {JOB} WHERE id = ANY(%s) AND state = 'completed'", (ids,)
    ).fetchone()
    return int(row[0]) if row else 0


def latency(bench: Bench, listen: bool, async_commit: bool = False) -> Result:
    """An idle ``pgqueue work`` (default concurrency and poll interval; with ``async_commit``,
    ``--async-commit``); ``latency_events`` jobs enqueued one per transaction at
    ``latency_rate``/s. Latency: from the moment the producer's ``enqueue`` returned
    (committed) to the moment the handler started."""
    reset(bench)
    events, rate = bench.sizes.latency_events, bench.sizes.latency_rate
    flags = ["--log-level", "warning"] + ([] if listen else ["--no-listen"])
    flags += ["--async-commit"] if async_commit else []
    run = WorkerRun(bench, [work_command(*flags)]).start()
    try:
        wait_for(lambda: _worker_ready(bench, listen), "the worker to start", run=run)
        members: list[tuple[Any, tuple[Any, ...]]] = [(stamp_producer, (bench.dsn, events, rate))]
        if listen:
            members.append((wake_listener, (bench.dsn, events / rate + 1.5)))
        sent, *woken = bench.group(members, timeout=events / rate + 120)
        ids = [job_id for job_id, _, _ in sent]
        wait_for(lambda: _completed(bench, ids) == len(ids), "the jobs to be run", timeout=60, run=run)
    except BaseException:
        run.kill()
        raise
    usage = run.wait(until=lambda: True)
    started: dict[int, int] = dict(
        bench.admin.execute(f"SELECT id, output FROM {JOB} WHERE id = ANY(%s)", (ids,)).fetchall()
    )
    sample = [(started[job_id] - returned) / 1e6 for job_id, _, returned in sent]
    from_send = [(started[job_id] - at) / 1e6 for job_id, at, _ in sent]
    mode = ("LISTEN" if listen else "--no-listen (poll every 1 s, the default)") + (
        ", --async-commit" if async_commit else ""
    )
    split = ""
    metrics: dict[str, float] = {}
    if woken:
        wakes = sorted(woken[0])
        pairs = [(_after(wakes, at), returned, started[job_id]) for job_id, at, returned in sent]
        to_wake = [(wake - returned) / 1e6 for wake, returned, _ in pairs if wake is not None]
        to_start = [(start - wake) / 1e6 for wake, _, start in pairs if wake is not None and wake <= start]
        if to_wake and to_start:
            metrics = {"p50_to_wake": percentile(to_wake, 50), "p50_wake_to_start": percentile(to_start, 50)}
            split = (
                f"; commit → wake-up received p50 {metrics['p50_to_wake']:.2f}, wake-up → handler "
                f"started p50 {metrics['p50_wake_to_start']:.2f} (a listener beside the worker)"
            )
    return bench.record(
        Result(
            key=f"pgq.latency.{'listen' if listen else 'poll'}{'.async_commit' if async_commit else ''}",
            title=f"pick-up, commit → handler started, {mode}",
            value=percentile(sample, 50),
            unit="ms",
            jobs=events,
            metrics={
                "p95": percentile(sample, 95),
                "p99": percentile(sample, 99),
                "max": max(sample),
                "p50_from_send": percentile(from_send, 50),
                "p99_from_send": percentile(from_send, 99),
                **metrics,
            },
            note=(
                f"{events} at {rate:g}/s; concurrency 10 (the default); from the enqueue call made: p50 "
                f"{percentile(from_send, 50):.2f}, p99 {percentile(from_send, 99):.2f}"
                + split
                + (f"; {HUNG}" if usage.hung else "")
            ),
        )
    )


# --- many workers ---------------------------------------------------------------------------


def _registered(bench: Bench, processes: int) -> bool:
    row = bench.admin.execute(
        f"""
        SELECT (SELECT count(*) FROM {SCHEMA}.worker),
               (SELECT count(*) FROM pg_stat_activity
                WHERE datname = current_database() AND application_name = 'pgqueue-listener'
                  AND query ILIKE 'LISTEN%%')
        """
    ).fetchone()
    assert row is not None
    return bool(row[0] >= processes and row[1] >= processes)


def many_workers(bench: Bench) -> Result:
    """``pgqueue work --processes 8 --concurrency 50``, handlers that sleep 10 ms: the workers
    start idle and listening; then ``many_jobs`` jobs arrive in one ``enqueue_many``."""
    jobs = bench.sizes.many_jobs
    reset(bench)
    flags = [
        "--processes",
        str(MANY_PROCESSES),
        "--concurrency",
        str(MANY_CONCURRENCY),
        "--log-level",
        "warning",
    ]
    run = WorkerRun(bench, [work_command(*flags)]).start()
    try:
        wait_for(lambda: _registered(bench, MANY_PROCESSES), "8 workers to start", timeout=120, run=run)
        idle_connections = run.peak_connections
        mark = Mark.now(bench)
        app = build_app(bench.dsn)
        try:
            app.tasks[SLEEP].enqueue_many([{"n": n} for n in range(jobs)])
        finally:
            app.close()
        usage = run.wait(until=lambda: finished_since(bench, mark.db) >= jobs)
    except BaseException:
        run.kill()
        raise
    got = span(bench, mark.db)
    done, seconds = got.jobs, got.seconds
    if done != jobs:
        raise RuntimeError(f"{done} of {jobs} jobs completed")
    bound = MANY_PROCESSES * MANY_CONCURRENCY / 0.010
    return bench.record(
        Result(
            key="pgq.many_workers",
            title=f"{MANY_PROCESSES} processes × concurrency {MANY_CONCURRENCY}, 10 ms handlers",
            value=done / seconds,
            unit="jobs/s",
            jobs=done,
            seconds=seconds,
            metrics={
                "connections": usage.peak_connections,
                "cpu_s": usage.cpu_s,
                "rss_mb": usage.peak_rss_mb,
            },
            client_cpu_us_per_job=None,
            note=(
                f"--processes {MANY_PROCESSES}; peak {usage.peak_connections} connections "
                f"({idle_connections} while idle); handler-bound limit {bound:,.0f} jobs/s; "
                f"{got.processes} processes took jobs, {got.jobs_per_claim:.1f} jobs per claim; "
                "jobs enqueued to running workers (no ANALYZE); "
                f"worker CPU {usage.cpu_s:.1f} s; "
                f"{memory_note(usage, (mark.on(run, got.first_claim), mark.on(run, got.last_finish)))}"
                + (f"; {HUNG}" if usage.hung else "")
            ),
        )
    )
