"""Wake-ups for jobs enqueued on the App's own pool, sent after their commit.

A NOTIFY inside the enqueueing transaction makes its commit take PostgreSQL's global
notification lock, which serialises the commits of concurrent producers and defeats group
commit. Jobs enqueued on the App's own pool commit by themselves, so their wake-up can
follow the commit instead, from a connection of its own: one NOTIFY per queue per round
trip, however many jobs committed meanwhile. (A NOTIFY-only transaction writes no WAL.)

Jobs enqueued on the caller's connection still NOTIFY inside the caller's transaction:
only the caller knows when it commits.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import psycopg
from psycopg import pq, sql

from ..codec import text_array

log = logging.getLogger("pgqueue")


class Notifier:
    """A daemon thread that sends coalesced NOTIFYs for the queues it is poked with.

    After each NOTIFY it waits ``min_interval`` seconds, gathering the queues poked meanwhile
    into the next one: a busy producer sends at most one wake-up per ``min_interval``,
    whatever its rate. The first job after a quiet spell does not wait for this thread:
    :meth:`quiet` tells its enqueue to carry its NOTIFY in its own statement, so that the
    wake-up leaves with its commit (one notifying commit per ``min_interval`` does not hold
    up other producers), and the thread's next NOTIFY keeps its distance from it.

    A wake-up costs ~250 µs of CPU, in this thread and in PostgreSQL; several producer
    processes each pay it. At 10 ms a busy producer spends ~2.5 % of a core on them, and a
    job enqueued while workers sit idle waits 5 ms for its wake-up on average (at 5 ms,
    twice the CPU for 2.5 ms: four enqueuing processes on two cores lost 15 % of their
    throughput to wake-ups, against 6 % at 10 ms).
    """

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        statement: sql.Composable | bytes,
        channel: str,
        min_interval: float = 0.010,
    ) -> None:
        self._connect = connect
        self._min_interval = min_interval
        self._statement = statement.as_bytes(None) if isinstance(statement, sql.Composable) else statement
        self._channel = channel
        self._pending: set[str] = set()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._idle = False  # the thread waits for a poke
        self._closed = False
        self._last_sent = -min_interval  # time.monotonic() of the latest wake-up sent
        _live.add(self)

    def quiet(self) -> bool:
        """True if no wake-up went out for ``min_interval`` and none is pending: the caller
        then sends this one inside its own statement (counted as sent now)."""
        now = time.monotonic()
        if self._pending or now - self._last_sent < self._min_interval:  # busy: no lock taken
            return False
        with self._cond:
            if self._pending or now - self._last_sent < self._min_interval:
                return False
            self._last_sent = now
            return True

    def poke(self, queues: Iterable[str]) -> None:
        """Wake the workers of these queues soon (the jobs are committed already)."""
        # Queues already pending need nothing: whichever set they are seen in, that set is
        # sent after this moment, so after these jobs' commit. (The common case while busy,
        # taken without the lock.)
        pending = self._pending
        for queue in queues:
            if queue not in pending:
                break
        else:
            return
        with self._cond:
            self._pending.update(queues)
            if self._thread is None:
                self._closed = False
                self._thread = threading.Thread(target=self._run, name="pgqueue-notifier", daemon=True)
                self._thread.start()
            if self._idle:
                self._cond.notify()

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        try:
            while True:
                with self._cond:
                    while not self._pending and not self._closed:
                        self._idle = True
                        self._cond.wait()
                        self._idle = False
                    if not self._pending:
                        return
                    wait = self._last_sent + self._min_interval - time.monotonic()
                if wait > 0:  # an enqueue has just sent a wake-up of its own
                    time.sleep(wait)
                with self._cond:
                    queues, self._pending = sorted(self._pending), set()
                    self._last_sent = time.monotonic()
                try:
                    conn = self._send_on(conn, queues)
                except Exception as exc:  # noqa: BLE001 - the thread must live on: workers poll too,
                    # so a lost wake-up costs at most one poll interval.
                    log.warning("could not send a wake-up for queues %s: %s", ", ".join(queues), exc)
                    conn = None
                time.sleep(self._min_interval)
        finally:
            if conn is not None:
                conn.close()

    def _send_on(self, conn: psycopg.Connection[Any] | None, queues: list[str]) -> psycopg.Connection[Any]:
        """Send on ``conn``, else on a new connection; return the connection that worked."""
        if conn is not None and not conn.closed:
            try:
                self._send(conn, queues)
                return conn
            except psycopg.OperationalError:
                conn.close()  # gone stale (a restart, an idle timeout): one retry on a new connection
        conn = self._connect()
        try:
            self._send(conn, queues)
        except BaseException:
            conn.close()
            raise
        return conn

    def _send(self, conn: psycopg.Connection[Any], queues: list[str]) -> None:
        # The bare libpq call, not a cursor: this thread wakes every few milliseconds with
        # cold caches, where a cursor's Python code cost three times the libpq call (which
        # releases the GIL while it waits for the server).
        encoding = conn.info.encoding
        params = [self._channel.encode(encoding), text_array(queues).encode(encoding)]
        result = conn.pgconn.exec_params(self._statement, params)
        if result.status != pq.ExecStatus.TUPLES_OK:
            message = result.error_message.decode("utf-8", "replace").strip()
            raise psycopg.OperationalError(message or "the wake-up statement failed")

    def _forked(self) -> None:
        # In a forked child the thread is gone and the lock may have been held mid-fork:
        # start afresh; the first poke starts a thread of the child's own.
        self._cond = threading.Condition()
        self._pending = set()
        self._thread = None
        self._idle = False
        self._closed = False
        self._last_sent = -self._min_interval

    def close(self, timeout: float = 5.0) -> None:
        """Send what is pending, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
            self._thread = None
        if thread is not None and thread.is_alive():
            thread.join(timeout)


_live: weakref.WeakSet[Notifier] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for notifier in list(_live):
        notifier._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
