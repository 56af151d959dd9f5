"""What a worker needs from an App, and no more: the worker never sees the App itself."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..cron import Spec
from ..job import JobOptions
from ..limits import TaskLimits
from .events import WorkerEvents


class Handler(Protocol):
    """A registered task as the worker sees it (:class:`pgqueue.Task` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def fn(self) -> Callable[..., Any]: ...
    @property
    def options(self) -> JobOptions: ...
    @property
    def executor(self) -> str: ...
    @property
    def concurrency(self) -> int | None: ...
    @property
    def limits(self) -> TaskLimits | None: ...


@dataclass(frozen=True)
class Runtime:
    """The database, schema, task registry and defaults a worker runs with.

    Built by :meth:`pgqueue.App.runtime`; the worker takes this instead of the App, so the
    worker package never imports the App (nor the App the worker, but to start one).
    """

    schema: str
    """pgqueue's schema (validated)."""
    database_url: str
    """The resolved database URL (the embedded server is started before this is built)."""
    connect_kwargs: Mapping[str, Any]
    """Keyword arguments for the connections the worker opens (autocommit, prepared statements)."""
    tasks: Mapping[str, Handler]
    """The handlers by job type."""
    defaults: JobOptions
    """App-wide defaults of the retry settings, used where neither the job nor its task sets one."""
    events: WorkerEvents | None = None
    """The observers of the worker (metrics, tracing) as one, or None when there are none."""
    schedules: Sequence[Spec] = ()
    """The periodic schedules declared in code, written to the schedule table when the worker starts."""

    @property
    def queues(self) -> list[str]:
        """The queues of the registered tasks, in registration order."""
        return list(dict.fromkeys(task.options.queue or "default" for task in self.tasks.values()))

    def connect_kwargs_for(self, application_name: str) -> dict[str, Any]:
        return {**self.connect_kwargs, "application_name": application_name}
