"""A time limit on the statements of the sync producer pool.

An async enqueue is bounded by ``asyncio.timeout``; a sync one has no such thing, and its
connection may be waiting on a server that is alive but stuck (a lock, a synchronous standby
that went away). One daemon thread per pool looks at the statements in flight every
``TICK`` seconds and asks the server to cancel those past their deadline: the statement then
fails with ``QueryCanceled``. A server that cannot be reached at all is left to the
connection's ``tcp_user_timeout``. Watching a statement costs a dict update; nothing is sent
unless a deadline passes. (A server-side ``statement_timeout`` would do the same, but as a
startup option it is refused by poolers such as pgbouncer unless told to ignore it.)
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger("pgqueue.db")

TICK = 0.05
"""Seconds between two looks at the statements in flight."""


class Watchdog:
    """Cancels the statements of watched connections that run past their deadline."""

    def __init__(self) -> None:
        self._watched: dict[int, tuple[float, Any]] = {}
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def watch(self, conn: Any, deadline: float | None) -> None:
        """``conn`` runs a statement that must end by ``deadline`` (time.monotonic; None: no limit)."""
        if deadline is None:
            return
        self._watched[id(conn)] = (deadline, conn)
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="pgqueue-watchdog", daemon=True)
                    self._thread.start()

    def unwatch(self, conn: Any) -> None:
        """``conn``'s statement has ended."""
        self._watched.pop(id(conn), None)

    def _run(self) -> None:
        while True:
            time.sleep(TICK)
            now = time.monotonic()
            for key, entry in list(self._watched.items()):
                deadline, conn = entry
                if now < deadline or self._watched.get(key) is not entry:
                    continue
                self._watched.pop(key, None)
                try:
                    conn.cancel_safe(timeout=5.0)
                except Exception as exc:  # noqa: BLE001 - the connection's own limits remain
                    log.debug("cancelling a statement past its deadline failed: %s", exc)
