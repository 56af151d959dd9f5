"""Running without autovacuum: the warning at worker start, statistics for a job table never
analyzed, plans made again as the job table grows, and the opt-in vacuum duty.

Every finished, retried or pruned job leaves dead rows behind in the job table and its indexes;
without a vacuum they are never reclaimed, and each claim walks more of them. The duty runs
``VACUUM (ANALYZE)`` on the job table from one worker of the cluster at a time, when enough
dead rows have piled up.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg

from ..db import vacuum
from ..db.driver import arun
from .aio import describe, retry_delay
from .database import WorkerDatabase
from .maintenance import lock_key
from .service import Periodic, Service

log = logging.getLogger("pgqueue.worker")

VACUUMED, CLEAN, BUSY, NOT_OWNER = "vacuumed", "clean", "busy", "not owner"
"""What one turn of the vacuum duty did."""

ANALYZED, HAS_STATISTICS, PENDING = "analyzed", "has statistics", "pending"
"""What the statistics watch found (or ``NOT_OWNER``)."""


async def warn_if_autovacuum_off(db: WorkerDatabase, schema: str, vacuum_interval: float | None) -> None:
    """Log one warning, with what to do, when autovacuum is off for the server or pgqueue's tables.

    A failed look-up is logged at debug level only: the check is advice, not a condition to run.
    """
    try:
        async with db.pooled() as conn:
            off = await arun(conn, vacuum.autovacuum_off(schema))
    except (psycopg.Error, OSError, TimeoutError) as exc:
        log.debug("could not check autovacuum (%s)", describe(exc))
        return
    if not off:
        return
    where = " and ".join(off)
    if vacuum_interval is not None:
        log.warning(
            "autovacuum is off for %s: this worker's vacuum duty (every %gs) vacuums the job table; "
            "pgqueue's other tables and the rest of the database stay unvacuumed until autovacuum is on",
            where,
            vacuum_interval,
            extra={"outcome": "autovacuum-off"},
        )
        return
    log.warning(
        "autovacuum is off for %s: dead job rows are never reclaimed and every claim slows down. "
        "Turn it on (autovacuum = on in postgresql.conf and reload; for a table: ALTER TABLE "
        "%s.<table> RESET (autovacuum_enabled)), or run workers with --vacuum-interval 60",
        where,
        schema,
        extra={"outcome": "autovacuum-off"},
    )


class StatisticsWatch(Service):
    """ANALYZE the job table when it holds jobs but has no statistics (never analyzed with rows in
    it: a new installation before autoanalyze has run, or autovacuum off).

    Without column statistics PostgreSQL guesses that a queue holds a handful of jobs, and past
    about 100,000 waiting ones plans each claim as a bitmap scan and a sort of all of them:
    100,000 jobs drained at 8,600 jobs/s against 30,000 once analyzed, and a larger backlog
    slower still. The worker checks at start, before its first claim (:meth:`check`), then every
    ``interval`` seconds while the table is empty, and stops once the table has statistics (they
    stay, through TRUNCATE too). A role that may not analyze the table (only its owner may) is
    told once what to run instead. A failed look-up is logged at debug level and tried again.
    """

    name = "statistics"

    def __init__(self, db: WorkerDatabase, schema: str, interval: float = 60.0) -> None:
        super().__init__()
        self.db, self.schema, self.interval = db, schema, interval
        self.state = PENDING

    async def run(self) -> None:
        while self.state == PENDING:
            await asyncio.sleep(self.interval)
            await self.check()

    async def check(self) -> str:
        """One look (and ANALYZE if needed); the new :attr:`state`: ``"analyzed"``, ``"has
        statistics"``, ``"not owner"``, or ``"pending"`` (no jobs yet, or the look-up failed)."""
        try:
            # ANALYZE reads a sample of the table (30,000 rows by default): seconds at most, but
            # more than a claim's time limit on a cold, slow disk.
            async with self.db.pooled(timeout=max(self.db.io_timeout, 60.0)) as conn:
                self.state = await self._check(conn)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            log.debug("could not check the job table's statistics (%s)", describe(exc))
        return self.state

    async def _check(self, conn: psycopg.AsyncConnection[Any]) -> str:
        table = await arun(conn, vacuum.job_table_unanalyzed(self.schema))
        if not table["unanalyzed"]:
            return HAS_STATISTICS if table["analyzed"] else PENDING
        if not table["may_analyze"]:
            log.warning(
                "the job table %s.job has jobs but no statistics: until it is analyzed, claims may "
                "sort every waiting job. Run ANALYZE %s.job as its owner, or turn autovacuum on",
                self.schema,
                self.schema,
                extra={"outcome": "unanalyzed"},
            )
            return NOT_OWNER
        await arun(conn, vacuum.analyze_job(self.schema))
        if (await arun(conn, vacuum.job_table_unanalyzed(self.schema)))["unanalyzed"]:
            log.debug("the job table was not analyzed: another session analyzes or vacuums it")
            return PENDING
        log.info("analyzed the job table: it had jobs but no statistics", extra={"outcome": "analyzed"})
        return ANALYZED


class PlanWatch(Periodic):
    """Every ``interval`` seconds, look at the job table's size: when it has grown enough, the
    worker's connections plan their statements again (:class:`~pgqueue.worker.database.Replanning`).
    One cheap query; the table's owner or not, any role may. A worker looks every second, or every
    poll interval when that is longer, as it reads the schedule table: a fleet of hundreds polling
    every few seconds through a pooler would otherwise spend almost half its idle load on this
    one query (200 workers polling every 5 s: 2.5 statements a second each instead of 1.3)."""

    name = "plans"

    async def tick(self, conn: psycopg.AsyncConnection[Any]) -> None:
        cur = await conn.execute(self.q.job_table_size, {"schema": self.q.schema})
        row = await cur.fetchone()
        if row is not None and self.db.replanning.table_size(row[0]):
            log.debug("the job table has grown to %d bytes: statements are planned again", row[0])


class VacuumDuty(Service):
    """Every ``interval`` seconds, ``VACUUM (ANALYZE)`` the job table if its dead rows exceed
    ``min_dead`` and ``dead_ratio`` of its live ones, one worker of the cluster at a time.

    VACUUM cannot run in a transaction, so a transaction-level advisory lock cannot guard it: the
    duty takes a session-level one on a dedicated autocommit connection (one more connection per
    worker process) and releases it after each vacuum. That connection must be a direct one
    (``url``), not a pooler in transaction mode, which would hand the lock's session to others.
    Only the table's owner may vacuum it: for any other role the duty logs so once and stops.
    """

    name = "vacuum"

    def __init__(
        self,
        db: WorkerDatabase,
        schema: str,
        interval: float,
        *,
        url: str | None = None,
        min_dead: int = 1000,
        dead_ratio: float = 0.1,
    ) -> None:
        super().__init__()
        self.db, self.schema, self.interval, self.url = db, schema, interval, url
        self.min_dead, self.dead_ratio = min_dead, dead_ratio
        self.lock_key = lock_key(f"pgqueue vacuum {schema}")
        self.vacuums = 0
        """Vacuums this duty ran."""

    async def run(self) -> None:
        conn: psycopg.AsyncConnection[Any] | None = None
        failures = 0
        try:
            while True:
                try:
                    if conn is None or conn.closed:
                        conn = await self.connect()
                    if await self.tick(conn) == NOT_OWNER:
                        return
                    failures = 0
                except (psycopg.Error, OSError, TimeoutError) as exc:
                    failures += 1
                    log.warning("vacuum failed (%s)", describe(exc))
                    if conn is not None:
                        await conn.close()
                    conn = None
                await asyncio.sleep(max(retry_delay(failures), self.interval) if failures else self.interval)
        finally:
            if conn is not None:
                await self._close(conn)

    async def connect(self) -> psycopg.AsyncConnection[Any]:
        """The duty's own autocommit connection (the caller closes it)."""
        conn = await self.db.dedicated("pgqueue-vacuum", self.url)
        if not conn.autocommit:
            await conn.set_autocommit(True)
        return conn

    async def tick(self, conn: psycopg.AsyncConnection[Any]) -> str:
        """One turn on ``conn`` (autocommit): ``"vacuumed"``; ``"clean"`` (too few dead rows);
        ``"busy"`` (another worker holds the duty); ``"not owner"`` (this role may not vacuum)."""
        async with asyncio.timeout(self.db.io_timeout):
            if not await arun(conn, vacuum.try_lock(self.schema, self.lock_key)):
                return BUSY
        try:
            async with asyncio.timeout(self.db.io_timeout):
                table = await arun(conn, vacuum.job_table(self.schema))
            if not table["may_vacuum"]:
                self._not_owner("it is not the job table's owner")
                return NOT_OWNER
            if table["dead"] <= self.min_dead or table["dead"] <= self.dead_ratio * table["live"]:
                return CLEAN
            return await self._vacuum(conn, table)
        finally:
            if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                async with asyncio.timeout(self.db.io_timeout):
                    await arun(conn, vacuum.unlock(self.schema, self.lock_key))

    async def _vacuum(self, conn: psycopg.AsyncConnection[Any], table: dict[str, Any]) -> str:
        skipped: list[str] = []

        def notice(diag: psycopg.errors.Diagnostic) -> None:
            # PostgreSQL skips a table the role may not vacuum with a warning, not an error.
            # 'skipping "job" --- only table or database owner can vacuum it' (to 16),
            # 'permission denied to vacuum "job", skipping it' (17 on).
            if "skipping" in (diag.message_primary or ""):
                skipped.append(diag.message_primary or "")

        conn.add_notice_handler(notice)
        try:
            # No time limit: a vacuum of a large table takes what it takes, and it is cancelled
            # when the worker stops.
            await arun(conn, vacuum.vacuum_job(self.schema))
        except psycopg.errors.InsufficientPrivilege as exc:
            self._not_owner(describe(exc))
            return NOT_OWNER
        finally:
            conn.remove_notice_handler(notice)
        if skipped:
            self._not_owner(skipped[0])
            return NOT_OWNER
        self.vacuums += 1
        log.info(
            "vacuumed the job table (%d dead rows, %d live)",
            table["dead"],
            table["live"],
            extra={"outcome": "vacuumed"},
        )
        return VACUUMED

    def _not_owner(self, why: str) -> None:
        log.warning(
            "the vacuum duty stops: this role may not vacuum %s.job (%s); it needs the table's owner "
            "role (run the worker that has --vacuum-interval as the role that ran `pgqueue migrate`), "
            "or turn autovacuum on",
            self.schema,
            why,
            extra={"outcome": "vacuum-not-owner"},
        )

    async def _close(self, conn: psycopg.AsyncConnection[Any]) -> None:
        # Stopped in the middle of a VACUUM: cancel it on the server rather than let it run on.
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.ACTIVE:
            try:
                async with asyncio.timeout(5.0):
                    await conn.cancel_safe()
            except (psycopg.Error, OSError, TimeoutError):
                pass
        await conn.close()
