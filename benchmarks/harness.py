"""What every scenario shares: sizes, a cross-process clock, process groups started together,
WAL and row meters, results, and the throwaway database a run lives in."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import math
import multiprocessing
import os
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from queue import Empty
from threading import BrokenBarrierError
from typing import Any, Self

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DSN_ENV = "PGQUEUE_BENCH_DSN"
APPLICATION_NAME = "pgqueue-bench"

# --- sizes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """How much work each scenario does. ``--quick`` is a smoke run; the full sizes make the real table."""

    name: str
    enqueue_jobs: int
    """Jobs per single-insert variant, split evenly across its clients."""
    bulk_jobs: int
    """Jobs in one bulk call (COPY, unnest, enqueue_many)."""
    bulk_repeats: int
    """Bulk runs per variant; the median is reported."""
    drain_jobs: int
    """Backlog each drain starts from."""
    drain_batches: tuple[int, ...]
    """Jobs claimed per round trip (k)."""
    drain_connections: tuple[int, ...]
    """Concurrent draining processes, one connection each."""
    latency_events: int
    """Notifications (or jobs) sent one per transaction in a latency run."""
    latency_rate: float
    """Notifications per second the producer sends, on a fixed schedule."""
    worker_concurrency: int
    """``pgqueue work --concurrency`` of each worker process in the drain and scale runs."""
    tuned_concurrency: int
    """The drain's tuned rows: a concurrency as large as the ceiling's largest claim."""
    scale_small: int
    """The small backlog of the scale comparison: waiting jobs before the drain starts."""
    scale_big: int
    """The big backlog (1,000,000 with ``--scale``), and the finished jobs left in the table
    for the retained-rows comparison."""
    scale_measure: int
    """Jobs drained (the first ones to complete) in each scale drain, whatever the backlog."""
    scale_enqueue_jobs: int
    """Single-job enqueues timed on an empty table and on one holding ``scale_big`` finished jobs."""
    churn_jobs: int
    """Jobs enqueued and worked off in a churn run, after which the table's size is read."""
    many_jobs: int
    """Jobs the many-workers run works off."""


QUICK = Sizes(
    name="quick",
    enqueue_jobs=400,
    bulk_jobs=2_000,
    bulk_repeats=1,
    drain_jobs=1_000,
    drain_batches=(1, 10, 100),
    drain_connections=(1, 2, 4, 8),
    latency_events=50,
    latency_rate=50.0,
    worker_concurrency=100,
    tuned_concurrency=100,
    scale_small=2_000,
    scale_big=20_000,
    scale_measure=2_000,
    scale_enqueue_jobs=200,
    churn_jobs=20_000,
    many_jobs=2_000,
)

FULL = Sizes(
    name="full",
    enqueue_jobs=20_000,
    bulk_jobs=20_000,
    bulk_repeats=3,
    drain_jobs=20_000,
    drain_batches=(1, 10, 100, 500),
    drain_connections=(1, 2, 4, 8),
    latency_events=500,
    latency_rate=50.0,
    worker_concurrency=100,
    tuned_concurrency=500,
    scale_small=10_000,
    scale_big=100_000,
    scale_measure=10_000,
    scale_enqueue_jobs=2_000,
    churn_jobs=100_000,
    many_jobs=20_000,
)

SCALE = {"scale_big": 1_000_000, "churn_jobs": 1_000_000}
"""What ``--scale`` changes in the full sizes: the million-job backlog, retained rows and churn."""

# --- clocks and statistics --------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


# --- results ----------------------------------------------------------------------------


@dataclass
class Result:
    """One measured scenario. ``value`` is the headline figure; ``metrics`` holds the others
    (p95, p99, ...) under names a comparison can refer to."""

    key: str
    title: str
    value: float
    unit: str
    """``jobs/s`` (higher is better) or ``ms`` (lower is better)."""
    jobs: int = 0
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    wal_bytes_per_job: float | None = None
    """WAL bytes per job, full-page images excluded when they can be told apart."""
    wal_fpi_bytes_per_job: float | None = None
    """Full-page images per job: how many depends on when checkpoints fell, not on the scenario."""
    wal_syncs_per_job: float | None = None
    rows_per_job: float | None = None
    client_cpu_us_per_job: float | None = None
    """CPU time (user + system) the client processes spent per job, in microseconds."""
    note: str = ""

    def metric(self, name: str) -> float:
        return self.value if name == "value" else self.metrics[name]


def throughput(key: str, title: str, reports: Sequence[dict[str, Any]], note: str = "") -> Result:
    """Aggregate the reports of processes started together: jobs over the span from the first
    start to the last end (all taken with :func:`benchmarks.clock.now_ns`)."""
    jobs = sum(r["jobs"] for r in reports)
    seconds = (max(r["end"] for r in reports) - min(r["start"] for r in reports)) / 1e9
    cpu = sum(r.get("cpu", 0.0) for r in reports)
    return Result(
        key=key,
        title=title,
        value=jobs / seconds,
        unit="jobs/s",
        jobs=jobs,
        seconds=seconds,
        client_cpu_us_per_job=cpu / jobs * 1e6 if jobs else None,
        note=note,
    )


# --- WAL and row meters -----------------------------------------------------------------


@dataclass(frozen=True)
class _Snapshot:
    lsn: str
    wal_syncs: int | None
    """The server's WAL flush counter; None where it is not measured."""
    rows: int


@dataclass(frozen=True)
class WalFlushCounter:
    """Where the server counts its WAL flushes (fsyncs of WAL files by ``issue_xlog_fsync``),
    and what the report says about it."""

    sql: str | None
    """A query returning the server-wide count in one column, or None: not measured."""
    description: str
    """The counter read (``pg_stat_wal.wal_sync``), or why the figure is not measured."""


def wal_flush_counter(
    server_version: int, fsync: str = "on", wal_sync_method: str = "fdatasync"
) -> WalFlushCounter:
    """How to read WAL flushes on a server of ``server_version`` (``server_version_num``).

    PostgreSQL 14 to 17 have ``pg_stat_wal.wal_sync``. 18 dropped it (and ``wal_write``) for
    ``pg_stat_io``, whose ``object = 'wal'`` rows count the same calls per backend type and
    context: ``normal`` is ``wal_sync``'s, ``init`` the fsyncs of new WAL segments (never counted
    in ``wal_sync``). With ``fsync`` off, or an ``open_*`` ``wal_sync_method`` (each write
    syncs itself), neither counter moves: the figure is then not measured rather than zero.
    """
    if fsync != "on":
        return WalFlushCounter(None, "not measured: fsync is off")
    if wal_sync_method.startswith("open_"):
        return WalFlushCounter(None, f"not measured: wal_sync_method={wal_sync_method} syncs in its writes")
    if server_version >= 180000:
        return WalFlushCounter(
            "SELECT sum(fsyncs) FROM pg_stat_io WHERE object = 'wal' AND context = 'normal'",
            "pg_stat_io fsyncs of object wal, context normal",
        )
    if server_version >= 140000:
        return WalFlushCounter("SELECT wal_sync FROM pg_stat_wal", "pg_stat_wal.wal_sync")
    return WalFlushCounter(None, f"not measured: no WAL flush counter before 14 ({server_version})")


def wal_flushes_per_job(start: int | None, end: int | None, jobs: int) -> float | None:
    """WAL flushes per job between two readings of the counter; None when either reading is
    missing, or when the counter went back (its statistics were reset during the scenario)."""
    if start is None or end is None or jobs <= 0 or end < start:
        return None
    return (end - start) / jobs


# WAL records of the run's own relations between two LSNs (user relations of this database:
# relfilenodes from 16384 up; system catalogs, which autovacuum may be busy with in a new
# database, sit below), plus the other records (commits) of the transactions that wrote them.
_OWN_WAL = """
WITH r AS (
    SELECT xid::text::bigint AS xid, record_length, fpi_length,
           (regexp_match(block_ref, %(pattern)s))[1]::bigint AS filenode
    FROM pg_get_wal_records_info(%(start)s::pg_lsn, %(end)s::pg_lsn)
), ours AS (
    SELECT DISTINCT xid FROM r WHERE xid <> 0 AND filenode >= 16384
)
SELECT coalesce(sum(record_length), 0), coalesce(sum(fpi_length), 0) FROM r
WHERE filenode >= 16384 OR xid IN (SELECT xid FROM ours)
"""


class Meter:
    """WAL bytes, WAL flushes and heap rows written during a scenario.

    WAL bytes: with the ``pg_walinspect`` extension (PostgreSQL 15+, superuser), only the
    records of this database's transactions are counted, so other work on the same server
    does not leak in; without it, the server-wide ``pg_current_wal_lsn()`` delta is used.
    WAL flushes come from the counter :func:`wal_flush_counter` picks for the server
    (``pg_stat_wal`` up to 17, ``pg_stat_io`` from 18) and are always server-wide. Rows come from
    ``pg_stat_user_tables`` of this database only (inserted + updated + deleted tuples).
    """

    def __init__(self, bench: Bench, schemas: Sequence[str]):
        self.bench = bench
        self.schemas = list(schemas)
        self.start: _Snapshot | None = None
        self.end: _Snapshot | None = None

    def _snapshot(self) -> _Snapshot:
        # One of wal_flush_counter's constant queries, never user input.
        flushes = self.bench.wal_flushes.sql or "SELECT NULL::bigint"
        row = self.bench.admin.execute(
            f"""
            SELECT pg_current_wal_flush_lsn()::text,
                   ({flushes}),
                   (SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)
                    FROM pg_stat_user_tables WHERE schemaname = ANY(%s))
            """,
            (self.schemas,),
        ).fetchone()
        assert row is not None
        return _Snapshot(row[0], None if row[1] is None else int(row[1]), int(row[2]))

    def __enter__(self) -> Self:
        self.bench.wait_for_quiet()
        self.bench.flush_own_stats()
        self.bench.retain_wal_from_now()
        self.start = self._snapshot()
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            return
        # Backends publish their statistics when they exit or go idle: wait for the
        # scenario's connections to close, then for the counters to settle.
        self.bench.wait_for_quiet()
        previous = self._snapshot()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            time.sleep(0.05)
            current = self._snapshot()
            if current.rows == previous.rows and current.wal_syncs == previous.wal_syncs:
                break
            previous = current
        self.end = previous

    def wal_bytes(self) -> tuple[float, float | None]:
        """WAL written by the run's relations between the snapshots, and the full-page images
        among it; server-wide (and no split) if it cannot tell."""
        assert self.start is not None and self.end is not None
        admin = self.bench.admin
        if self.bench.walinspect:
            pattern = f" rel \\d+/{self.bench.database_oid}/(\\d+)"
            try:
                row = admin.execute(
                    _OWN_WAL, {"start": self.start.lsn, "end": self.end.lsn, "pattern": pattern}
                ).fetchone()
                assert row is not None
                return float(row[0]), float(row[1])
            except psycopg.Error as error:
                self.bench.log(f"  (own WAL not readable, using the server-wide delta: {error})")
        row = admin.execute(
            "SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)", (self.end.lsn, self.start.lsn)
        ).fetchone()
        assert row is not None
        return float(row[0]), None

    def apply(self, result: Result, jobs: int) -> Result:
        """Fill ``result``'s per-job WAL and row figures, dividing by ``jobs`` written."""
        assert self.start is not None and self.end is not None
        if jobs <= 0:
            return result
        total, fpi = self.wal_bytes()
        if fpi is None:
            result.wal_bytes_per_job = total / jobs
            result.note = "; ".join(n for n in (result.note, "WAL server-wide") if n)
        else:
            result.wal_bytes_per_job = (total - fpi) / jobs
            result.wal_fpi_bytes_per_job = fpi / jobs
        result.wal_syncs_per_job = wal_flushes_per_job(self.start.wal_syncs, self.end.wal_syncs, jobs)
        result.rows_per_job = (self.end.rows - self.start.rows) / jobs
        return result


# --- process groups ---------------------------------------------------------------------

Ready = Callable[[], None]
"""Passed to every process of a group: it sets itself up, calls ``ready()``, then works.
``ready`` returns once every process of the group (and the parent) is ready."""


def _child(target: Callable[..., Any], index: int, barrier: Any, results: Any, args: tuple[Any, ...]) -> None:
    def ready() -> None:
        barrier.wait(timeout=120)

    try:
        payload = target(ready, *args)
    except Exception:  # noqa: BLE001 - any failure goes back to the parent, with its traceback
        barrier.abort()
        results.put((index, False, traceback.format_exc()))
        return
    results.put((index, True, payload))


def run_group(
    context: Any, members: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]], timeout: float = 600
) -> list[Any]:
    """Start one process per ``(target, args)``, release them together, and return what each
    target returned, in order. A failing member fails the group with its traceback."""
    barrier = context.Barrier(len(members) + 1)
    results = context.Queue()
    processes = [
        context.Process(target=_child, args=(target, i, barrier, results, args), daemon=True)
        for i, (target, args) in enumerate(members)
    ]
    for process in processes:
        process.start()
    out: dict[int, Any] = {}
    try:
        try:
            barrier.wait(timeout=120)
        except BrokenBarrierError:
            pass  # a member failed while setting up: its traceback is on the queue
        deadline = time.monotonic() + timeout
        while len(out) < len(members):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"benchmark processes still running after {timeout:.0f} s")
            try:
                index, ok, payload = results.get(timeout=min(remaining, 1.0))
            except Empty:
                if not any(p.is_alive() for p in processes) and results.empty():
                    raise RuntimeError("a benchmark process died without reporting") from None
                continue
            if not ok:
                raise RuntimeError(f"benchmark process {index} failed:\n{payload}")
            out[index] = payload
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
        results.close()
    return [out[i] for i in range(len(members))]


def process_context() -> Any:
    """Processes forked from a clean server process: fast to start, and they inherit no
    database connection from the parent (a forked libpq socket closed in a child would
    end the parent's session)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(
        ["psycopg", "benchmarks.ceiling", "benchmarks.pgqueue_scenarios", "benchmarks.pgqueue_workers"]
    )
    return context


# --- the run's database -----------------------------------------------------------------


def resolve_dsn(dsn: str | None) -> str:
    return dsn or os.environ.get(DSN_ENV) or DEFAULT_DSN


def with_dbname(dsn: str, dbname: str) -> str:
    return make_conninfo(dsn, dbname=dbname)


@contextmanager
def throwaway_database(server_dsn: str, keep: bool = False) -> Iterator[str]:
    """Create an empty database for the run and drop it afterwards; yield its DSN."""
    name = f"pgqueue_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_dsn, autocommit=True, application_name=APPLICATION_NAME) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_dbname(server_dsn, name)
    finally:
        if keep:
            print(f"kept the benchmark database {name}", file=sys.stderr)
        else:
            with psycopg.connect(server_dsn, autocommit=True, application_name=APPLICATION_NAME) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def describe_server(dsn: str) -> str:
    """One line about where the run happens, password-free."""
    params = conninfo_to_dict(dsn)
    with psycopg.connect(dsn, autocommit=True, application_name=APPLICATION_NAME) as conn:
        row = conn.execute(
            "SELECT current_setting('server_version'), current_setting('fsync'),"
            " current_setting('synchronous_commit'), current_setting('shared_buffers'),"
            " current_setting('autovacuum')"
        ).fetchone()
    assert row is not None
    host = params.get("host", "local socket")
    return (
        f"PostgreSQL {row[0]} at {host}:{params.get('port', 5432)} (fsync={row[1]}, "
        f"synchronous_commit={row[2]}, shared_buffers={row[3]}, autovacuum={row[4]}); client: Python "
        f"{sys.version.split()[0]}, psycopg {psycopg.__version__}, {os.cpu_count()} CPUs; "
        f"workers' event loop: {_worker_loop()}"
    )


def _worker_loop() -> str:
    """The event loop ``pgqueue work`` runs on here (``--event-loop``, from the environment)."""
    from pgqueue.worker.aio import new_loop

    loop = new_loop(os.environ.get("PGQUEUE_EVENT_LOOP", "auto"))
    loop.close()
    package = type(loop).__module__.partition(".")[0]
    return f"uvloop {importlib.metadata.version('uvloop')}" if package == "uvloop" else package


class Bench:
    """One run: the database it owns, its sizes, its results, and a way to start processes."""

    def __init__(self, dsn: str, sizes: Sizes, log: Callable[[str], None] = print):
        self.dsn = dsn
        self.sizes = sizes
        self.log = log
        self.samples: dict[str, list[Result]] = {}
        self.context = process_context()
        self.admin = psycopg.connect(dsn, autocommit=True, application_name=f"{APPLICATION_NAME}-admin")
        row = self.admin.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()
        assert row is not None
        self.database_oid = int(row[0])
        settings = self.admin.execute(
            "SELECT current_setting('fsync'), current_setting('wal_sync_method')"
        ).fetchone()
        assert settings is not None
        self.wal_flushes = wal_flush_counter(self.admin.info.server_version, *settings)
        if self.wal_flushes.sql is None:
            self.log(f"WAL flushes/job {self.wal_flushes.description}")
        self.wal_slot: str | None = f"pgqueue_bench_{self.database_oid}"
        self.walinspect = self._enable_walinspect()

    def _enable_walinspect(self) -> bool:
        try:
            self.admin.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        except psycopg.Error as error:
            self.log(f"pg_walinspect unavailable ({error.diag.message_primary}): WAL bytes are server-wide")
            return False
        # A checkpoint during a scenario may recycle the WAL segments it wrote before they
        # are read: a temporary slot (dropped with this session, even if the run dies)
        # keeps them until the next scenario starts.
        try:
            self.admin.execute("SELECT pg_create_physical_replication_slot(%s, true, true)", (self.wal_slot,))
        except psycopg.Error as error:
            self.log(f"no replication slot ({error.diag.message_primary}): a checkpoint may hide some WAL")
            self.wal_slot = None
        return True

    def retain_wal_from_now(self) -> None:
        """Let the server recycle the WAL before this point (read by earlier scenarios)."""
        if self.wal_slot is not None:
            self.admin.execute(
                "SELECT pg_replication_slot_advance(%s, pg_current_wal_flush_lsn())", (self.wal_slot,)
            )

    def close(self) -> None:
        self.admin.close()

    @property
    def results(self) -> dict[str, Result]:
        """Each scenario's result; over several rounds, the round with the median value."""
        chosen = {}
        for key, samples in self.samples.items():
            ordered = sorted(samples, key=lambda r: r.value)
            pick = ordered[(len(ordered) - 1) // 2]
            if len(samples) > 1:
                digits = 2 if pick.unit == "ms" else 0
                low, high = ordered[0].value, ordered[-1].value
                spread = f"median of {len(samples)} rounds ({low:,.{digits}f}–{high:,.{digits}f})"
                pick = dataclasses.replace(pick, note="; ".join(n for n in (pick.note, spread) if n))
            chosen[key] = pick
        return chosen

    def record(self, result: Result) -> Result:
        self.samples.setdefault(result.key, []).append(result)
        extra = ", ".join(f"{k} {v:,.2f}" for k, v in result.metrics.items())
        self.log(
            f"  {result.title}: {result.value:,.2f} {result.unit}"
            + (f" ({extra})" if extra else "")
            + (f" [{result.jobs:,} jobs in {result.seconds:.2f} s]" if result.seconds else "")
        )
        return result

    def meter(self, *schemas: str) -> Meter:
        return Meter(self, schemas)

    def group(
        self, members: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]], timeout: float = 600
    ) -> list[Any]:
        return run_group(self.context, members, timeout)

    def flush_own_stats(self) -> None:
        """Publish the admin connection's pending statistics (set-up COPYs and updates), so
        they are not counted in the scenario that follows. PostgreSQL 15+."""
        if self.admin.info.server_version >= 150000:
            self.admin.execute("SELECT pg_stat_force_next_flush()")  # flushed as the statement ends

    def wait_for_quiet(self, timeout: float = 10.0) -> None:
        """Wait until no client connection but the admin one is open on the run's database."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
            ).fetchone()
            if row is not None and row[0] == 0:
                return
            time.sleep(0.02)
        raise TimeoutError("connections of a finished scenario are still open")
