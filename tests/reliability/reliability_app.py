"""The app the reliability scenarios run: every handler writes each execution to a ledger.

A ledger row is (job_id, attempt, pid, at, note), written before the handler returns, on a
connection of the ledger's own (``RELIABILITY_LEDGER_DSN``, straight to the database, so
that faults aimed at pgqueue's connections do not hide executions). Comparing the ledger
with the job table and the completion log (a trigger, see ``scoreboard``) gives lost jobs,
double completions and re-executions.

Some handlers crash their own worker on purpose (``os.kill(os.getpid(), SIGKILL)``) at an
exact point, so that a scenario can put a crash where it wants it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import threading
import time
import uuid
from typing import Any

import psycopg

import pgqueue

QUEUE = "rel"
_TASKS: list[tuple[str, dict[str, Any], Any]] = []


def task(name: str, **options: Any) -> Any:
    """Collect a handler; :func:`make_app` registers every one of them on a new App."""

    def collect(fn: Any) -> Any:
        _TASKS.append((name, {"queue": QUEUE, **options}, fn))
        return fn

    return collect


def make_app(database_url: str | None = None, **settings: Any) -> pgqueue.App:
    """An App with every handler of this module, as a producer importing the tasks module has.

    Producers in the scenarios use it with the producer role's DSN, so jobs get the tasks'
    queue, attempts and timeouts; workers load the module's ``app``.
    """
    application = pgqueue.App(database_url, **settings)
    for name, options, fn in _TASKS:
        application.task(name, **options)(fn)
    return application

LEDGER_APPLICATION = "reliability-ledger"
LEDGER_CONNECT: dict[str, Any] = {"application_name": LEDGER_APPLICATION, "prepare_threshold": None}
"""Never prepared: the ledger may go through pgbouncer in transaction mode (before 1.21, a
prepared statement lives on one server connection, and the next transaction gets another)."""
# The lease the execution runs under (its claim's, from current_job()) identifies the claim:
# two executions under one lease would be one claim run twice (a fencing failure). Attempt
# numbers do not identify claims, since a job handed back at shutdown runs again under the
# same one. (Read from the job's row when the ledger is written, the lease would be the next
# claim's for an execution whose write lands after its job was rescued and claimed again.)
# Each execution writes its row under a token of its own: the write is retried once when the
# connection fails, and a failure after the commit (a failover right then) must not count the
# execution twice.
LEDGER_INSERT = (
    "INSERT INTO ledger (job_id, attempt, pid, note, lease_id, execution) "
    "VALUES (%s, %s, %s, %s, %s::uuid, %s) ON CONFLICT (execution) DO NOTHING"
)


def _lease(job: pgqueue.JobContext) -> str | None:
    return None if job.lease_id is None else str(job.lease_id)


def _ledger_dsn() -> str:
    return os.environ.get("RELIABILITY_LEDGER_DSN") or os.environ["PGQUEUE_DATABASE_URL"]


# --- the ledger, async and sync --------------------------------------------------------------

_aconn: psycopg.AsyncConnection[Any] | None = None
_aconn_lock: asyncio.Lock | None = None
_local = threading.local()


async def _aledger() -> psycopg.AsyncConnection[Any]:
    global _aconn
    if _aconn is None or _aconn.closed or _aconn.broken:
        _aconn = await psycopg.AsyncConnection.connect(_ledger_dsn(), autocommit=True, **LEDGER_CONNECT)
    return _aconn


async def arecord(note: str | None = None) -> pgqueue.JobContext:
    """Write this execution to the ledger (reconnecting once if the database went away)."""
    job = pgqueue.current_job()
    execution = uuid.uuid4()
    for attempt in range(2):
        try:
            conn = await _aledger()
            row = (job.id, job.attempt, os.getpid(), note, _lease(job), execution)
            await conn.execute(LEDGER_INSERT, row)
            return job
        except psycopg.OperationalError:
            if attempt:
                raise
            await asyncio.sleep(0.2)
    raise AssertionError("unreachable")


async def first_execution(job: pgqueue.JobContext) -> bool:
    """Whether the ledger holds no execution of this job but the one just recorded. (Not its first
    attempt: a job claimed ahead by a worker that died before starting it comes back with its
    first attempt counted and never run.)"""
    conn = await _aledger()
    cur = await conn.execute("SELECT count(*) FROM ledger WHERE job_id = %s AND note IS NULL", (job.id,))
    row = await cur.fetchone()
    return row is not None and row[0] == 1


def _ledger() -> psycopg.Connection[Any]:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed or conn.broken:
        conn = _local.conn = psycopg.connect(_ledger_dsn(), autocommit=True, **LEDGER_CONNECT)
    return conn


def record(note: str | None = None) -> pgqueue.JobContext:
    job = pgqueue.current_job()
    execution = uuid.uuid4()
    for attempt in range(2):
        try:
            _ledger().execute(LEDGER_INSERT, (job.id, job.attempt, os.getpid(), note, _lease(job), execution))
            return job
        except psycopg.OperationalError:
            if attempt:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


def crash() -> None:
    """Die the way a process dies when the OOM killer or a node failure takes it: no cleanup at all."""
    os.kill(os.getpid(), signal.SIGKILL)


# --- plain work ---------------------------------------------------------------------------------


@task("work", max_attempts=25, retry_delay=0.1, retry_backoff=False)
async def work(n: int, ms: float = 0.0, fail: bool = False) -> int:
    """Sleep ``ms`` milliseconds; raise if ``fail``. Fault scenarios allow many attempts:
    infrastructure faults must not exhaust them."""
    await arecord()
    if ms:
        await asyncio.sleep(ms / 1000)
    if fail:
        raise RuntimeError(f"job {n} was told to fail")
    return n


@task("soak", max_attempts=1)
async def soak(n: int, ms: float, fail: bool) -> dict[str, int]:
    await arecord()
    await asyncio.sleep(ms / 1000)
    if fail:
        raise ValueError(f"soak job {n} raises, as one job in a hundred does")
    return {"n": n, "pad": len("x" * 64)}


@task("hold", max_attempts=10, retry_delay=0, retry_backoff=False)
async def hold(first: float, later: float = 0.0) -> dict[str, int]:
    """Sleep ``first`` seconds on the job's first execution (to be killed, stopped or
    signalled there), ``later`` on any later one."""
    job = await arecord()
    conn = await _aledger()
    cur = await conn.execute("SELECT count(*) FROM ledger WHERE job_id = %s", (job.id,))
    row = await cur.fetchone()
    await asyncio.sleep(first if row and row[0] == 1 else later)
    return {"attempt": job.attempt, "pid": os.getpid()}


@task("scheduled", max_attempts=10, retry_delay=0, retry_backoff=False)
async def scheduled(n: int, ms: float = 0.0) -> int:
    await arecord()
    await asyncio.sleep(ms / 1000)
    return n


# --- transactional enqueue (scenario 8) ------------------------------------------------------------


@task("order", max_attempts=5, retry_delay=0.1)
async def order(order_id: int) -> int:
    """Runs for an order that must be visible: the job was enqueued in the order's own transaction."""
    conn = await _aledger()
    cur = await conn.execute("SELECT count(*) FROM orders WHERE id = %s", (order_id,))
    row = await cur.fetchone()
    await arecord("visible" if row and row[0] == 1 else "invisible")
    return order_id


# --- effects and completion (scenario 9) ----------------------------------------------------------


async def _effect_connection() -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(_ledger_dsn(), **LEDGER_CONNECT)


@task("effect", max_attempts=10, retry_delay=0, retry_backoff=False)
async def effect(crash_at: str | None = None) -> str:
    """Write an effect in a transaction of its own, keyed by job id, then return (the worker
    completes the job afterwards, in another transaction). ``crash_at`` (first attempt only):
    ``before_commit`` kills the worker with the effect written but not committed,
    ``after_commit`` with the effect committed but the job not completed."""
    job = await arecord()
    first = await first_execution(job)
    conn = await _effect_connection()
    try:
        cur = await conn.execute(
            "INSERT INTO effects (job_id, attempt, pid) VALUES (%s, %s, %s) ON CONFLICT (job_id) DO NOTHING "
            "RETURNING job_id", (job.id, job.attempt, os.getpid()),
        )
        written = await cur.fetchone() is not None
        if crash_at == "before_commit" and first:
            await arecord("crashing")
            crash()
        await conn.commit()
    finally:
        await conn.close()
    if not written:
        await arecord("duplicate-effect")
    if crash_at == "after_commit" and first:
        await arecord("crashing")
        crash()
    return "written" if written else "already there"


@task("effect_tx", max_attempts=10, retry_delay=0, retry_backoff=False)
async def effect_tx(crash_at: str | None = None) -> str:
    """The effect and the job's completion in one transaction, with ``JobContext.acomplete``:
    the completion comes first, so that an attempt that no longer holds the job (LeaseLost)
    never writes the effect. ``crash_at`` as for ``effect``; neither point can leave an effect
    without its completion, nor run the effect twice."""
    job = await arecord()
    first = await first_execution(job)
    conn = await _effect_connection()
    try:
        try:
            await job.acomplete(conn, output="effect and completion in one transaction")
        except pgqueue.LeaseLost:
            await conn.rollback()
            await arecord("claim-lost")
            raise
        try:
            await conn.execute(
                "INSERT INTO effects (job_id, attempt, pid) VALUES (%s, %s, %s)", (job.id, job.attempt, os.getpid())
            )
        except psycopg.errors.UniqueViolation:
            await conn.rollback()
            await arecord("duplicate-effect")
            raise
        if crash_at == "before_commit" and first:
            await arecord("crashing")
            crash()
        await conn.commit()
    finally:
        await conn.close()
    if crash_at == "after_commit" and first:
        await arecord("crashing")
        crash()
    return "written"


# --- poison pills (scenario 12) ---------------------------------------------------------------------


@task("poison", max_attempts=3, retry_delay=0, retry_backoff=False)
async def poison() -> None:
    await arecord()
    await asyncio.sleep(0.05)
    crash()


@task("poison_process", max_attempts=3, retry_delay=0, retry_backoff=False, executor="process")
def poison_process() -> None:
    record()
    crash()


# --- hung handlers (scenario 11) ---------------------------------------------------------------------


@task("hang_sleep", timeout=2, max_attempts=2, retry_delay=0, retry_backoff=False)
async def hang_sleep() -> None:
    await arecord()
    await asyncio.sleep(3600)


@task("hang_deaf", timeout=2, max_attempts=2, retry_delay=0, retry_backoff=False)
async def hang_deaf() -> None:
    """Ignores cancellation: swallows CancelledError and sleeps on."""
    await arecord()
    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline:
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            continue


@task("hang_socket", timeout=2, max_attempts=2, retry_delay=0, retry_backoff=False,
          executor="thread")
def hang_socket() -> None:
    """Blocks in recv() on a socket whose peer never writes."""
    record()
    quiet, _peer = socket.socketpair()
    quiet.recv(1)


@task("hang_process", timeout=2, max_attempts=2, retry_delay=0, retry_backoff=False,
          executor="process")
def hang_process() -> None:
    record()
    time.sleep(3600)


@task("nap_thread", max_attempts=1, executor="thread")
def nap_thread(seconds: float) -> int:
    record()
    time.sleep(seconds)
    return threading.get_ident()


@task("nap_process", max_attempts=3, retry_delay=0, retry_backoff=False, executor="process")
def nap_process(seconds: float) -> int:
    """A long process handler without a timeout; its ledger row carries the child's pid."""
    record()
    time.sleep(seconds)
    return os.getpid()


# --- hostile outcomes (scenario 14) -------------------------------------------------------------------


class _BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("this object cannot be shown")


def _deep(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


def hostile_value(kind: str) -> Any:
    """Return values a handler might produce that JSON or jsonb cannot carry as they are."""
    values: dict[str, Any] = {
        "nan": lambda: float("nan"),
        "infinity": lambda: {"x": float("inf")},
        "huge int": lambda: 10**5000,
        "nul": lambda: "a\x00b",
        "lone surrogate": lambda: "\ud800",
        "bytes": lambda: b"\x00\xff",
        "set": lambda: {1, 2},
        "deep 100k": lambda: _deep(100_000),
        "bad repr": _BadRepr,
        "10 MB string": lambda: "x" * (10 * 1024 * 1024),
    }
    return values[kind]()


HOSTILE_OUTPUTS = ("nan", "infinity", "huge int", "nul", "lone surrogate", "bytes", "set", "deep 100k",
                   "bad repr", "10 MB string")


@task("hostile_output", max_attempts=1)
async def hostile_output(kind: str) -> Any:
    await arecord()
    return hostile_value(kind)


HOSTILE_ERRORS: dict[str, str] = {
    "nul": "broken \x00 message",
    "lone surrogate": "broken \udcff message",
    "1 MB": "e" * (1024 * 1024),
    "sql": "'); DROP TABLE pgqueue.job; --",
}


@task("hostile_error", max_attempts=1)
async def hostile_error(kind: str) -> None:
    await arecord()
    raise ValueError(HOSTILE_ERRORS[kind])


@task("hostile_error_thread", max_attempts=1, executor="thread")
def hostile_error_thread(kind: str) -> None:
    record()
    raise ValueError(HOSTILE_ERRORS[kind])


@task("echo", max_attempts=1)
async def echo(**data: Any) -> Any:
    """Returns its data as it arrived, to be compared with what was enqueued."""
    await arecord()
    return data


@task("measure", max_attempts=1)
async def measure(**data: Any) -> int:
    """Returns the size of its data as JSON (for payloads too big to echo back)."""
    await arecord()
    return len(json.dumps(data, ensure_ascii=False))


@task("echo_process", max_attempts=1, executor="process")
def echo_process(**data: Any) -> dict[str, Any]:
    """A process handler sees exactly its data as keyword arguments, nothing else."""
    record()
    return {"keys": sorted(data)}


app = make_app()
