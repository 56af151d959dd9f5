"""The App's methods that run workers in this process (mixed into :class:`pgqueue.App`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from .cron import Spec
from .job import JobOptions
from .settings import WorkerConfig
from .worker import Runtime, Worker, run_blocking
from .worker.events import WorkerEvents, combine
from .worker.runtime import Handler

DRAIN_CONFIG = {"poll_interval": 0.05, "lease_seconds": 5.0, "listen": False, "shutdown_grace": 5.0}
"""Worker settings for :meth:`WorkerMethods.drain`: quick polls, short leases, no listener."""


class _Host(Protocol):
    """What the methods below need of the App they are mixed into."""

    schema: str
    defaults: JobOptions

    @property
    def tasks(self) -> Mapping[str, Handler]: ...

    _worker_events: list[WorkerEvents]

    @property
    def database_url(self) -> str: ...

    def connect_kwargs(self, application_name: str = ...) -> dict[str, Any]: ...

    def runtime(self) -> Runtime: ...

    def periodic_schedules(self) -> list[Spec]: ...

    async def arun_worker(self, **config: Any) -> None: ...

    async def adrain(self, **config: Any) -> dict[str, int]: ...


class WorkerMethods:
    """Run a worker in this process: until stopped, or until nothing is left (tests)."""

    def run_worker(self: _Host, **config: Any) -> None:
        """Run a worker in this process until it is stopped (or, with ``burst=True``, idle).

        Takes the :class:`pgqueue.WorkerConfig` fields as keywords.
        """
        run_blocking(self.arun_worker(**config), config.get("event_loop", "auto"))

    async def arun_worker(self: _Host, **config: Any) -> None:
        await Worker(self.runtime(), WorkerConfig(**config)).run()

    def drain(self: _Host, **config: Any) -> dict[str, int]:
        """Run every job that is runnable now, and the jobs those enqueue, in this process, through
        the real claim and serialization; return once none is left. For tests: delayed jobs (and
        retries waiting out their delay) stay where they are. Returns the worker's counts:
        ``{"completed": 3, "failed": 1, ...}`` (``failed`` counts failed attempts).

        Takes :class:`pgqueue.WorkerConfig` fields as keywords, like :meth:`run_worker`.
        """
        stats: dict[str, int] = {}

        async def main() -> None:
            stats.update(await self.adrain(**config))

        run_blocking(main(), config.get("event_loop", "auto"))
        return stats

    async def adrain(self: _Host, **config: Any) -> dict[str, int]:
        """Async twin of :meth:`drain`."""
        worker = Worker(self.runtime(), WorkerConfig(**{**DRAIN_CONFIG, **config, "burst": True}))
        await worker.run()  # a burst worker ends once nothing is running, due, or being recorded
        return dict(worker.stats)

    def add_worker_events(self: _Host, observer: WorkerEvents) -> None:
        """Let ``observer`` (a :class:`pgqueue.worker.events.WorkerEvents`) hear what this App's
        workers do: jobs started and finished, claims, rescues. ``pgqueue.metrics`` and
        ``pgqueue.tracing`` register themselves here."""
        self._worker_events.append(observer)

    def runtime(self: _Host) -> Runtime:
        """What a worker takes from this App: database, schema, tasks, defaults and observers."""
        return Runtime(
            self.schema,
            self.database_url,
            self.connect_kwargs(),
            self.tasks,
            self.defaults,
            combine(self._worker_events),
            self.periodic_schedules(),
        )
