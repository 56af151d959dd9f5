"""Flow-control limits as plain data: rate limits ("100/s", "10/5s") and the limits of a task.

Pure parsing and checks, run when a task is declared or a queue configured, before anything is
written. The workers enforce the limits in the claim, on the database's clock
(:mod:`pgqueue.worker.flow`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError, InvalidJob

UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*$")
LIMIT_MAX = 1_000_000
UNLIMITED = "unlimited"
"""Clears a queue's limit: ``app.configure_queue("emails", concurrency=pgqueue.UNLIMITED)``."""
WINDOW_MAX = 86400.0


@dataclass(frozen=True)
class RateLimit:
    """At most ``count`` starts in any window of ``seconds`` (a sliding window)."""

    count: int
    seconds: float

    def __str__(self) -> str:
        seconds = f"{self.seconds:g}"
        return f"{self.count}/{'' if seconds == '1' else seconds}s"


def parse_rate_limit(what: str, value: Any) -> RateLimit:
    """``"100/s"``, ``"600/m"``, ``"1000/h"``, ``"10/5s"`` (10 per 5 seconds), or a RateLimit.

    Raises ConfigurationError for anything else, naming ``what``.
    """
    if isinstance(value, RateLimit):
        count, seconds = value.count, value.seconds
    elif isinstance(value, str):
        match = _RATE.match(value.lower())
        if match is None or match.group(3) not in UNITS:
            raise ConfigurationError(
                f"{what} must look like '100/s', '600/m', '1000/h' or '10/5s' (N per window), got {value!r}"
            )
        count = int(match.group(1))
        seconds = float(match.group(2) or 1) * UNITS[match.group(3)]
    else:
        raise ConfigurationError(f"{what} must be a string like '100/s', got {type(value).__name__}")
    if not 1 <= count <= LIMIT_MAX:
        raise ConfigurationError(f"{what}: the count must be between 1 and {LIMIT_MAX}, got {count}")
    if not math.isfinite(seconds) or not 0.001 <= seconds <= WINDOW_MAX:
        raise ConfigurationError(f"{what}: the window must be between 1 ms and a day, got {seconds} s")
    return RateLimit(count, seconds)


def check_limit(what: str, value: Any) -> int:
    """A concurrency limit: a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= LIMIT_MAX:
        raise ConfigurationError(f"{what} must be an integer between 1 and {LIMIT_MAX}, got {value!r}")
    return value


@dataclass(frozen=True)
class TaskLimits:
    """A task's cluster-wide limits; None: no such limit. Keyed limits count per (type, key)."""

    concurrency: int | None = None
    """Most jobs of the type active at once across every worker (``global_concurrency``)."""
    rate: RateLimit | None = None
    """Most starts of the type per window across every worker (``rate_limit``)."""
    key_concurrency: int | None = None
    """Most jobs of the type with one concurrency key active at once."""
    key_rate: RateLimit | None = None
    """Most starts of the type with one concurrency key per window."""
    fair: bool = False
    """Claim round-robin over the type's concurrency keys, per queue, rather than in queue order:
    a key with many waiting jobs does not starve one with few."""

    @classmethod
    def build(
        cls,
        task: str,
        *,
        global_concurrency: Any = None,
        rate_limit: Any = None,
        key_concurrency: Any = None,
        key_rate_limit: Any = None,
        fair: Any = False,
    ) -> TaskLimits | None:
        """Check a task's limits; None when it has none."""
        if not isinstance(fair, bool):
            raise ConfigurationError(f"task {task!r}: fair must be True or False")
        limits = cls(
            None
            if global_concurrency is None
            else check_limit(f"task {task!r}: global_concurrency", global_concurrency),
            None if rate_limit is None else parse_rate_limit(f"task {task!r}: rate_limit", rate_limit),
            None
            if key_concurrency is None
            else check_limit(f"task {task!r}: key_concurrency", key_concurrency),
            None
            if key_rate_limit is None
            else parse_rate_limit(f"task {task!r}: key_rate_limit", key_rate_limit),
            fair,
        )
        return None if limits == cls() else limits

    @property
    def keyed(self) -> bool:
        """Whether jobs of the task may carry a concurrency key (a keyed limit or fairness counts it)."""
        return self.key_concurrency is not None or self.key_rate is not None or self.fair


def check_keyed(task: str, limits: TaskLimits | None) -> None:
    """Refuse a concurrency key for a task that nothing counts it for (InvalidJob)."""
    if limits is None or not limits.keyed:
        raise InvalidJob(
            f"task {task!r} has no key_concurrency, key_rate_limit or fair=True: "
            "a concurrency_key would limit nothing"
        )
