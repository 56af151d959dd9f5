"""Schedules without a database: validation, and the ticks due between two instants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pgqueue import ConfigurationError
from pgqueue.cron import CATCH_UP_LIMIT, Spec, due_ticks, next_tick, tick_key

pytestmark = pytest.mark.timeout(30)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def all_ticks(spec: Spec, start: datetime, end: datetime) -> list[datetime]:
    """Every tick in (start, end], found by stepping one minute at a time as a worker would."""
    catching = Spec.build(spec.name, spec.task, cron=spec.cron, tz=spec.tz, catch_up=True)
    ticks, after, now = [], start, start
    while now < end:
        now += timedelta(minutes=1)
        due = due_ticks(catching, after, now)
        ticks += due
        if due:
            after = due[-1]
    return ticks


def test_a_daily_job_on_the_spring_forward_day_runs_once_just_after_the_change():
    spec = Spec.build("night", "t", cron="30 2 * * *", tz="Europe/Berlin")
    # 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that night.
    ticks = all_ticks(spec, utc(2026, 3, 27, 12), utc(2026, 3, 31, 12))
    assert ticks == [
        utc(2026, 3, 28, 1, 30),
        utc(2026, 3, 29, 1, 0),
        utc(2026, 3, 30, 0, 30),
        utc(2026, 3, 31, 0, 30),
    ]


def test_a_daily_job_on_the_fall_back_day_runs_once():
    spec = Spec.build("night", "t", cron="30 2 * * *", tz="Europe/Berlin")
    # 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens twice that night.
    ticks = all_ticks(spec, utc(2026, 10, 23, 12), utc(2026, 10, 27, 12))
    assert ticks == [
        utc(2026, 10, 24, 0, 30),
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 26, 1, 30),
        utc(2026, 10, 27, 1, 30),
    ]


def test_an_hourly_job_runs_every_real_hour_across_both_changes():
    spec = Spec.build("hourly", "t", cron="0 * * * *", tz="Europe/Berlin")
    spring = all_ticks(spec, utc(2026, 3, 28, 22), utc(2026, 3, 29, 4))
    assert spring == [utc(2026, 3, 28, 23) + timedelta(hours=h) for h in range(6)]
    fall = all_ticks(spec, utc(2026, 10, 24, 22), utc(2026, 10, 25, 4))
    assert fall == [utc(2026, 10, 24, 23) + timedelta(hours=h) for h in range(6)]


def test_cron_is_evaluated_in_the_schedules_time_zone():
    spec = Spec.build("morning", "t", cron="0 8 * * *", tz="America/New_York")
    assert due_ticks(spec, utc(2026, 7, 1), utc(2026, 7, 1, 13)) == [utc(2026, 7, 1, 12)]
    assert due_ticks(spec, utc(2026, 7, 1), utc(2026, 7, 1, 11, 59, 59)) == []
    assert next_tick(spec, utc(2026, 7, 1, 13)) == utc(2026, 7, 2, 12)


def test_a_sixth_field_is_seconds_first():
    spec = Spec.build("fast", "t", cron="*/15 * * * * *")
    assert due_ticks(
        Spec.build("f", "t", cron="*/15 * * * * *", catch_up=True), utc(2026, 1, 1), utc(2026, 1, 1, 0, 1)
    ) == [utc(2026, 1, 1, 0, 0, s) for s in (15, 30, 45)] + [utc(2026, 1, 1, 0, 1)]
    assert next_tick(spec, utc(2026, 1, 1, 0, 0, 16)) == utc(2026, 1, 1, 0, 0, 30)


def test_without_catch_up_only_the_latest_missed_tick_is_due():
    spec = Spec.build("s", "t", every=timedelta(seconds=30))
    assert due_ticks(spec, utc(2026, 1, 1), utc(2026, 1, 1, 1, 0, 10)) == [utc(2026, 1, 1, 1)]
    # The tick itself is due at its instant, and never twice.
    assert due_ticks(spec, utc(2026, 1, 1), utc(2026, 1, 1, 0, 0, 30)) == [utc(2026, 1, 1, 0, 0, 30)]
    assert due_ticks(spec, utc(2026, 1, 1, 0, 0, 30), utc(2026, 1, 1, 0, 0, 59)) == []


def test_catch_up_enqueues_missed_ticks_up_to_the_limit_the_most_recent():
    spec = Spec.build("s", "t", every=60, catch_up=True)
    assert due_ticks(spec, utc(2026, 1, 1), utc(2026, 1, 1, 0, 5)) == [
        utc(2026, 1, 1, 0, m) for m in range(1, 6)
    ]
    many = due_ticks(spec, utc(2026, 1, 1), utc(2026, 1, 2))  # 1440 missed
    assert len(many) == CATCH_UP_LIMIT
    assert many[-1] == utc(2026, 1, 2) and many[0] == utc(2026, 1, 2) - timedelta(minutes=CATCH_UP_LIMIT - 1)
    daily = Spec.build("d", "t", cron="0 0 * * *", catch_up=True)
    assert len(due_ticks(daily, utc(2025, 1, 1), utc(2026, 1, 1))) == CATCH_UP_LIMIT


def test_interval_ticks_are_the_same_for_every_process():
    spec = Spec.build("s", "t", every=7)
    now = utc(2026, 5, 5, 5, 5, 5)
    (tick,) = due_ticks(spec, utc(2026, 1, 1), now)
    assert tick.timestamp() % 7 == 0 and now - timedelta(seconds=7) < tick <= now
    assert tick_key("s", tick) == f"schedule:s:{tick.isoformat()}"


@pytest.mark.parametrize(
    "options",
    [
        {"cron": "61 * * * *"},
        {"cron": "not a cron"},
        {"cron": "* * * *"},
        {"every": 0},
        {"every": -5},
        {"every": timedelta(0)},
        {"every": float("nan")},
        {"every": "10"},
        {"cron": "* * * * *", "every": 10},
        {},
        {"cron": "* * * * *", "tz": "Mars/Olympus"},
        {"every": 10, "tz": ""},
    ],
)
def test_bad_options_are_refused(options):
    with pytest.raises(ConfigurationError):
        Spec.build("s", "t", **options)
