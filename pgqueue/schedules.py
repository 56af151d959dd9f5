"""The App's methods for periodic jobs (mixed into :class:`pgqueue.App`).

Schedules live in the database (the ``schedule`` table): those declared in code with
:meth:`ScheduleMethods.periodic` are written there when a worker starts, those added with
:meth:`ScheduleMethods.schedule` at once. Every worker's scheduler reads that table and enqueues
each tick exactly once (see :mod:`pgqueue.worker.scheduler`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from .codec import encode_data
from .cron import Schedule, Spec
from .db.operation import Operation
from .db.schedules import list_schedules, remove_schedule, save_schedules
from .errors import ConfigurationError
from .task import Task

__all__ = ["Schedule", "ScheduleMethods"]

R = TypeVar("R")
T = TypeVar("T")


class _Host(Protocol):
    """What the methods below need of the App they are mixed into."""

    schema: str
    max_payload_bytes: int
    tasks: dict[str, Task[Any]]
    _periodic: list[tuple[Any, Spec]]

    @property
    def _execute(self) -> Callable[[Operation[R], Any], R]: ...


class ScheduleMethods:
    """Periodic jobs: declared in code, or added and removed at run time."""

    def periodic(
        self: _Host,
        *,
        cron: str | None = None,
        every: float | timedelta | None = None,
        tz: str = "UTC",
        data: Mapping[str, Any] | None = None,
        catch_up: bool = False,
        name: str | None = None,
    ) -> Callable[[T], T]:
        """Run a task periodically: on a cron expression (five fields, or six with seconds first)
        evaluated in ``tz``, or every ``every`` seconds. Each tick is enqueued once, whatever the
        number of workers. Put it above ``@app.task`` (or below it, on the function).

        ``data``: the job's keyword arguments. ``catch_up``: ticks missed while no worker ran are
        enqueued (the 100 most recent); otherwise only the latest. ``name``: the schedule's name
        (default: the task's).

        >>> @app.periodic(cron="0 8 * * *", tz="Europe/Berlin", data={"kind": "daily"})
        ... @app.task("send-report")
        ... def send_report(kind: str) -> None: ...
        """
        spec = Spec.build(name or "-", "-", data, cron=cron, every=every, tz=tz, catch_up=catch_up)
        encode_data(spec.data, self.max_payload_bytes)  # refused now rather than at a worker's start

        def declare(target: T) -> T:
            if not isinstance(target, Task) and not callable(target):
                raise ConfigurationError("@app.periodic decorates a task or a function")
            self._periodic.append((target, replace(spec, name=name or "")))
            return target

        return declare

    def periodic_schedules(self: _Host) -> list[Spec]:
        """The schedules declared in code with :meth:`periodic`, each naming its registered task."""
        specs = []
        for target, spec in self._periodic:
            task = target if isinstance(target, Task) else _task_of(self.tasks, target)
            if task is None:
                raise ConfigurationError(
                    f"@app.periodic on {getattr(target, '__qualname__', target)!r}: not a registered task"
                )
            specs.append(replace(spec, name=spec.name or task.name, task=task.name))
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"two periodic schedules share a name: {sorted(names)}; give name=")
        return specs

    def schedule(
        self: _Host,
        name: str,
        task_name: str,
        data: Mapping[str, Any] | None = None,
        *,
        cron: str | None = None,
        every: float | timedelta | None = None,
        tz: str = "UTC",
        catch_up: bool = False,
        conn: Any = None,
    ) -> None:
        """Add a schedule to the database, or replace the one named ``name`` (its last tick is
        kept). Options as :meth:`periodic`; ``task_name`` must be a task of this App.

        >>> app.schedule("cleanup", "purge-sessions", {"days": 30}, every=timedelta(hours=1))
        """
        spec = Spec.build(name, task_name, data, cron=cron, every=every, tz=tz, catch_up=catch_up)
        if task_name not in self.tasks:
            raise ConfigurationError(
                f"schedule {name!r}: no task named {task_name!r} in this app; known: {sorted(self.tasks)}"
            )
        self._execute(save_schedules(self.schema, [spec], self.max_payload_bytes), conn)

    def unschedule(self: _Host, name: str, conn: Any = None) -> bool:
        """Remove a schedule; False if there was none. Jobs it already enqueued stay.

        A schedule declared in code comes back when a worker with that code starts.
        """
        return self._execute(remove_schedule(self.schema, name), conn)

    def schedules(self: _Host, conn: Any = None) -> list[Schedule]:
        """Every schedule in the database, by name, with the last tick each enqueued."""
        return self._execute(list_schedules(self.schema), conn)[0]


def _task_of(tasks: Mapping[str, Task[Any]], fn: Any) -> Task[Any] | None:
    return next((task for task in tasks.values() if task.fn is fn), None)
