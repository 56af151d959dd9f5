"""The App: task registry, enqueueing, job look-ups. Workers run what it registers."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import EllipsisType
from typing import TYPE_CHECKING, Any

import psycopg

from .codec import encode_data
from .cron import Spec
from .db import ops
from .db.admin import AdminMethods
from .db.insert import JobTemplate, NewJob, Unencoded, make_template, templates_of
from .db.notifier import Notifier
from .db.pool import AsyncProducerPool, ProducerPool, SchemaGate
from .db.queues import QueueMethods
from .db.sql import channel, queries
from .errors import ConfigurationError, InvalidJob
from .job import DEFAULT_QUEUE, Job, JobId, JobOptions, validate_name
from .lifecycle import LifecycleMethods
from .limits import TaskLimits, check_keyed
from .results import ResultMethods
from .running import WorkerMethods
from .schedules import ScheduleMethods
from .settings import (
    enqueue_timeout_default,
    prepared_statements_default,
    resolve_database_url,
    resolve_schema,
    validate_enqueue_timeout,
)
from .task import F, Task

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from .worker.events import WorkerEvents

    EnqueueTrace = Callable[[Sequence[NewJob]], AbstractContextManager[str | None]]

EXECUTORS = ("async", "thread", "process")


# drain(): a worker in burst mode that notices freed slots and new jobs quickly, without a listener.
class App(AdminMethods, QueueMethods, WorkerMethods, ResultMethods, ScheduleMethods, LifecycleMethods):
    """A pgqueue application: where jobs live and which handlers run them.

    >>> app = pgqueue.App()          # database: argument > PGQUEUE_DATABASE_URL > DATABASE_URL > embedded
    >>> @app.task("send-welcome-email", queue="emails", max_attempts=5, timeout=30)
    ... def send_welcome_email(user_id: int) -> None: ...
    >>> send_welcome_email.enqueue(user_id=42, conn=conn)   # inside the caller's transaction
    """

    def __init__(
        self,
        database_url: str | None = None,
        schema: str | None = None,
        *,
        max_payload_bytes: int = 1024 * 1024,
        notify: bool = True,
        prepared_statements: bool | None = None,
        pool_size: int = 10,
        max_attempts: int = 5,
        retry_delay: float = 1.0,
        retry_backoff: bool = True,
        retry_delay_max: float = 3600.0,
        enqueue_timeout: float | EllipsisType | None = ...,
    ) -> None:
        """``enqueue_timeout``: the longest an enqueue or look-up on the App's own pool (without
        ``conn=``) may wait for a connection and run, in seconds; None: no limit; unset:
        ``PGQUEUE_ENQUEUE_TIMEOUT``, else 10. Past it: :class:`pgqueue.errors.EnqueueTimeout`."""
        self.schema = resolve_schema(schema)
        self._database_url = database_url
        self._resolved_url: str | None = None
        if not isinstance(max_payload_bytes, int) or max_payload_bytes < 2:
            raise ConfigurationError("max_payload_bytes must be a positive number of bytes")
        self.max_payload_bytes = max_payload_bytes
        self.notify = notify
        if prepared_statements is None:
            prepared_statements = prepared_statements_default()
        # False behind a pooler in transaction mode that cannot keep prepared statements
        # (pgbouncer before 1.21, or with max_prepared_statements = 0).
        self.prepared_statements = prepared_statements
        self.pool_size = pool_size
        self.enqueue_timeout = (
            enqueue_timeout_default() if enqueue_timeout is ... else validate_enqueue_timeout(enqueue_timeout)
        )
        self.defaults = JobOptions.build(
            max_attempts=max_attempts,
            retry_delay=retry_delay,
            retry_backoff=retry_backoff,
            retry_delay_max=retry_delay_max,
        )
        self.tasks: dict[str, Task[Any]] = {}
        self._periodic: list[tuple[Any, Spec]] = []  # declared with @app.periodic
        self._templates: dict[tuple[str, JobOptions], JobTemplate] = {}
        self._notifier: Notifier | None = None
        self._lock = threading.Lock()
        self._worker_events: list[WorkerEvents] = []
        self._enqueue_trace: EnqueueTrace | None = None
        """Set by :func:`pgqueue.tracing.instrument`: a context manager around each enqueue that
        yields the trace context (JSON text) to store with the jobs."""
        gate = SchemaGate(self.schema)

        def url() -> str:  # resolved on first use: it may start the embedded server
            return self.database_url

        limit = self.enqueue_timeout
        self._pool = ProducerPool(url, self.connect_kwargs, pool_size, gate, "pgqueue", limit)
        self._apool = AsyncProducerPool(url, self.connect_kwargs, pool_size, gate, "pgqueue-async", limit)
        # Bound once: these run on every enqueue.
        self._execute = self._pool.execute
        self._aexecute = self._apool.execute

    # --- registry ------------------------------------------------------------------------

    def task(
        self,
        name: str,
        *,
        queue: str = DEFAULT_QUEUE,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        retry_delay: float | None = None,
        retry_backoff: bool | None = None,
        retry_delay_max: float | None = None,
        concurrency: int | None = None,
        executor: str | None = None,
        unique_for: float | None = None,
        debounce: float | None = None,
        global_concurrency: int | None = None,
        rate_limit: str | None = None,
        key_concurrency: int | None = None,
        key_rate_limit: str | None = None,
        fair: bool = False,
        dead_letter: str | None = None,
    ) -> Callable[[F], Task[F]]:
        """Register a handler for the job type ``name``.

        ``unique_for`` / ``debounce``: the window of this task's enqueues that give a ``unique_key``
        (see :meth:`Task.using`).

        ``dead_letter``: a queue that a copy of each job that fails for good goes to (redrive it
        with :meth:`redrive`).

        ``executor``: ``"async"`` (default for ``async def``) runs on the worker's event loop,
        ``"thread"`` (default otherwise) in a thread, ``"process"`` in a pool of processes for
        CPU-bound work (the handler must be a module-level function).

        Limits across every worker, kept in the claim on the database's clock:
        ``global_concurrency`` (most jobs of the type running at once), ``rate_limit`` (most
        starts per window: ``"100/s"``, ``"600/m"``, ``"10/5s"``), and per concurrency key (a job's
        ``using(concurrency_key=...)``) ``key_concurrency`` and ``key_rate_limit``. ``fair=True``:
        claims go round-robin over the keys (a key with many jobs waiting starves none with few).
        """
        limits = TaskLimits.build(
            name,
            global_concurrency=global_concurrency,
            rate_limit=rate_limit,
            key_concurrency=key_concurrency,
            key_rate_limit=key_rate_limit,
            fair=fair,
        )
        validate_name("task", name)
        options = JobOptions.build(
            queue=queue,
            priority=priority,
            max_attempts=max_attempts,
            timeout=timeout,
            retry_delay=retry_delay,
            retry_backoff=retry_backoff,
            retry_delay_max=retry_delay_max,
            unique_for=unique_for,
            debounce=debounce,
            dead_letter=dead_letter,
        )
        if concurrency is not None and (
            isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
        ):
            raise ConfigurationError(f"task {name!r}: concurrency must be a positive integer")

        def register(fn: F) -> Task[F]:
            if name in self.tasks:
                raise ConfigurationError(f"a task named {name!r} is already registered")
            is_async = inspect.iscoroutinefunction(fn)
            chosen = executor or ("async" if is_async else "thread")
            if chosen not in EXECUTORS:
                raise ConfigurationError(f"task {name!r}: executor must be one of {EXECUTORS}")
            if chosen == "async" and not is_async:
                raise ConfigurationError(f"task {name!r}: executor='async' needs an async def handler")
            if chosen != "async" and is_async:
                raise ConfigurationError(f"task {name!r}: an async def handler runs with executor='async'")
            if chosen == "process" and "<locals>" in getattr(fn, "__qualname__", "<locals>"):
                raise ConfigurationError(
                    f"task {name!r}: a process handler must be a module-level function, importable by name"
                )
            task = Task(self, name, fn, options, chosen, concurrency, limits)
            self.tasks[name] = task
            return task

        return register

    @property
    def queues(self) -> list[str]:
        """The queues of the registered tasks, in registration order."""
        return list(dict.fromkeys(t.options.queue or DEFAULT_QUEUE for t in self.tasks.values()))

    # --- enqueueing ----------------------------------------------------------------------

    def _template(self, type_: str, options: JobOptions) -> JobTemplate:
        """The validated settings of a job of this type with these options (cached: bulk enqueues
        of one task validate and merge once)."""
        key = (type_, options)
        template = self._templates.get(key)
        if template is None:
            validate_name("job type", type_)
            task = self.tasks.get(type_)
            if options.concurrency_key is not None and task is not None:
                check_keyed(type_, task.limits)
            template = make_template(type_, task.options if task else None, options, self.defaults)
            if len(self._templates) >= 1024:
                self._templates.clear()
            self._templates[key] = template
        return template

    def _new_job(
        self, type_: str, data: Mapping[str, Any] | None, options: JobOptions, deferred: bool = False
    ) -> NewJob:
        template = self._template(type_, options)
        if deferred:  # the App's pool: encoded as it is sent (see Unencoded)
            return template, Unencoded({} if data is None else data, self.max_payload_bytes)
        return template, encode_data({} if data is None else data, self.max_payload_bytes)

    def _jobs(self, items: Iterable[Any], conn: Any) -> list[NewJob]:
        jobs = []
        for item in items:
            if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                raise InvalidJob("enqueue_many takes (type, data) or (type, data, options) tuples")
            options: Any = item[2] if len(item) == 3 else {}
            if not isinstance(options, Mapping) or not all(isinstance(name, str) for name in options):
                raise InvalidJob(f"job options must be a mapping of option names to values, not {options!r}")
            jobs.append(self._new_job(item[0], item[1], JobOptions.build(**options), deferred=conn is None))
        return jobs

    def enqueue(
        self, type: str, data: Mapping[str, Any] | None = None, conn: Any = None, **options: Any
    ) -> JobId | None:
        """Enqueue a job by type name, for producers that do not import the handler's code.

        >>> app.enqueue("send-welcome-email", {"user_id": 1}, conn=conn, delay=60)
        """
        return self._insert([self._new_job(type, data, JobOptions.build(**options))], conn)[0]

    async def aenqueue(
        self, type: str, data: Mapping[str, Any] | None = None, conn: Any = None, **options: Any
    ) -> JobId | None:
        return (await self._ainsert([self._new_job(type, data, JobOptions.build(**options))], conn))[0]

    def enqueue_many(self, items: Iterable[Any], conn: Any = None) -> list[JobId | None]:
        """Enqueue ``(type, data)`` or ``(type, data, options)`` items in one statement; ids in order."""
        return self._insert(self._jobs(items, conn), conn)

    async def aenqueue_many(self, items: Iterable[Any], conn: Any = None) -> list[JobId | None]:
        return await self._ainsert(self._jobs(items, conn), conn)

    def _insert(self, jobs: Sequence[NewJob], conn: Any) -> list[JobId | None]:
        if self._enqueue_trace is not None:
            with self._enqueue_trace(jobs) as trace:
                return self._execute(ops.insert_jobs(self.schema, jobs, self.notify, trace), conn)
        if conn is not None:
            return self._execute(ops.insert_jobs(self.schema, jobs, self.notify), conn)
        # On the App's own pool each statement commits by itself: as a rule no NOTIFY in it (it
        # would serialise concurrent commits); the notifier thread wakes the workers just after.
        # After a quiet spell the statement carries its own, so that workers wake on its commit.
        if self.notify and self._notifier_for().quiet():
            return self._execute(ops.insert_jobs(self.schema, jobs, notify=True), None)
        ids = self._execute(ops.insert_jobs(self.schema, jobs, notify=False), None)
        self._wake(jobs, ids)
        return ids

    async def _ainsert(self, jobs: Sequence[NewJob], conn: Any) -> list[JobId | None]:
        if self._enqueue_trace is not None:
            with self._enqueue_trace(jobs) as trace:
                return await self._aexecute(ops.insert_jobs(self.schema, jobs, self.notify, trace), conn)
        if conn is not None:
            return await self._aexecute(ops.insert_jobs(self.schema, jobs, self.notify), conn)
        if self.notify and self._notifier_for().quiet():
            return await self._aexecute(ops.insert_jobs(self.schema, jobs, notify=True), None)
        ids = await self._aexecute(ops.insert_jobs(self.schema, jobs, notify=False), None)
        self._wake(jobs, ids)
        return ids

    def _wake(self, jobs: Sequence[NewJob], ids: Sequence[JobId | None]) -> None:
        """After a commit on the App's own pool: wake the inserted jobs' queues from the notifier thread."""
        if not self.notify:
            return
        if len(jobs) == 1:
            queues: Iterable[str] = (jobs[0][0].queue,) if ids[0] is not None else ()
        elif len(templates := templates_of(jobs)) == 1:
            queues = (templates[0].queue,) if any(job_id is not None for job_id in ids) else ()
        else:
            queues = {
                template.queue for (template, _), job_id in zip(jobs, ids, strict=True) if job_id is not None
            }
        if queues:
            self._notifier_for().poke(queues)

    def _notifier_for(self) -> Notifier:
        notifier = self._notifier
        if notifier is None:
            with self._lock:
                if self._notifier is None:
                    self._notifier = Notifier(
                        lambda: self.connect("pgqueue-notifier"),
                        queries(self.schema).notify_bare,
                        channel(self.schema),
                    )
                notifier = self._notifier
        return notifier

    # --- jobs ----------------------------------------------------------------------------

    def get_job(self, job_id: Any, conn: Any = None) -> Job:
        """The job with that id, or uid (state, attempts, output, error...); JobNotFound if there is none."""
        return self._execute(ops.get_job(self.schema, job_id), conn)

    async def aget_job(self, job_id: Any, conn: Any = None) -> Job:
        return await self._aexecute(ops.get_job(self.schema, job_id), conn)

    def cancel_job(self, job_id: Any, conn: Any = None) -> bool:
        """Cancel a job (by id or uid) that has not finished; False if it already had."""
        return self._execute(ops.cancel_job(self.schema, job_id), conn)

    def retry_job(self, job_id: Any, conn: Any = None) -> bool:
        """Run a failed or cancelled job (by id or uid) again now; False if it was in another state."""
        return self._execute(ops.retry_job(self.schema, job_id, self.notify), conn)

    def counts(self, conn: Any = None) -> dict[str, dict[str, int]]:
        """Jobs per queue and state."""
        return self._execute(ops.counts(self.schema), conn)

    # --- connections ---------------------------------------------------------------------

    @property
    def database_url(self) -> str:
        """The resolved database URL (starting the embedded server if that is the default)."""
        with self._lock:
            if self._resolved_url is None:
                self._resolved_url = resolve_database_url(self._database_url)
            return self._resolved_url

    def connect_kwargs(self, application_name: str = "pgqueue") -> dict[str, Any]:
        """Keyword arguments for the connections pgqueue opens itself."""
        kwargs: dict[str, Any] = {"autocommit": True, "application_name": application_name}
        if not self.prepared_statements:
            kwargs["prepare_threshold"] = None
        return kwargs

    def connect(self, application_name: str = "pgqueue") -> psycopg.Connection[Any]:
        """A new autocommit connection to the app's database (the caller closes it)."""
        return psycopg.connect(self.database_url, **self.connect_kwargs(application_name))

    def close(self) -> None:
        """Send pending wake-ups and close the app's connection pools."""
        if self._notifier is not None:
            self._notifier.close()
            self._notifier = None
        self._pool.close()

    async def aclose(self) -> None:
        self.close()
        await self._apool.close()

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<pgqueue.App schema={self.schema!r} tasks={sorted(self.tasks)}>"
