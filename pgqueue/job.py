"""Jobs as plain data, and the pure checks every enqueue runs before it writes anything."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from json.encoder import c_make_encoder
from json.encoder import encode_basestring as _quote
from typing import Any, Callable, Iterable, Mapping

from .errors import InvalidJob, PayloadTooLarge

NAME_MAX_LENGTH = 128
MAX_NESTING = 100
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

    @property
    def success(self) -> bool | None:
        """True once completed, False once failed or cancelled, None while it waits or runs."""
        if self.state is JobState.COMPLETED:
            return True
        if self.state in (JobState.FAILED, JobState.CANCELLED):
            return False
        return None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Job":
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
    """While a job with this key waits or runs, enqueueing another with the same key is a no-op."""

    @classmethod
    def build(cls, **options: Any) -> "JobOptions":
        """Validate keyword options into JobOptions; unknown names and bad values raise InvalidJob."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InvalidJob(f"unknown job option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**options).validated()

    def merged(self, other: "JobOptions") -> "JobOptions":
        """These options with every field ``other`` sets taking precedence."""
        changes = {f.name: getattr(other, f.name) for f in dataclasses.fields(other)}
        changes = {k: v for k, v in changes.items() if v is not None}
        # delay and run_at both say when the job runs: the one ``other`` sets replaces the other.
        if other.delay is not None:
            changes["run_at"] = None
        if other.run_at is not None:
            changes["delay"] = None
        return dataclasses.replace(self, **changes)

    def validated(self) -> "JobOptions":
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
            _check_text("unique_key", self.unique_key)
        return dataclasses.replace(
            self, delay=delay, retry_delay=retry_delay, retry_delay_max=retry_delay_max, timeout=timeout
        )


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidJob(f"{name} must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidJob(f"{name} must be between {low} and {high}, got {value}")


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidJob(f"{name} must be a number of seconds or a timedelta, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise InvalidJob(f"{name} must be a finite, non-negative number of seconds, got {value}")
    if value > 10 * 365 * 86400:
        raise InvalidJob(f"{name} is more than ten years: {value} seconds")
    return value


def _check_text(what: str, text: str) -> None:
    if "\x00" in text:
        raise InvalidJob(f"{what} contains a NUL character, which PostgreSQL cannot store")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidJob(f"{what} contains a lone surrogate and is not valid Unicode") from None


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
    _check_text(f"{kind} name", name)
    if not name.isprintable() or name != name.strip():
        raise InvalidJob(
            f"{kind} name {name!r} is malformed: use printable characters without surrounding spaces"
        )
    return name


def encode_data(data: Any, max_bytes: int) -> str:
    """Encode a job's data as JSON text, refusing what would not come back to the handler unchanged.

    Accepted: mappings with string keys, lists and tuples, strings, ints, finite floats, bools and None.
    Tuples come back as lists, other mappings as dicts.
    """
    text = _encode_flat(data)
    if text is None:
        if not isinstance(data, Mapping):
            raise InvalidJob(f"job data must be a mapping of argument names to values, got {type(data).__name__}")
        parts: list[str] = []
        _encode(data, "data", 0, set(), parts)
        text = "".join(parts)
    # Both paths have refused lone surrogates, so the text encodes; ASCII text is its own size.
    size = len(text) if text.isascii() else len(text.encode("utf-8"))
    if size > max_bytes:
        raise PayloadTooLarge(f"job data is {size} bytes as JSON, over the limit of {max_bytes} bytes")
    return text


_FLAT_TYPES = frozenset({str, int, bool, type(None)})
_INT_LIMIT = 10**300
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _flat_encoder() -> Callable[[dict[str, Any], int], Iterable[str]]:
    """The chunks of compact JSON text of a dict of plain scalars, as ``_ENCODER`` writes them.

    ``JSONEncoder.encode`` builds a new C encoder on every call, which costs more than
    encoding a small dict; one built once serves every call. (No circular-reference
    markers: a dict of scalars has no cycle.) Falls back to ``_ENCODER`` where the C
    encoder is missing or does not take these arguments.
    """
    try:
        encoder = c_make_encoder(None, None, _quote, None, ":", ",", False, False, False)  # type: ignore[misc]
        sample = {"a": 1, "b": "é\n\"", "c": 1.5, "d": None, "e": True}
        if "".join(encoder(sample, 0)) == _ENCODER.encode(sample):
            return encoder  # type: ignore[no-any-return]
    except Exception:  # noqa: BLE001 - any surprise: the pure-Python path is always right
        pass
    return lambda data, _: (_ENCODER.encode(data),)


_flat_chunks = _flat_encoder()


def _encode_flat(data: Any) -> str | None:
    """The common case at C speed: a dict of str keys to plain scalars. None: take the careful walk.

    Every check of the walk holds here too: what json.dumps would change or PostgreSQL refuse
    (NUL, lone surrogates, floats that jsonb would read back as ints, huge ints) falls back.
    """
    if type(data) is not dict:
        return None
    for key, value in data.items():
        if type(key) is not str:
            return None
        kind = type(value)
        if kind is int:
            if not -_INT_LIMIT < value < _INT_LIMIT:
                return None
        elif kind is float:
            if not math.isfinite(value) or (abs(value) >= 1e16):
                return None
        elif kind not in _FLAT_TYPES:
            return None
    text = "".join(_flat_chunks(data, 0))
    # A NUL in a key or a string is written \u0000 (so is a backslash followed by "u0000",
    # which the walk accepts): one search of the text instead of one per string.
    if "\\u0000" in text:
        return None
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: the walk says where
            return None
    return text


def _encode(value: Any, path: str, depth: int, open_containers: set[int], out: list[str]) -> None:
    """Check ``value`` and append its compact JSON text to ``out``, in one walk."""
    if value is None:
        out.append("null")
    elif isinstance(value, bool):
        out.append("true" if value else "false")
    elif isinstance(value, int):
        try:
            out.append(int.__repr__(value))
        except ValueError:  # beyond sys.get_int_max_str_digits(): it could not be read back either
            raise InvalidJob(f"{path} is an integer too long to convert to text") from None
    elif isinstance(value, str):
        _check_text(f"string at {path}", value)
        out.append(_quote(value))
    elif isinstance(value, float):
        out.append(_float_text(value, path))
    elif isinstance(value, (Mapping, list, tuple)):
        if depth >= MAX_NESTING:
            raise InvalidJob(f"job data is nested more than {MAX_NESTING} levels deep at {path}")
        if id(value) in open_containers:
            raise InvalidJob(f"job data contains a circular reference at {path}")
        open_containers.add(id(value))
        if isinstance(value, Mapping):
            out.append("{")
            for index, (key, item) in enumerate(value.items()):
                if not isinstance(key, str):
                    raise InvalidJob(
                        f"{path} has a key {key!r} of type {type(key).__name__}; JSON keys are strings"
                    )
                _check_text(f"key at {path}", key)
                out.append("," if index else "")
                out.append(_quote(key))
                out.append(":")
                _encode(item, f"{path}[{key!r}]", depth + 1, open_containers, out)
            out.append("}")
        else:
            out.append("[")
            for index, item in enumerate(value):
                out.append("," if index else "")
                _encode(item, f"{path}[{index}]", depth + 1, open_containers, out)
            out.append("]")
        open_containers.discard(id(value))
    else:
        raise InvalidJob(
            f"{path} is a {type(value).__name__}, which is not JSON; convert it first "
            "(e.g. datetimes to ISO strings, sets to lists, bytes to base64 text)"
        )


def _float_text(value: float, path: str) -> str:
    if not math.isfinite(value):
        raise InvalidJob(f"{path} is {value}, which JSON cannot carry")
    text = float.__repr__(value)
    if "e" in text and abs(value) >= 1:
        # jsonb stores numbers as numeric and prints 1e+16 back as the integer 10000000000000000:
        # write the float's exact decimal value with a fraction digit so that it reads back a float.
        text = f"{value:.1f}"
    return text


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
