"""The App's methods for a job's life beyond one run (mixed into :class:`pgqueue.App`):
publish/subscribe fan-out, the job history, and how long each queue keeps finished jobs.

Dead letters (``@app.task(dead_letter=...)``, :meth:`pgqueue.App.redrive`) and dependencies
(``task.using(depends_on=[...])``) are job options; the database acts on them when a job
finishes (see :mod:`pgqueue.db.lifecycle`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from .codec import encode_data
from .db import history, pubsub
from .db.insert import JobTemplate
from .db.inspect import JobFilter
from .db.operation import Operation
from .errors import ConfigurationError
from .job import Job, JobId, JobOptions

__all__ = ["LifecycleMethods"]

R = TypeVar("R")
_UNSET: Any = history._UNSET


class _Host(Protocol):
    """What the methods below need of the App they are mixed into."""

    schema: str
    notify: bool
    max_payload_bytes: int
    tasks: dict[str, Any]

    @property
    def _execute(self) -> Callable[[Operation[R], Any], R]: ...

    @property
    def _aexecute(self) -> Callable[[Operation[R], Any], Awaitable[R]]: ...

    def _template(self, type_: str, options: JobOptions) -> JobTemplate: ...


class LifecycleMethods:
    """Publish/subscribe, the job history and per-queue retention."""

    def subscribe(self: _Host, event: str, task_name: str, conn: Any = None) -> None:
        """Subscribe a task of this App to an event, in the database (for every producer and
        worker): each :meth:`publish` of the event enqueues a job of the task, on its queue, with
        its priority, attempts and dead-letter queue (as registered now; subscribe again after
        changing them). Subscribing twice is harmless.

        >>> app.subscribe("user.registered", "send-welcome-email")
        """
        if task_name not in self.tasks:
            raise ConfigurationError(
                f"subscribe {event!r}: no task named {task_name!r} in this app; known: {sorted(self.tasks)}"
            )
        self._execute(pubsub.subscribe(self.schema, event, self._template(task_name, JobOptions())), conn)

    def unsubscribe(self: _Host, event: str, task_name: str | None = None, conn: Any = None) -> int:
        """Remove the task's subscription to the event (every task's, without ``task_name``); the
        number removed. Jobs already published stay."""
        return self._execute(pubsub.unsubscribe(self.schema, event, task_name), conn)

    def subscriptions(self: _Host, conn: Any = None) -> dict[str, list[str]]:
        """The tasks subscribed to each event: ``{"user.registered": ["send-welcome-email"]}``."""
        return self._execute(pubsub.subscriptions(self.schema), conn)

    def publish(
        self: _Host, event: str, data: Mapping[str, Any] | None = None, conn: Any = None
    ) -> list[JobId]:
        """Enqueue one job per task subscribed to ``event``, each with ``data`` as its handler's
        keyword arguments, in one statement; the jobs' ids (none without subscribers).

        With ``conn=``, the jobs join that connection's open transaction: rolled back, none exists.

        >>> app.publish("user.registered", {"user_id": 42}, conn=conn)
        """
        encoded = encode_data({} if data is None else data, self.max_payload_bytes)
        return self._execute(pubsub.publish(self.schema, event, encoded, self.notify), conn)

    async def apublish(
        self: _Host, event: str, data: Mapping[str, Any] | None = None, conn: Any = None
    ) -> list[JobId]:
        """Async twin of :meth:`publish`."""
        encoded = encode_data({} if data is None else data, self.max_payload_bytes)
        return await self._aexecute(pubsub.publish(self.schema, event, encoded, self.notify), conn)

    def jobs(
        self: _Host,
        queue: str | None = None,
        state: str | None = None,
        type: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
        after: int | None = None,
        *,
        conn: Any = None,
    ) -> list[Job]:
        """One page of jobs, waiting, running or finished (until pruned), oldest first: those
        matching the filters (None matches all), created at ``since`` or later, with ids above
        ``after``. The next page: ``after=page[-1].id``. Paged by key, not offset: a deep page
        costs what the first does, and jobs added or pruned meanwhile shift no page.

        >>> page = app.jobs(queue="emails", state="failed", limit=50)
        >>> more = app.jobs(queue="emails", state="failed", limit=50, after=page[-1].id)
        """
        where = JobFilter(queue, type, state)
        return self._execute(history.job_history(self.schema, where, since, limit, after), conn)

    def set_queue_retention(
        self: _Host,
        name: str,
        *,
        completed: float | timedelta | None = _UNSET,
        failed: float | timedelta | None = _UNSET,
        conn: Any = None,
    ) -> dict[str, Any]:
        """Keep the queue's completed jobs ``completed`` seconds (or a timedelta), and its failed
        and cancelled ones ``failed``, before workers delete them; None: the workers' defaults
        (``--completed-retention``, ``--failed-retention``). An argument left out stays as it was.
        Returns the queue's settings.

        >>> app.set_queue_retention("reports", completed=timedelta(days=30), failed=None)
        """
        return self._execute(history.set_queue_retention(self.schema, name, completed, failed), conn)
