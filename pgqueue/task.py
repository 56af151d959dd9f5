"""Tasks: a handler registered under a job type, and the calls that enqueue it."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .codec import encode_data
from .db.insert import JobTemplate, NewJob, Unencoded
from .job import JobOptions

if TYPE_CHECKING:
    from .app import App

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Task(Generic[F]):
    """A handler registered under a job type. Call it to run the handler directly (tests);
    ``enqueue`` it to have a worker run it."""

    app: App
    name: str
    fn: F
    options: JobOptions
    executor: str
    concurrency: int | None = None
    """Most jobs of this type one worker process runs at once; None: only the worker's limit."""

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def using(self, /, **options: Any) -> TaskCall:
        """Per-call options: ``delay``, ``run_at``, ``priority``, ``queue``, ``max_attempts``,
        ``retry_delay``, ``retry_backoff``, ``retry_delay_max``, ``timeout``, ``unique_key``,
        ``dead_letter``, ``depends_on`` (ids of jobs that must complete first).

        >>> send_email.using(delay=timedelta(minutes=5), priority=10).enqueue(user_id=42)
        >>> report.using(depends_on=[extract_id, load_id]).enqueue(conn=conn)
        """
        return TaskCall(self, JobOptions.build(**options))

    @functools.cached_property
    def _call(self) -> TaskCall:
        return TaskCall(self, JobOptions())

    def enqueue(self, /, conn: Any = None, **data: Any) -> int | None:
        """Enqueue one job with ``data`` as the handler's keyword arguments; return its id.

        With ``conn=`` (psycopg, SQLAlchemy or Django), the job joins that connection's open
        transaction: it exists if and only if the transaction commits.
        """
        app = self.app
        return app._insert([(self._call._template, encode_data(data, app.max_payload_bytes))], conn)[0]

    async def aenqueue(self, /, conn: Any = None, **data: Any) -> int | None:
        """Async twin of :meth:`enqueue`."""
        app = self.app
        return (await app._ainsert([(self._call._template, encode_data(data, app.max_payload_bytes))], conn))[
            0
        ]

    def enqueue_many(self, items: Iterable[Mapping[str, Any]], conn: Any = None) -> list[int | None]:
        """Enqueue one job per mapping of arguments, in one statement; return the ids in order."""
        return self._call.enqueue_many(items, conn)

    async def aenqueue_many(self, items: Iterable[Mapping[str, Any]], conn: Any = None) -> list[int | None]:
        return await self._call.aenqueue_many(items, conn)


@dataclass(frozen=True)
class TaskCall:
    """A task with per-call options bound, from :meth:`Task.using`."""

    task: Task[Any]
    options: JobOptions

    def using(self, /, **options: Any) -> TaskCall:
        return TaskCall(self.task, self.options.merged(JobOptions.build(**options)))

    @functools.cached_property
    def _template(self) -> JobTemplate:
        return self.task.app._template(self.task.name, self.options)

    def _jobs(self, items: Iterable[Mapping[str, Any]], conn: Any) -> list[NewJob]:
        template, limit = self._template, self.task.app.max_payload_bytes
        if conn is None:  # the App's pool: encoded as they are sent (see Unencoded)
            return [(template, Unencoded({} if data is None else data, limit)) for data in items]
        return [(template, encode_data({} if data is None else data, limit)) for data in items]

    def enqueue(self, /, conn: Any = None, **data: Any) -> int | None:
        app = self.task.app
        return app._insert([(self._template, encode_data(data, app.max_payload_bytes))], conn)[0]

    async def aenqueue(self, /, conn: Any = None, **data: Any) -> int | None:
        app = self.task.app
        return (await app._ainsert([(self._template, encode_data(data, app.max_payload_bytes))], conn))[0]

    def enqueue_many(self, items: Iterable[Mapping[str, Any]], conn: Any = None) -> list[int | None]:
        return self.task.app._insert(self._jobs(items, conn), conn)

    async def aenqueue_many(self, items: Iterable[Mapping[str, Any]], conn: Any = None) -> list[int | None]:
        return await self.task.app._ainsert(self._jobs(items, conn), conn)
