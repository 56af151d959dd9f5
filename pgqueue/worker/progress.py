"""Writing what running handlers report of their progress (``JobContext.set_progress``).

Handlers report from wherever they run: the event loop, a thread, or a child process (whose
reports arrive through its pipe). Every report lands in :meth:`ProgressWriter.offer`, which
keeps only the latest per job; the writer's loop writes at most one per job per
``PROGRESS_INTERVAL``, all due jobs in one statement on a pool connection, each guarded by its
lease. When a handler returns, the worker takes its last report (if the
throttle held one back) and writes it before recording the outcome, so the row keeps the last value.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from ..codec import number_array, text_array
from ..db.sql import Queries
from .aio import describe, wait_any
from .database import WorkerDatabase
from .service import Service

log = logging.getLogger("pgqueue.worker")

PROGRESS_INTERVAL = 1.0
"""Seconds between two progress writes of one job: the reports in between are coalesced into the last."""


class ProgressWriter(Service):
    """The latest progress report per running job, and the loop that writes them."""

    name = "progress"

    def __init__(self, db: WorkerDatabase, queries: Queries) -> None:
        super().__init__()
        self.db, self.q = db, queries
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[str, str]] = {}
        """Job id: (lease id, progress as JSON), reported and not written yet."""
        self._written: dict[int, float] = {}
        """Job id: ``time.monotonic()`` of its last write."""
        self._ready = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        super().start()

    def sink(self, job_id: int, lease_id: Any) -> Callable[[dict[str, Any]], None]:
        """Where one job's handler sends its reports (``JobContext._progress_sink``)."""
        return functools.partial(self.offer, job_id, str(lease_id))

    def offer(self, job_id: int, lease_id: str, progress: dict[str, Any]) -> None:
        """Take a report, from any thread: it replaces one of the same job not written yet."""
        body = json.dumps(progress, ensure_ascii=False)
        with self._lock:
            self._pending[job_id] = (str(lease_id), body)
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._ready.set)
        except RuntimeError:  # the loop has closed: the worker is gone
            pass

    def take(self, job_id: int) -> tuple[str, str] | None:
        """The job's handler returned: its report not written yet, if any (then forget the job)."""
        if not self._pending:  # the common case, without the lock
            self._written.pop(job_id, None)
            return None
        with self._lock:
            pending = self._pending.pop(job_id, None)
        self._written.pop(job_id, None)
        return pending

    async def write_last(self, job_id: int, report: tuple[str, str]) -> None:
        """Write a job's last report before its outcome is recorded; a failure only loses the report."""
        try:
            await self._write({job_id: report})
        except (psycopg.Error, OSError, TimeoutError) as exc:
            log.warning("recording job %s's last progress failed (%s)", job_id, describe(exc))

    def forget(self, job_id: int) -> None:
        """The job was cancelled or its lease lost: its reports would update nothing."""
        with self._lock:
            self._pending.pop(job_id, None)
        self._written.pop(job_id, None)

    async def run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            now = time.monotonic()
            with self._lock:
                due = {
                    job_id: pending
                    for job_id, pending in self._pending.items()
                    if now - self._written.get(job_id, -PROGRESS_INTERVAL) >= PROGRESS_INTERVAL
                }
                for job_id in due:
                    del self._pending[job_id]
                held = [self._written[job_id] for job_id in self._pending if job_id in self._written]
            if due:
                for job_id in due:
                    self._written[job_id] = now
                try:
                    await self._write(due)
                except (psycopg.Error, OSError, TimeoutError) as exc:
                    log.warning("recording job progress failed (%s)", describe(exc))
            if held:
                # Reports held back by the throttle: come back when the first of them is due.
                wait = max(0.0, min(held) + PROGRESS_INTERVAL - time.monotonic())
                await wait_any(self._ready, timeout=wait)
                self._ready.set()

    async def _write(self, reports: dict[int, tuple[str, str]]) -> None:
        params = {
            "id": number_array(list(reports)),
            "lease_id": text_array([lease for lease, _ in reports.values()]),
            "progress": text_array([body for _, body in reports.values()]),
        }
        async with self.db.pooled() as conn:
            await conn.execute(self.q.set_progress, params)
