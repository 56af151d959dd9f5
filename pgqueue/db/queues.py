"""Queue settings kept in the database: pausing a queue, its concurrency and rate limits."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from ..errors import ConfigurationError
from ..job import validate_name
from ..limits import UNLIMITED, RateLimit, check_limit, parse_rate_limit
from .operation import Operation
from .sql import channel, queries

R = TypeVar("R")

Limit = Any
"""A limit to set: the limit itself, ``UNLIMITED`` to clear it, or None to leave it as it is."""


def configure_queue(
    schema: str,
    name: str,
    *,
    paused: bool | None = None,
    concurrency: Limit = None,
    rate_limit: Limit = None,
    notify: bool = True,
) -> Operation[dict[str, Any]]:
    """Change the queue's settings (None leaves one as it is); return them all.

    Every value is checked before anything is written. Resuming a queue, or changing its limits,
    wakes its workers: they claim under the new settings at once.
    """
    validate_name("queue", name)
    if paused is not None and not isinstance(paused, bool):
        raise ConfigurationError("paused must be True, False or None")
    params: dict[str, Any] = {"name": name, "paused": paused, "concurrency": None, "rate_limit": None}
    params["set_concurrency"] = concurrency is not None
    if concurrency is not None and concurrency != UNLIMITED:
        params["concurrency"] = check_limit(f"queue {name!r}: concurrency", concurrency)
    params["set_rate"] = rate_limit is not None
    rate = (
        None
        if rate_limit is None or rate_limit == UNLIMITED
        else parse_rate_limit(f"queue {name!r}: rate_limit", rate_limit)
    )
    params["rate_limit"], params["rate_window"] = (rate.count, rate.seconds) if rate else (None, None)
    if paused is None and concurrency is None and rate_limit is None:
        return (yield from queue_settings(schema, name)).get(name, _settings({"name": name}))
    rows = yield queries(schema).configure_queue, params
    if notify and (paused is False or params["set_concurrency"] or params["set_rate"]):
        yield queries(schema).notify, {"channel": channel(schema), "queues": [name]}
    return _settings(rows[0])


def pause_queue(schema: str, name: str, paused: bool, notify: bool = True) -> Operation[dict[str, Any]]:
    """Pause (or resume) the queue ``name``: workers stop claiming its jobs from their next claim.

    Resuming wakes the queue's workers. Jobs already running are not touched.
    """
    return (yield from configure_queue(schema, name, paused=bool(paused), notify=notify))


def queue_settings(schema: str, name: str | None = None) -> Operation[dict[str, dict[str, Any]]]:
    """The settings of every queue that has any (or of the queue ``name``), by name (a queue
    with none runs as usual)."""
    rows = yield queries(schema).queue_settings, None
    return {row["name"]: _settings(row) for row in rows if name is None or row["name"] == name}


def _settings(row: Mapping[str, Any]) -> dict[str, Any]:
    count, window = row.get("rate_limit"), row.get("rate_window")
    return {
        "paused": bool(row.get("paused")),
        "concurrency": row.get("concurrency"),
        "rate_limit": None if count is None or window is None else str(RateLimit(count, window)),
        "updated_at": row.get("updated_at"),
    }


class _Host(Protocol):
    schema: str
    notify: bool

    @property
    def _execute(self) -> Callable[[Operation[R], Any], R]: ...


class QueueMethods:
    """The App's methods for queue settings (mixed into :class:`pgqueue.App`)."""

    def configure_queue(
        self: _Host,
        name: str,
        *,
        concurrency: Limit = None,
        rate_limit: Limit = None,
        paused: bool | None = None,
        conn: Any = None,
    ) -> dict[str, Any]:
        """Change a queue's settings, kept in the database for every worker; return them all.

        ``paused=True``: no worker claims the queue's jobs from its next claim on (jobs already
        running finish); ``paused=False`` resumes it and wakes its workers. ``concurrency=N``:
        at most N of the queue's jobs run at once across every worker; ``rate_limit="100/s"``
        (also ``/m``, ``/h``, ``"10/5s"``): at most that many start in any such window.
        ``pgqueue.UNLIMITED`` clears a limit; None (the default) leaves a setting as it is.
        Bad values raise ConfigurationError before anything is written.

        >>> app.configure_queue("emails", concurrency=5, rate_limit="100/m")
        >>> app.configure_queue("emails", rate_limit=pgqueue.UNLIMITED)
        """
        operation = configure_queue(
            self.schema,
            name,
            paused=paused,
            concurrency=concurrency,
            rate_limit=rate_limit,
            notify=self.notify,
        )
        return self._execute(operation, conn)

    def queue_settings(self: _Host, conn: Any = None) -> dict[str, dict[str, Any]]:
        """The settings of every queue that has any, by name
        (``{"emails": {"paused": True, "concurrency": 5, "rate_limit": "100/60s", ...}}``)."""
        return self._execute(queue_settings(self.schema), conn)
