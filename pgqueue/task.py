"""Tasks: a handler registered under a job type, and the calls that enqueue it."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .codec import encode_data
from .db.insert import Batch, JobTemplate, NewJob
from .job import JobId, JobOptions
from .limits import TaskLimits

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
    limits: TaskLimits | None = None
    """Limits across every worker (global and per-key concurrency, rate limits); None: none."""

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def using(self, /, **options: Any) -> TaskCall:
        """Per-call options: ``delay``, ``run_at``, ``priority``, ``queue``, ``max_attempts``,
        ``retry_delay``, ``retry_backoff``, ``retry_delay_max``, ``timeout``, ``unique_key``,
        ``unique_for``, ``debounce``,
        ``concurrency_key`` (what the task's ``key_concurrency`` and ``key_rate_limit`` count by),
        ``dead_letter``, ``depends_on`` (ids of jobs that must complete first).

        ``unique_key`` alone: while a job with the key waits or runs, another enqueue returns None.
        With ``unique_for=seconds``: at most one job per key in that window, even once it finished;
        a duplicate returns the existing job's id (``created`` False). With ``debounce=seconds``:
        the job runs that long after the last enqueue of its key, with that enqueue's data.

        >>> send_email.using(delay=timedelta(minutes=5), priority=10).enqueue(user_id=42)
        >>> reindex.using(unique_key=f"doc-{doc_id}", debounce=5).enqueue(doc_id=doc_id)
        >>> report.using(depends_on=[extract_id, load_id]).enqueue(conn=conn)
        """
        return TaskCall(self, JobOptions.build(**options))

    @functools.cached_property
    def _call(self) -> TaskCall:
        return TaskCall(self, JobOptions())

    def enqueue(self, /, conn: Any = None, **data: Any) -> JobId | None:
        """Enqueue one job with ``data`` as the handler's keyword arguments; return its id.

        With ``conn=`` (psycopg, SQLAlchemy or Django), the job joins that connection's open
        transaction: it exists if and only if the transaction commits.
        """
        app = self.app
        return app._insert([(self._call._template, encode_data(data, app.max_payload_bytes))], conn)[0]

    async def aenqueue(self, /, conn: Any = None, **data: Any) -> JobId | None:
        """Async twin of :meth:`enqueue`."""
        app = self.app
        return (await app._ainsert([(self._call._template, encode_data(data, app.max_payload_bytes))], conn))[
            0
        ]

    def enqueue_many(self, items: Iterable[Mapping[str, Any]], conn: Any = None) -> list[JobId | None]:
        """Enqueue one job per mapping of arguments, in one statement; return the ids in order."""
        return self._call.enqueue_many(items, conn)

    async def aenqueue_many(self, items: Iterable[Mapping[str, Any]], conn: Any = None) -> list[JobId | None]:
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

    def _jobs(self, items: Iterable[Mapping[str, Any]], conn: Any) -> Sequence[NewJob]:
        template, limit = self._template, self.task.app.max_payload_bytes
        if conn is None:  # the App's pool: encoded as they are sent (see Batch)
            return Batch(template, list(items), limit)
        return [(template, encode_data({} if data is None else data, limit)) for data in items]

    def enqueue(self, /, conn: Any = None, **data: Any) -> JobId | None:
        app = self.task.app
        return app._insert([(self._template, encode_data(data, app.max_payload_bytes))], conn)[0]

    async def aenqueue(self, /, conn: Any = None, **data: Any) -> JobId | None:
        app = self.task.app
        return (await app._ainsert([(self._template, encode_data(data, app.max_payload_bytes))], conn))[0]

    def enqueue_many(self, items: Iterable[Mapping[str, Any]], conn: Any = None) -> list[JobId | None]:
        return self.task.app._insert(self._jobs(items, conn), conn)

    async def aenqueue_many(self, items: Iterable[Mapping[str, Any]], conn: Any = None) -> list[JobId | None]:
        return await self.task.app._ainsert(self._jobs(items, conn), conn)
