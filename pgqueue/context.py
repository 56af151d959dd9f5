"""What a running handler knows of its job: :class:`JobContext`, from :func:`current_job`."""

from __future__ import annotations

import contextvars
import dataclasses
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg

from .db.adapters import async_connection, sync_connection
from .db.driver import arun, run
from .db.ops import complete_job
from .errors import ConfigurationError, JobCancelled

C = TypeVar("C", psycopg.Connection[Any], psycopg.AsyncConnection[Any])


class _Flag:
    """A job's cancellation flag: raised by the worker, read by the handler (nobody waits on it,
    so it needs no lock; a ``threading.Event`` per job cost a lock and a condition)."""

    __slots__ = ("_raised",)

    def __init__(self) -> None:
        self._raised = False

    def set(self) -> None:
        self._raised = True

    def is_set(self) -> bool:
        return self._raised


@dataclass(frozen=True)
class JobContext:
    """What a running handler may know of its own job, from :func:`pgqueue.current_job`; and
    :meth:`complete` / :meth:`acomplete`, to complete the job in the handler's own transaction."""

    id: int
    type: str
    queue: str
    attempt: int
    """This attempt's number, from 1."""
    max_attempts: int
    lease_id: uuid.UUID | str | None = field(default=None, repr=False)
    """The claim's lease: :meth:`complete` writes only while this attempt still holds it."""
    schema: str = field(default="pgqueue", repr=False)
    """The schema of the App whose worker runs the job."""
    started: float = field(default=0.0, repr=False)
    """``time.monotonic()`` when the handler was started, for the duration :meth:`complete` records
    (the clock is the machine's, shared by the worker and its child processes)."""
    _uid: uuid.UUID | str | None = field(default=None, repr=False)
    """The job's uid as the worker got it (text from the claim): see :attr:`uid`."""
    _completed: bool = field(default=False, init=False, repr=False, compare=False)
    """Set once :meth:`complete` succeeded in this attempt (its transaction may still roll back)."""
    _cancel_event: Any = field(default_factory=_Flag, init=False, repr=False, compare=False)
    """Set by the worker when the job is cancelled or its lease lost (a ``multiprocessing.Event``
    in a process-executor child, shared with the worker)."""
    _on_cancel: Callable[[], Any] | None = field(default=None, init=False, repr=False, compare=False)
    """How the worker interrupts the handler besides the flag: an async handler's task's ``cancel``."""
    _progress_sink: Callable[[dict[str, Any]], None] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    """Where :meth:`set_progress` sends its reports: the worker's writer, or a child's pipe."""

    @classmethod
    def _started(
        cls,
        id: int,
        type: str,
        queue: str,
        attempt: int,
        max_attempts: int,
        lease_id: uuid.UUID | str | None,
        schema: str,
        started: float,
        uid: uuid.UUID | str | None,
        progress_sink: Callable[[dict[str, Any]], None] | None,
    ) -> JobContext:
        """The worker's way to make one per job run, with the fields ``__init__`` sets and the
        progress sink, in one update of the instance's dict. (The frozen dataclass's ``__init__``
        sets each through ``object.__setattr__``: twice the cost of this, per job.)"""
        self = object.__new__(cls)
        self.__dict__.update(
            id=id,
            type=type,
            queue=queue,
            attempt=attempt,
            max_attempts=max_attempts,
            lease_id=lease_id,
            schema=schema,
            started=started,
            _uid=uid,
            _cancel_event=_Flag(),
            _progress_sink=progress_sink,
        )
        return self

    @property
    def uid(self) -> uuid.UUID | None:
        """The job's random identity (:attr:`pgqueue.Job.uid`): the key to make a handler's effects
        idempotent with (``id`` may be handed out again after a failover; ``uid`` never is)."""
        uid = self._uid
        if isinstance(uid, str):  # made a UUID when first read: most handlers never read it
            uid = uuid.UUID(uid)
            object.__setattr__(self, "_uid", uid)
        return uid

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled while it runs (``pgqueue cancel``, ``App.cancel_job``) or
        this attempt lost the job: whatever the handler returns from then on is not recorded."""
        return bool(self._cancel_event.is_set())

    def check_cancelled(self) -> None:
        """Raise :class:`pgqueue.JobCancelled` if :attr:`cancelled`: a sync or process handler's way
        to stop between steps (async handlers get ``asyncio.CancelledError`` instead).

        >>> for page in pages:
        ...     pgqueue.current_job().check_cancelled()
        ...     render(page)
        """
        if self._cancel_event.is_set():
            raise JobCancelled(f"job {self.id} was cancelled", self.id)

    def set_progress(self, value: float, message: str | None = None) -> None:
        """Report how far the handler has got: ``value`` from 0 to 1, an optional ``message``.

        Stored in the job's ``progress`` column (``Job.progress``: ``{"value": ..., "message": ...}``),
        at most once a second per job (reports in between are coalesced into the latest, and the
        last one is written before the job's outcome is). It never blocks on the database, and a
        report after the job was cancelled updates nothing. Outside a worker it does nothing.

        >>> pgqueue.current_job().set_progress(0.4, message="page 4 of 10")
        """
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"progress must be a number from 0 to 1, got {value!r}")
        if not 0 <= value <= 1:
            raise ValueError(f"progress must be from 0 to 1, got {value!r}")
        if message is not None and not isinstance(message, str):
            raise ValueError(f"a progress message must be text, got {type(message).__name__}")
        sink = self._progress_sink
        if sink is not None:
            sink({"value": float(value), "message": None if message is None else message[:1000]})

    def _cancel(self) -> None:
        """The worker's side of a cancellation: raise the flag, and interrupt an async handler."""
        self._cancel_event.set()
        on_cancel = self._on_cancel
        if on_cancel is not None:
            on_cancel()

    def complete(self, conn: Any, output: Any = None) -> None:
        """Complete this job inside the caller's open transaction on ``conn``, so that the handler's
        writes and the job's completion commit together: a crash before the commit leaves neither.

        ``conn`` is what ``enqueue(conn=...)`` accepts: a psycopg ``Connection``, a SQLAlchemy
        ``Session`` or ``Connection``, or Django's ``connection`` (inside ``transaction.atomic()``).
        Nothing is committed here; ``output`` is stored as the job's output (the handler's return
        value is then not). Raises :class:`pgqueue.LeaseLost`, having written nothing, when this
        attempt no longer holds the job (rescued after its lease expired, or cancelled): let it
        propagate, so that the transaction rolls back and its effects are not written.

        >>> @app.task("charge")
        ... def charge(order_id: int) -> None:
        ...     with psycopg.connect(DSN) as conn:
        ...         conn.execute("INSERT INTO payments (order_id) VALUES (%s)", (order_id,))
        ...         pgqueue.current_job().complete(conn, output={"charged": True})

        If the transaction rolls back and the handler returns normally, the worker completes the
        job as usual; if the handler raises, the failed attempt is recorded as usual.
        """
        operation = complete_job(self.schema, self.id, self._lease(), output, self._duration())
        run(_in_transaction(sync_connection(conn)), operation)
        object.__setattr__(self, "_completed", True)

    async def acomplete(self, conn: Any, output: Any = None) -> None:
        """:meth:`complete` for async handlers: ``conn`` is a psycopg ``AsyncConnection`` or a
        SQLAlchemy ``AsyncSession`` / ``AsyncConnection``.

        >>> await pgqueue.current_job().acomplete(aconn, output={"charged": True})
        """
        operation = complete_job(self.schema, self.id, self._lease(), output, self._duration())
        await arun(_in_transaction(await async_connection(conn)), operation)
        object.__setattr__(self, "_completed", True)

    def _lease(self) -> uuid.UUID | str:
        if self.lease_id is None:
            raise RuntimeError(
                f"job {self.id}: this JobContext carries no lease; complete() needs the one "
                "pgqueue.current_job() returns inside a running handler"
            )
        return self.lease_id

    def _duration(self) -> float | None:
        return max(0.0, time.monotonic() - self.started) if self.started else None

    def _to_json(self) -> dict[str, Any]:
        """The fields a process-executor child rebuilds the context from (the lease id as text)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        fields["lease_id"] = None if self.lease_id is None else str(self.lease_id)
        fields["_uid"] = None if self._uid is None else str(self._uid)
        return fields

    @classmethod
    def _from_json(cls, fields: dict[str, Any]) -> JobContext:
        lease_id = fields.get("lease_id")
        return cls(**{**fields, "lease_id": None if lease_id is None else uuid.UUID(lease_id)})


def _in_transaction(conn: C) -> C:
    """The connection, unless a statement on it would commit at once (autocommit, no transaction open)."""
    if conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        raise ConfigurationError(
            "complete() joins the caller's transaction, but this connection is in autocommit mode with no "
            "transaction open: call it inside `with conn.transaction():` (Django: `transaction.atomic()`)"
        )
    return conn


_current: contextvars.ContextVar[JobContext] = contextvars.ContextVar("pgqueue_current_job")


def current_job() -> JobContext:
    """The job the calling handler is running for (id, type, queue, attempt, max_attempts).

    >>> @app.task("charge")
    ... def charge(order_id: int) -> None:
    ...     stripe.charge(order_id, idempotency_key=f"job-{pgqueue.current_job().uid}")

    Its :meth:`~JobContext.complete` (``acomplete`` in async handlers) completes the job in the
    handler's own transaction, so that the handler's database writes and the completion commit
    together:

    >>> with psycopg.connect(DSN) as conn:
    ...     conn.execute("INSERT INTO payments (order_id) VALUES (%s)", (order_id,))
    ...     pgqueue.current_job().complete(conn, output={"charged": True})
    """
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("pgqueue.current_job() is only available inside a running job's handler") from None
