"""``pgqueue demo``: user registrations that enqueue jobs in their own transaction, worked off live.

Each simulated registration inserts a user row and enqueues ``send-welcome-email``,
``notify-slack`` (an async handler) and ``sync-crm`` in the same transaction; a few
registrations roll back, and their jobs never exist. A worker runs in this process while
the registrations arrive; some handlers are slow, some fail their first attempts and are
retried, a few fail for good. It ends with a summary read back from the job rows.

The demo's users table and its jobs live in a schema of their own (``pgqueue_demo``),
dropped and re-created on each run, so runs never mix and real queues are not touched.
Everything here is what an application would write: only the users table's SQL is the
demo's own.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import psycopg
from psycopg import sql

from .. import logs
from ..app import App
from ..config import redact
from ..db import ops
from ..db.driver import arun
from ..errors import ConfigurationError
from ..job import Job, JobState
from ..migrate import upgrade
from ..settings import WorkerConfig, configured_database_url, embedded_pgdata, resolve_database_url

MARKER = "created by pgqueue demo"
"""The comment on the demo's schema: only a schema carrying it is ever dropped."""

FINAL = (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


class TemporaryError(Exception):
    """A failure worth retrying (the demo's stand-in for a timeout or a 5xx)."""


@dataclass(frozen=True)
class Plan:
    """What will happen to one registration's jobs, decided up front so a run is reproducible."""

    email_seconds: float
    email_failures: int
    slack_seconds: float
    slack_failures: int
    crm_seconds: float
    crm_failures: int
    """Attempts of sync-crm that fail; 3 or more means it fails for good (max_attempts is 3)."""
    rolls_back: bool


def make_plans(users: int, seed: int = 7) -> list[Plan]:
    rng = random.Random(seed)
    plans = []
    for _ in range(users):
        slow = rng.random() < 0.1
        plans.append(
            Plan(
                email_seconds=rng.uniform(0.15, 0.3) if slow else rng.uniform(0.02, 0.06),
                email_failures=1 if rng.random() < 0.12 else 0,
                slack_seconds=rng.uniform(0.005, 0.025),
                slack_failures=1 if rng.random() < 0.1 else 0,
                crm_seconds=rng.uniform(0.15, 0.3) if rng.random() < 0.08 else rng.uniform(0.03, 0.1),
                crm_failures=rng.choice((1, 2)) if rng.random() < 0.15 else (3 if rng.random() < 0.05 else 0),
                rolls_back=rng.random() < 0.06,
            )
        )
    return plans


@dataclass
class DemoTasks:
    """The demo's App and its three handlers, which follow the plans and count their attempts."""

    app: App
    plans: dict[int, Plan] = field(default_factory=dict)
    attempts: dict[tuple[str, int], int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def attempt(self, task: str, user_id: int) -> int:
        with self.lock:
            n = self.attempts.get((task, user_id), 0) + 1
            self.attempts[(task, user_id)] = n
            return n


def build_app(schema: str) -> DemoTasks:
    """The App a real project would define in its tasks module."""
    app = App(schema=schema, max_attempts=3, retry_delay=0.2, retry_backoff=True, retry_delay_max=2.0)
    demo = DemoTasks(app)

    @app.task("send-welcome-email", queue="emails")
    def send_welcome_email(user_id: int, email: str) -> dict[str, Any]:
        plan = demo.plans[user_id]
        attempt = demo.attempt("email", user_id)
        time.sleep(plan.email_seconds)
        if attempt <= plan.email_failures:
            raise TemporaryError("SMTP server answered 451 4.7.1: try again later")
        return {"to": email, "message_id": f"<welcome-{user_id}@example.com>"}

    @app.task("notify-slack", queue="notifications")
    async def notify_slack(user_id: int, email: str) -> None:
        plan = demo.plans[user_id]
        attempt = demo.attempt("slack", user_id)
        await asyncio.sleep(plan.slack_seconds)
        if attempt <= plan.slack_failures:
            raise TemporaryError("Slack answered 429 Too Many Requests")

    @app.task("sync-crm", queue="crm")
    def sync_crm(user_id: int, email: str) -> dict[str, Any]:
        plan = demo.plans[user_id]
        attempt = demo.attempt("crm", user_id)
        time.sleep(plan.crm_seconds)
        if plan.crm_failures >= 3:
            raise ValueError(f"CRM refused contact {email}: the address is on its block list")
        if attempt <= plan.crm_failures:
            raise TemporaryError("CRM API timed out after 10 s")
        return {"crm_id": f"C-{100000 + user_id}"}

    return demo


# --- the demo's own table --------------------------------------------------------------------


def prepare_schema(url: str, schema: str) -> None:
    """Drop the previous run's demo schema (only one the demo created), then create and migrate it."""
    ident = sql.Identifier(schema)
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = %s", (schema,)
        ).fetchone()
        if row is not None:
            if row[0] != MARKER:
                raise ConfigurationError(
                    f"schema {schema!r} exists and was not created by pgqueue demo; "
                    "the demo drops its schema on each run, so choose another --schema"
                )
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(ident))
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
        conn.execute(sql.SQL("COMMENT ON SCHEMA {} IS {}").format(ident, sql.Literal(MARKER)))
    upgrade(url, schema)
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {}.users (id integer PRIMARY KEY, email text NOT NULL UNIQUE, "
                "created_at timestamptz NOT NULL DEFAULT now())"
            ).format(ident)
        )


def register_users(
    url: str, demo: DemoTasks, plans: list[Plan], interval: float, stats: Stats, stop: threading.Event
) -> None:
    """The web application's side: one transaction per registration, jobs included."""
    app = demo.app
    tasks = [app.tasks[name] for name in ("send-welcome-email", "notify-slack", "sync-crm")]
    insert = sql.SQL("INSERT INTO {}.users (id, email) VALUES (%s, %s)").format(sql.Identifier(app.schema))
    with psycopg.connect(url, connect_timeout=10, application_name="pgqueue-demo-web") as conn:
        for user_id, plan in enumerate(plans, start=1):
            email = f"user{user_id}@example.com"
            demo.plans[user_id] = plan
            try:
                with conn.transaction():
                    conn.execute(insert, (user_id, email))
                    ids = [task.enqueue(conn=conn, user_id=user_id, email=email) for task in tasks]
                    if plan.rolls_back:
                        raise RollBack()
            except RollBack:
                stats.rolled_back += 1
            else:
                stats.job_ids.extend(i for i in ids if i is not None)
                stats.committed += 1
            if stop.wait(interval):
                return


class RollBack(Exception):
    """The registration fails after its jobs were enqueued (say, a payment check): all of it rolls back."""


# --- running and reporting -------------------------------------------------------------------


@dataclass
class Stats:
    committed: int = 0
    rolled_back: int = 0
    job_ids: list[int] = field(default_factory=list)


class Progress:
    """One updating line on a terminal; a line a second otherwise."""

    def __init__(self, out: TextIO, total_jobs: int) -> None:
        self.out = out
        self.tty = out.isatty()
        self.total = total_jobs
        self.last_line = 0.0
        self.started = time.monotonic()
        self.width = 0

    def show(self, counts: dict[str, int], stats: Stats, final: bool = False) -> None:
        now = time.monotonic()
        if not self.tty and not final and now - self.last_line < 1.0:
            return
        self.last_line = now
        done = counts.get("completed", 0)
        failed = counts.get("failed", 0)
        text = (
            f"  {now - self.started:5.1f}s  users {stats.committed + stats.rolled_back:>4}/{self.total:<4}  "
            f"jobs: {done} completed, {counts.get('active', 0)} running, {counts.get('retry', 0)} retrying, "
            f"{counts.get('created', 0)} waiting, {failed} failed"
        )
        if self.tty:
            pad = max(self.width - len(text), 0)
            self.width = len(text)
            self.out.write("\r" + text + " " * pad + ("\n" if final else ""))
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def clear(self) -> None:
        if self.tty and self.width:
            self.out.write("\r" + " " * self.width + "\r")
            self.width = 0


class _AboveProgress(logging.Handler):
    """Worker log lines for a person watching: printed above the progress line."""

    def __init__(self, progress: Progress) -> None:
        super().__init__(logging.ERROR)
        self.progress = progress
        self.addFilter(logs.RedactFilter())

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "job_id", None) is not None:
            return  # a job's outcome: the progress line and the summary show those
        self.progress.clear()
        self.progress.out.write(f"  ! {record.getMessage()}\n")


async def _counts(conn: psycopg.AsyncConnection[Any], schema: str) -> dict[str, int]:
    per_queue = await arun(conn, ops.counts(schema))
    totals: dict[str, int] = {}
    for states in per_queue.values():
        for state, n in states.items():
            totals[state] = totals.get(state, 0) + n
    return totals


async def work_off(
    demo: DemoTasks,
    url: str,
    plans: list[Plan],
    concurrency: int,
    interval: float,
    progress: Progress,
    stats: Stats,
) -> bool:
    """Register users in a thread while a worker runs here; stop the worker once every job is final.

    Returns whether the run was interrupted (Ctrl-C) before every job was final.
    """
    from ..worker import Worker

    app = demo.app
    worker = Worker(
        app.runtime(), WorkerConfig(concurrency=concurrency, poll_interval=0.25, rescue_interval=1.0)
    )
    running = asyncio.create_task(worker.run())
    stop = threading.Event()
    registering = asyncio.ensure_future(
        asyncio.to_thread(register_users, url, demo, plans, interval, stats, stop)
    )
    stopped_by_demo = False
    async with await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=10) as conn:
        while not running.done():
            await asyncio.wait({running}, timeout=0.1)
            counts = await _counts(conn, app.schema)
            progress.show(counts, stats)
            waiting = sum(counts.get(s, 0) for s in ("created", "retry", "active"))
            if registering.done() and not waiting and not stopped_by_demo:
                stopped_by_demo = True
                worker.stop()
        stop.set()  # the worker stopped on a signal: so does the web side
        await running  # raises what the worker raised
        await registering
        progress.show(await _counts(conn, app.schema), stats, final=True)
    return not stopped_by_demo


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def summarize(jobs: list[Job], stats: Stats, schema: str) -> list[str]:
    """The closing report, from the job rows as the database recorded them."""
    by_state: dict[str, int] = {}
    for job in jobs:
        by_state[job.state.value] = by_state.get(job.state.value, 0) + 1
    retried = [job for job in jobs if job.attempts > 1]
    retries = sum(job.attempts - 1 for job in retried)
    failed = [job for job in jobs if job.state is JobState.FAILED]
    # started_at is the start of the latest attempt, so only first attempts measure pick-up.
    latencies = [
        (job.started_at - job.created_at).total_seconds() * 1000
        for job in jobs
        if job.attempts == 1 and job.started_at is not None
    ]
    finished = [job.finished_at for job in jobs if job.finished_at is not None]
    elapsed = (max(finished) - min(job.created_at for job in jobs)).total_seconds() if finished else 0.0
    rate = f"{len(jobs) / elapsed:.1f} jobs/s" if elapsed > 0 else "-"
    lines = [
        "",
        "summary",
        f"  registrations   {stats.committed + stats.rolled_back}: {stats.committed} committed, "
        f"{stats.rolled_back} rolled back (their {3 * stats.rolled_back} jobs never existed)",
        f"  jobs            {len(jobs)}: "
        + ", ".join(f"{n} {state}" for state, n in sorted(by_state.items())),
        f"  retried         {len(retried)} jobs needed more than one attempt ({retries} retries)",
        f"  throughput      {len(jobs)} jobs in {elapsed:.2f} s (first enqueue to last finish): {rate}",
    ]
    if latencies:
        lines.append(
            f"  pick-up latency p50 {_percentile(latencies, 0.5):.1f} ms, "
            f"p95 {_percentile(latencies, 0.95):.1f} ms "
            "(enqueue to handler start, first attempts)"
        )
    for job in failed:
        reason = (job.error or "").strip().splitlines()[-1:] or ["?"]
        lines.append(f"  failed          job {job.id} {job.type} after {job.attempts} attempts: {reason[0]}")
    example = failed[0].id if failed else (jobs[0].id if jobs else 1)
    lines += [
        "",
        f"look closer: pgqueue status --schema {schema}",
        f"             pgqueue show {example} --schema {schema}",
    ]
    return lines


def run(
    schema: str = "pgqueue_demo", users: int = 50, concurrency: int = 20, out: TextIO | None = None
) -> int:
    """Run the demo; return the process exit code."""
    out = out or sys.stdout
    embedded = configured_database_url() is None

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    say(f"pgqueue demo: {users} user registrations, each enqueueing 3 jobs in its own transaction")
    began = time.perf_counter()
    url = resolve_database_url()
    if embedded:
        say(
            f"  database: the embedded PostgreSQL in {embedded_pgdata()} "
            f"(started in {time.perf_counter() - began:.1f} s;"
            " it keeps running: `pgqueue embedded stop` stops it)"
        )
    else:
        say(f"  database: {redact(url)}")
    began = time.perf_counter()
    prepare_schema(url, schema)
    say(f"  schema {schema!r}: dropped, re-created and migrated in {time.perf_counter() - began:.2f} s")

    plans = make_plans(users)
    demo = build_app(schema)
    # Registrations arrive over about 1.5 s, like traffic on a web application.
    interval = min(0.03, 1.5 / users)
    say(
        f"  worker: concurrency {concurrency}; "
        "handlers sleep 5-300 ms, some fail and are retried (3 attempts)"
    )
    progress = Progress(out, users)
    handler = _AboveProgress(progress)
    root = logging.getLogger()
    root.addHandler(handler)
    stats = Stats()
    try:
        interrupted = asyncio.run(work_off(demo, url, plans, concurrency, interval, progress, stats))
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            jobs = [demo.app.get_job(job_id, conn=conn) for job_id in stats.job_ids]
    finally:
        root.removeHandler(handler)
        demo.app.close()
    if interrupted:
        say("interrupted: the worker handed unfinished jobs back")
        return 130
    for line in summarize(jobs, stats, schema):
        say(line)
    unfinished = [job for job in jobs if job.state not in FINAL]
    return 1 if unfinished else 0
