"""Jobs as plain data, and the pure checks every enqueue runs before it writes anything."""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .codec import check_text
from .errors import InvalidJob, JobNotFound

DEFAULT_QUEUE = "default"
NAME_MAX_LENGTH = 128
INT32_MAX = 2**31 - 1


class JobState(str, enum.Enum):
    """A job's life: ``created``/``retry`` wait, ``active`` runs, the last three are final."""

    CREATED = "created"
    RETRY = "retry"
    ACTIVE = "active"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


class JobId(int):
    """What an enqueue returns: the job's id (an ``int``, as before) that also carries the job's
    :attr:`uid`. Everything that takes a job id takes it, or its ``uid``.

    >>> job_id = send_email.enqueue(user_id=42)
    >>> job_id, job_id.uid
    (958, UUID('01939b4e-...'))
    """

    _uid: uuid.UUID | str | int
    created: bool = True
    """False when the enqueue made no new job but returned an existing one: a duplicate within a
    ``unique_for`` window, or a debounced enqueue that replaced the waiting job's data."""

    def __new__(cls, id: int, uid: uuid.UUID | str | int, created: bool = True) -> JobId:
        self = super().__new__(cls, id)
        self._uid = uid  # made a UUID when first read: bulk enqueues return thousands
        if not created:
            self.created = False
        return self

    @property
    def uid(self) -> uuid.UUID:
        """The job's time-ordered identity: unlike the id, never handed out again (not even by a new
        primary after a failover that lost the last transactions), so safe as an idempotency key."""
        uid = self._uid
        if type(uid) is not uuid.UUID:
            uid = self._uid = uuid.UUID(int=uid) if isinstance(uid, int) else uuid.UUID(str(uid))
        return uid

    def __getnewargs__(self) -> tuple[int, uuid.UUID, bool]:  # type: ignore[override]
        return int(self), self.uid, self.created


ID_BITS = (1 << 63) - 1
"""The bits of a uid (version 8) that hold its job's id."""


def job_uids_hex(ids: Sequence[int], at: datetime) -> list[str]:
    """The uids of new jobs with these ids, as 32 hex digits each, in the layout of the database's
    ``job_uid(id)``: 48 bits of Unix milliseconds (``at``), the version 8, 12 random bits, then the
    id with the variant's top bit. One random read for a bulk load."""
    prefix = f"{int(at.timestamp() * 1000) & (1 << 48) - 1:012x}8"
    noise = os.urandom(2 * len(ids)).hex()
    return [f"{prefix}{noise[4 * k : 4 * k + 3]}{job_id | 1 << 63:016x}" for k, job_id in enumerate(ids)]


def uid_job_id(uid: uuid.UUID) -> int | None:
    """The id a uid was made from (version 8), or None for a uid of another layout."""
    return uid.int & ID_BITS if (uid.int >> 76) & 0xF == 8 else None


def job_ref(value: Any) -> int | uuid.UUID:
    """A job reference as given to a look-up: its id (an int) or its uid (a UUID, or its text).
    Raises JobNotFound for anything else (text digits too), before a statement could fail on it."""
    if isinstance(value, JobId):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value.strip())
        except ValueError:
            pass
    raise JobNotFound(f"no job with id {value!r}: a job is named by its id (an integer) or its uid (a UUID)")


@dataclass(frozen=True)
class Job:
    """One job row, as :meth:`pgqueue.App.get_job` returns it and handlers' workers see it."""

    id: int
    type: str
    queue: str
    data: dict[str, Any]
    state: JobState
    priority: int
    attempts: int
    max_attempts: int
    run_at: datetime
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration: float | None = None
    """Seconds the last attempt's handler ran, measured by the worker."""
    output: Any = None
    error: str | None = None
    errors: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Every failed attempt: ``{"attempt": n, "error": text, "at": iso time}``."""
    retry_delay: float | None = None
    retry_backoff: bool | None = None
    retry_delay_max: float | None = None
    timeout: float | None = None
    lease_id: Any = None
    lease_expires_at: datetime | None = None
    worker_id: str | None = None
    unique_key: str | None = None
    trace: dict[str, Any] | None = None
    progress: dict[str, Any] | None = None
    """What the handler last reported with ``set_progress``: ``{"value": 0..1, "message": text or None}``."""
    uid: uuid.UUID | None = None
    """The job's random identity (see :class:`JobId`): unique across failovers, unlike ``id``."""
    debounce_key: str | None = None
    """The key of a debounced enqueue (``unique_key`` with ``debounce``)."""
    dead_letter: str | None = None
    """The queue a copy of this job goes to if it fails for good."""
    origin_id: int | None = None
    """On a dead letter (a copy of a failed job): the failed job's id."""
    origin_queue: str | None = None
    """On a dead letter waiting to be redriven: the queue the job failed on."""
    dependencies_left: int = 0
    """How many of the jobs this one depends on have not completed yet (it waits while any has not)."""

    @property
    def success(self) -> bool | None:
        """True once completed, False once failed or cancelled, None while it waits or runs."""
        if self.state is JobState.COMPLETED:
            return True
        if self.state in (JobState.FAILED, JobState.CANCELLED):
            return False
        return None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Job:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in row.items() if k in names}
        values["state"] = JobState(values["state"])
        values["errors"] = values.get("errors") or []
        return cls(**values)


@dataclass(frozen=True)
class JobOptions:
    """Per-job settings. ``None`` means "not set here": the task's or the app's default applies."""

    queue: str | None = None
    priority: int | None = None
    max_attempts: int | None = None
    delay: float | None = None
    """Seconds from the enqueueing transaction's ``now()`` until the job may run."""
    run_at: datetime | None = None
    """An aware datetime before which the job does not run. Exclusive with ``delay``."""
    retry_delay: float | None = None
    retry_backoff: bool | None = None
    retry_delay_max: float | None = None
    timeout: float | None = None
    unique_key: str | None = None
    """While a job with this key waits or runs, enqueueing another with the same key is a no-op
    (it returns None). With ``unique_for`` or ``debounce``, the key means what they say."""
    unique_for: float | None = None
    """Seconds: at most one job per ``unique_key`` in this window, counted from the enqueue that
    made the job and kept whatever becomes of it (finished, failed or deleted). A duplicate in the
    window returns the existing job's :class:`JobId` (``created`` False): an idempotency key."""
    debounce: float | None = None
    """Seconds: the job runs this long after the last enqueue with its ``unique_key``; an enqueue
    while the keyed job still waits replaces its data and pushes its run time back."""
    concurrency_key: str | None = None
    """The key its task's ``key_concurrency`` and ``key_rate_limit`` count jobs by (a tenant, say)."""
    dead_letter: str | None = None
    """A queue that a copy of the job is enqueued on when it fails for good (see ``App.redrive``)."""
    depends_on: tuple[int, ...] | None = None
    """Ids of jobs this one waits for: it runs once they all completed, and is cancelled if one
    fails for good, is cancelled or deleted, or does not exist."""

    @classmethod
    def build(cls, **options: Any) -> JobOptions:
        """Validate keyword options into JobOptions; unknown names and bad values raise InvalidJob."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InvalidJob(
                f"unknown job option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**options).validated()

    def merged(self, other: JobOptions) -> JobOptions:
        """These options with every field ``other`` sets taking precedence."""
        changes = {f.name: getattr(other, f.name) for f in dataclasses.fields(other)}
        changes = {k: v for k, v in changes.items() if v is not None}
        # delay and run_at both say when the job runs: the one ``other`` sets replaces the other.
        if other.delay is not None:
            changes["run_at"] = None
        if other.run_at is not None:
            changes["delay"] = None
        return dataclasses.replace(self, **changes)

    def validated(self) -> JobOptions:
        if self.queue is not None:
            validate_name("queue", self.queue)
        if self.priority is not None:
            _check_int("priority", self.priority, -INT32_MAX, INT32_MAX)
        if self.max_attempts is not None:
            _check_int("max_attempts", self.max_attempts, 1, 1_000_000)
        if self.delay is not None and self.run_at is not None:
            raise InvalidJob("give either delay or run_at, not both")
        delay = self.delay
        if delay is not None:
            delay = _seconds("delay", delay)
        if self.run_at is not None:
            if not isinstance(self.run_at, datetime):
                raise InvalidJob(f"run_at must be a datetime, got {type(self.run_at).__name__}")
            if self.run_at.tzinfo is None or self.run_at.utcoffset() is None:
                raise InvalidJob("run_at must be timezone-aware (e.g. datetime.now(timezone.utc))")
        retry_delay = None if self.retry_delay is None else _seconds("retry_delay", self.retry_delay)
        retry_delay_max = (
            None if self.retry_delay_max is None else _seconds("retry_delay_max", self.retry_delay_max)
        )
        timeout = None if self.timeout is None else _seconds("timeout", self.timeout)
        if timeout is not None and timeout == 0:
            raise InvalidJob("timeout must be positive (or None for no timeout)")
        if self.retry_backoff is not None and not isinstance(self.retry_backoff, bool):
            raise InvalidJob("retry_backoff must be True or False")
        if self.unique_key is not None:
            if not isinstance(self.unique_key, str) or not self.unique_key or len(self.unique_key) > 1024:
                raise InvalidJob("unique_key must be a non-empty string of at most 1024 characters")
            check_text("unique_key", self.unique_key)
        unique_for = None if self.unique_for is None else _window("unique_for", self.unique_for)
        debounce = None if self.debounce is None else _window("debounce", self.debounce)
        if self.concurrency_key is not None:
            if not isinstance(self.concurrency_key, str) or not 1 <= len(self.concurrency_key) <= 1024:
                raise InvalidJob("concurrency_key must be a non-empty string of at most 1024 characters")
            check_text("concurrency_key", self.concurrency_key)
        if self.dead_letter is not None:
            validate_name("dead_letter queue", self.dead_letter)
        depends_on = None if self.depends_on is None else _job_ids(self.depends_on)
        if depends_on and (self.delay is not None or self.run_at is not None):
            raise InvalidJob("a job with depends_on runs when its dependencies complete: no delay or run_at")
        return dataclasses.replace(
            self,
            depends_on=depends_on or None,
            delay=delay,
            retry_delay=retry_delay,
            retry_delay_max=retry_delay_max,
            timeout=timeout,
            unique_for=unique_for,
            debounce=debounce,
        )

    def check_keys(self, given: JobOptions) -> JobOptions:
        """These (merged) options, checked for what ``unique_for`` and ``debounce`` need; ``given``
        are the enqueue's own options. A window the enqueue gives needs a ``unique_key``; one from
        the task's defaults applies only to enqueues that give a key."""
        if self.unique_key is None:
            for name in ("unique_for", "debounce"):
                if getattr(given, name) is not None:
                    raise InvalidJob(f"{name} needs a unique_key: the window is per key")
            if self.unique_for is None and self.debounce is None:
                return self
            return dataclasses.replace(self, unique_for=None, debounce=None)
        if self.unique_for is not None and self.debounce is not None:
            raise InvalidJob("give unique_for (throttle) or debounce, not both")
        if self.depends_on and (self.unique_for is not None or self.debounce is not None):
            raise InvalidJob("depends_on cannot be combined with unique_for or debounce")
        if self.debounce is not None and (self.delay is not None or self.run_at is not None):
            raise InvalidJob("debounce sets when the job runs: give no delay or run_at with it")
        return self


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidJob(f"{name} must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidJob(f"{name} must be between {low} and {high}, got {value}")


def _job_ids(ids: Any) -> tuple[int, ...]:
    if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
        raise InvalidJob(f"depends_on must be a list of job ids, got {type(ids).__name__}")
    checked = tuple(ids)
    for job_id in checked:
        if job_id is None:
            raise InvalidJob(
                "depends_on holds None: a job id of an enqueue that was skipped (unique key taken)"
            )
        _check_int("depends_on job id", job_id, 1, 2**63 - 1)
    if len(checked) > 10_000:
        raise InvalidJob(f"depends_on lists {len(checked)} jobs; at most 10000")
    return checked


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidJob(f"{name} must be a number of seconds or a timedelta, got {type(value).__name__}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidJob(f"{name} must be a finite, non-negative number of seconds, got {seconds}")
    if seconds > 10 * 365 * 86400:
        raise InvalidJob(f"{name} is more than ten years: {seconds} seconds")
    return seconds


def _window(name: str, value: Any) -> float:
    seconds = _seconds(name, value)
    if seconds <= 0:
        raise InvalidJob(f"{name} must be a positive number of seconds, got {seconds}")
    return seconds


def validate_name(kind: str, name: Any) -> str:
    """Check a job type or queue name: 1-128 printable characters, no surrounding spaces.

    Names are always bound as parameters, so any printable text is safe to use.
    """
    if not isinstance(name, str):
        raise InvalidJob(f"{kind} name must be a string, got {type(name).__name__}")
    if not name:
        raise InvalidJob(f"{kind} name is empty")
    if len(name) > NAME_MAX_LENGTH:
        raise InvalidJob(f"{kind} name is longer than {NAME_MAX_LENGTH} characters: {name[:40]!r}...")
    check_text(f"{kind} name", name)
    if not name.isprintable() or name != name.strip():
        raise InvalidJob(
            f"{kind} name {name!r} is malformed: use printable characters without surrounding spaces"
        )
    return name


def retry_delay_seconds(attempt: int, delay: float, backoff: bool, delay_max: float | None) -> float:
    """Seconds to wait before the next attempt, after ``attempt`` attempts have failed.

    Without backoff: ``delay``. With backoff: ``delay * 2**(attempt-1)`` capped at ``delay_max``,
    then jittered down by up to a half so that jobs failing together do not retry together.
    """
    if not backoff or delay <= 0:
        return delay
    base = delay * 2.0 ** min(max(attempt - 1, 0), 60)
    if delay_max is not None:
        base = min(base, delay_max)
    return base * (0.5 + random.random() / 2)
