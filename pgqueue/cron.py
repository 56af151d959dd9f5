"""Periodic schedules without I/O: what a schedule is, its validation, and the ticks due between two instants.

A schedule fires on a cron expression, evaluated in its time zone, or every so many seconds
(counted from the Unix epoch, so every process agrees on the ticks). Ticks are aware datetimes
in UTC. Cron expressions are evaluated by ``cronsim``, which follows Debian cron across
daylight-saving changes: a time skipped by a spring-forward runs once, just after the change;
a time repeated by a fall-back runs once (an hourly or finer job runs every real hour).

>>> due_ticks(Spec("nightly", "report", cron="0 8 * * *", tz="Europe/Berlin"), start, now)
[datetime.datetime(2026, 3, 30, 6, 0, tzinfo=datetime.timezone.utc)]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from .errors import ConfigurationError

__all__ = ["CATCH_UP_LIMIT", "Schedule", "Spec", "due_ticks", "next_tick", "tick_key"]

CATCH_UP_LIMIT = 100
"""With ``catch_up``, the most missed ticks of one schedule enqueued at once: the most recent ones."""


@dataclass(frozen=True)
class Spec:
    """A schedule as declared: its name, task, the job's data, and when it fires.

    Exactly one of ``cron`` (five fields, or six with seconds first) and ``every`` (seconds) is set.
    ``catch_up``: ticks missed while no worker ran are enqueued (up to :data:`CATCH_UP_LIMIT`);
    otherwise only the latest due tick is.
    """

    name: str
    task: str
    cron: str | None = None
    every: float | None = None
    tz: str = "UTC"
    catch_up: bool = False
    data: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        name: str,
        task: str,
        data: Mapping[str, Any] | None = None,
        *,
        cron: str | None = None,
        every: float | timedelta | None = None,
        tz: str = "UTC",
        catch_up: bool = False,
    ) -> Spec:
        """Validate the options into a Spec; bad ones raise ConfigurationError."""
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise ConfigurationError(f"a schedule's name must be a non-empty string, not {name!r}")
        if (cron is None) == (every is None):
            raise ConfigurationError(f"schedule {name!r}: give exactly one of cron= and every=")
        if isinstance(every, timedelta):
            every = every.total_seconds()
        if every is not None:
            if isinstance(every, bool) or not isinstance(every, int | float) or not math.isfinite(every):
                raise ConfigurationError(f"schedule {name!r}: every= must be seconds or a timedelta")
            if every <= 0:
                raise ConfigurationError(f"schedule {name!r}: every= must be positive, not {every}")
            every = float(every)
        zone = _zone(name, tz)
        if cron is not None:
            if not isinstance(cron, str):
                raise ConfigurationError(f"schedule {name!r}: cron= must be a string")
            try:
                CronSim(cron, datetime(2000, 1, 1, tzinfo=zone))
            except (CronSimError, ValueError) as exc:
                raise ConfigurationError(f"schedule {name!r}: bad cron expression {cron!r}: {exc}") from None
        if data is not None and not isinstance(data, Mapping):
            raise ConfigurationError(f"schedule {name!r}: data= must be a mapping of keyword arguments")
        return cls(name, task, cron, every, tz, bool(catch_up), dict(data or {}))


@dataclass(frozen=True)
class Schedule(Spec):
    """A schedule as stored: a :class:`Spec` and the last tick enqueued (None before the first)."""

    last_tick: datetime | None = None
    created_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Schedule:
        return cls(
            name=row["name"],
            task=row["task"],
            cron=row["cron"],
            every=row["every"],
            tz=row["tz"],
            catch_up=row["catch_up"],
            data=row["data"],
            last_tick=row["last_tick"],
            created_at=row["created_at"],
        )


def _zone(name: str, tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigurationError(f"schedule {name!r}: unknown time zone {tz!r}") from None


def _whole_second(instant: datetime) -> datetime:
    return instant.astimezone(UTC).replace(microsecond=0)


def due_ticks(spec: Spec, after: datetime, now: datetime, limit: int = CATCH_UP_LIMIT) -> list[datetime]:
    """The ticks of ``spec`` in (``after``, ``now``], oldest first, in UTC.

    Without ``catch_up`` only the latest is returned; with it, the ``limit`` most recent.
    """
    wanted = limit if spec.catch_up else 1
    ticks: list[datetime] = []
    if spec.every is not None:
        step = spec.every
        n = math.floor(now.timestamp() / step)
        while len(ticks) < wanted:
            tick = datetime.fromtimestamp(n * step, UTC)
            if tick <= after:
                break
            ticks.append(tick)
            n -= 1
    else:
        assert spec.cron is not None
        zone = ZoneInfo(spec.tz)
        # Walk back from just past ``now``: cronsim's reverse walk excludes its start.
        start = (_whole_second(now) + timedelta(seconds=1)).astimezone(zone)
        for local in CronSim(spec.cron, start, reverse=True):
            tick = local.astimezone(UTC)
            if tick <= after or len(ticks) >= wanted:
                break
            ticks.append(tick)
    ticks.reverse()
    return ticks


def next_tick(spec: Spec, now: datetime) -> datetime:
    """The first tick of ``spec`` after ``now``, in UTC."""
    if spec.every is not None:
        return datetime.fromtimestamp((math.floor(now.timestamp() / spec.every) + 1) * spec.every, UTC)
    assert spec.cron is not None
    start = _whole_second(now).astimezone(ZoneInfo(spec.tz))
    return next(iter(CronSim(spec.cron, start))).astimezone(UTC)


def tick_key(name: str, tick: datetime) -> str:
    """The unique key of the job of one tick: racing workers enqueue it once."""
    return f"schedule:{name}:{tick.astimezone(UTC).isoformat()}"
