"""How one worker process runs: :class:`WorkerConfig`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

from ..errors import ConfigurationError
from ..job import validate_name

MAX_CONCURRENCY = 10_000
"""More jobs than this at once in one process is a typo, not a configuration: use more processes."""


@dataclass(frozen=True)
class WorkerConfig:
    """How one worker process runs. ``pgqueue work`` sets each field but ``worker_id`` from a flag
    or its ``PGQUEUE_*`` environment twin (``listen_database_url``: ``PGQUEUE_LISTEN_DATABASE_URL``)."""

    queues: Sequence[str] | None = None
    """Queues to take jobs from; None means every queue of the app's registered tasks."""
    concurrency: int = 10
    """Jobs this process runs at once, across all task types (tasks may set a lower cap of their own)."""
    burst: bool = False
    """Exit (normally) once nothing is running and nothing is runnable, instead of waiting for more."""
    poll_interval: float = 1.0
    """Seconds between polls when no notification arrives. Polling never stops; NOTIFY only shortens the wait."""
    shutdown_grace: float = 30.0
    """Seconds running jobs get to finish after SIGTERM; then they are handed back to the queue at once."""
    listen: bool = True
    """Wake on LISTEN/NOTIFY. False polls only (for poolers that cannot LISTEN)."""
    lease_seconds: float = 15.0
    """How long a claim holds a job without a heartbeat; heartbeats renew it every third of that."""
    rescue_interval: float = 5.0
    """Seconds between sweeps that hand back jobs whose lease expired (their worker died)."""
    prune_interval: float = 60.0
    """Seconds between deletions of finished jobs older than their retention."""
    completed_retention: float = 3600.0
    """Seconds a completed job is kept (for get_job and status) before it is deleted."""
    failed_retention: float = 7 * 86400.0
    """Seconds a failed or cancelled job is kept before it is deleted."""
    worker_id: str | None = None
    """A name for this worker in the worker table and job rows; default host:pid:random."""
    xmin_warning: float = 300.0
    """Seconds a transaction (or replication slot, or prepared transaction) may hold the xmin
    horizon back before workers warn: meanwhile dead job rows pile up and claims slow down."""
    async_commit: bool = False
    """Commit claims and outcomes without waiting for the WAL flush (``synchronous_commit=off``
    on the worker's connections). It halves the cost of each exchange; a database crash (not a
    worker crash) may then forget the last fraction of a second of claims and outcomes, and
    those jobs run again: at-least-once still holds, and enqueues, made by producers, are never
    affected."""
    listen_database_url: str | None = None
    """A direct connection for LISTEN when the app's URL goes through a pooler in transaction mode
    (where LISTEN cannot work). Default: $PGQUEUE_LISTEN_DATABASE_URL, else the app's URL."""

    def __post_init__(self) -> None:
        if self.listen_database_url is None and os.environ.get("PGQUEUE_LISTEN_DATABASE_URL"):
            object.__setattr__(self, "listen_database_url", os.environ["PGQUEUE_LISTEN_DATABASE_URL"])

    def validated(self) -> "WorkerConfig":
        if (isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int)
                or not 1 <= self.concurrency <= MAX_CONCURRENCY):
            raise ConfigurationError(
                f"concurrency must be an integer from 1 to {MAX_CONCURRENCY:,}, got {self.concurrency!r}"
            )
        if self.worker_id is not None:
            try:
                validate_name("worker", self.worker_id)
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from None
        for name in ("poll_interval", "shutdown_grace", "lease_seconds", "rescue_interval", "prune_interval",
                     "completed_retention", "failed_retention", "xmin_warning"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ConfigurationError(f"{name} must be a non-negative number of seconds, got {value!r}")
        if self.poll_interval <= 0 or self.lease_seconds < 1 or self.rescue_interval <= 0:
            raise ConfigurationError("poll_interval and rescue_interval must be positive, lease_seconds at least 1")
        if self.queues is not None:
            if isinstance(self.queues, str):
                raise ConfigurationError("queues must be a list of queue names, not a string")
            for queue in self.queues:
                try:
                    validate_name("queue", queue)
                except ValueError as exc:
                    raise ConfigurationError(str(exc)) from None
        return self
