"""The App of a Django project: its database from ``DATABASES``, and enqueues that join the
transaction of Django's connection.

Inside ``transaction.atomic()`` (or with autocommit turned off), a job enqueued without
``conn=`` is written on ``django.db.connections[PGQUEUE["DATABASE"]]``, in the open transaction:
it exists if and only if that transaction commits, and workers are woken by its commit.
Outside a transaction the job is committed at once, on the App's own pool, as Django's own
autocommit would (a job a view enqueues outside ``atomic()`` is no more delayed than the
view's own writes). Async enqueues (``aenqueue``) always commit at once on the App's async
pool: Django has no async transactions to join.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.db import close_old_connections, connections

from ...app import App
from ...codec import encode_data
from ...db.insert import NewJob
from ...job import Job, JobId
from ...settings import resolve_schema
from ...task import F, Task
from .conf import database_alias, database_url, pgqueue_settings

TASK_BACKENDS = ("pgqueue.contrib.django.TaskBackend", "pgqueue.contrib.django.backend.TaskBackend")
"""The ``BACKEND`` of Django task backends that run on pgqueue."""


class DjangoApp(App):
    """A :class:`pgqueue.App` configured from Django's settings (``PGQUEUE`` and ``DATABASES``)
    whose enqueues and look-ups without ``conn=`` join the transaction of Django's connection.

    >>> from pgqueue.contrib.django import app
    >>> @app.task("send-welcome-email")
    ... def send_welcome_email(user_id: int) -> None: ...
    >>> with transaction.atomic():
    ...     user = User.objects.create(email=email)
    ...     send_welcome_email.enqueue(user_id=user.pk)    # committed with the user, or not at all
    """

    def __init__(self, alias: str | None = None, schema: str | None = None, **kwargs: Any) -> None:
        given = pgqueue_settings()
        if "PREPARED_STATEMENTS" in given:
            kwargs.setdefault("prepared_statements", bool(given["PREPARED_STATEMENTS"]))
        super().__init__(None, resolve_schema(schema or given.get("SCHEMA")), **kwargs)
        self.alias = alias or database_alias()
        execute = self._execute
        # Look-ups and admin operations without conn= see (and take part in) the open transaction.
        self._execute = lambda operation, conn: execute(
            operation, conn if conn is not None else self.transaction_connection()
        )

    def task(self, name: str, **options: Any) -> Callable[[F], Task[F]]:
        """Register a handler, as :meth:`pgqueue.App.task` does. A handler run in a thread gets the
        care Django gives a request: its thread's database connections are closed before and after
        each job if they are broken or past ``CONN_MAX_AGE``, and closed when the worker stops."""
        register = super().task(name, **options)

        def decorator(fn: F) -> Task[F]:
            if options.get("executor") == "process" or inspect.iscoroutinefunction(fn):
                return register(fn)
            return register(_with_django_connections(fn))  # type: ignore[arg-type]

        return decorator

    async def arun_worker(self, **config: Any) -> None:
        try:
            await super().arun_worker(**config)
        finally:
            close_handler_connections()

    def transaction_connection(self) -> Any:
        """Django's connection when it is inside a transaction (``atomic()``, or autocommit off),
        else None."""
        connection = connections[self.alias]
        if connection.in_atomic_block:
            return connection
        if connection.connection is not None and not connection.get_autocommit():
            return connection
        return None

    def get_job(self, job_id: Any, conn: Any = None) -> Job:
        return _decoded(super().get_job(job_id, conn))

    def _insert(self, jobs: Sequence[NewJob], conn: Any) -> list[JobId | None]:
        if conn is None:
            conn = self.transaction_connection()
            if conn is not None:
                # Encoded before anything is sent: bad data must not abort the caller's transaction.
                jobs = [(t, data if type(data) is str else encode_data(*data)) for t, data in jobs]
        return super()._insert(jobs, conn)

    @property
    def queues(self) -> list[str]:
        """The queues of the registered tasks, then those of the project's pgqueue task backends
        (their ``QUEUES`` in ``settings.TASKS``, default ``["default"]``)."""
        queues = super().queues
        for params in (getattr(settings, "TASKS", None) or {}).values():
            if isinstance(params, dict) and params.get("BACKEND") in TASK_BACKENDS:
                queues += list(params.get("QUEUES") or ["default"])
        return list(dict.fromkeys(queues))

    @property
    def database_url(self) -> str:
        """The database of ``DATABASES[alias]``, as a libpq connection string."""
        with self._lock:
            if self._resolved_url is None:
                self._resolved_url = database_url(self.alias)
            return self._resolved_url

    def reconfigure(self) -> None:
        """Close the pools and read the database settings again on next use (after a test switches
        databases; ``override_settings`` of ``DATABASES`` or ``PGQUEUE`` calls it). The schema is
        read once, when the App is made."""
        self.close()
        with self._lock:
            self._resolved_url = None
        self.alias = database_alias()


def _decoded(job: Job) -> Job:
    """``job`` with its JSON columns decoded: read on Django's connection, whose psycopg adapters
    leave ``jsonb`` as text (Django's JSONField decodes it), they arrive as strings."""
    if not isinstance(job.data, str):
        return job
    return dataclasses.replace(
        job,
        data=json.loads(job.data),
        output=None if job.output is None else json.loads(job.output),
        errors=json.loads(job.errors) if isinstance(job.errors, str) else job.errors,
        trace=json.loads(job.trace) if isinstance(job.trace, str) else job.trace,
    )


_handler_connections: set[Any] = set()
_handler_connections_lock = threading.Lock()


def _with_django_connections(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def handler(*args: Any, **kwargs: Any) -> Any:
        close_old_connections()
        try:
            return fn(*args, **kwargs)
        finally:
            close_old_connections()
            opened = connections.all(initialized_only=True)
            if opened:
                with _handler_connections_lock:
                    _handler_connections.update(opened)

    return handler


def close_handler_connections() -> None:
    """Close the Django connections that handlers' threads opened (those threads are gone or idle:
    their connections would otherwise stay open until garbage collection)."""
    with _handler_connections_lock:
        opened = list(_handler_connections)
        _handler_connections.clear()
    for wrapper in opened:
        raw = wrapper.connection
        if raw is not None and not raw.closed:
            raw.close()  # the wrapper belongs to another thread, which Django's close() refuses


_app: DjangoApp | None = None
_lock = threading.Lock()


def get_app() -> DjangoApp:
    """The project's App (``pgqueue.contrib.django.app``), made on first use."""
    global _app
    if _app is None:
        with _lock:
            if _app is None:
                _app = DjangoApp()
    return _app


def _settings_changed(setting: str, **kwargs: Any) -> None:
    if setting in ("DATABASES", "PGQUEUE") and _app is not None:
        _app.reconfigure()


setting_changed.connect(_settings_changed, dispatch_uid="pgqueue.contrib.django.app")
