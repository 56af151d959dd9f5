"""Periodic jobs with real `pgqueue work` processes: three workers race for every tick, and each
tick is enqueued exactly once, across a restart of every worker too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture
def workers(dsn: str) -> Iterator[Callable[[], subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start() -> subprocess.Popen[str]:
        env = {**os.environ, "PGQUEUE_DATABASE_URL": dsn, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pgqueue",
                "work",
                "schedule_app:app",
                "--concurrency",
                "2",
                "--log-level",
                "warning",
            ],
            cwd=HERE,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def ticks(conn: psycopg.Connection[Any], schedule: str) -> list[datetime]:
    """The tick of each job the schedule enqueued, read from its unique key, in order (duplicates kept)."""
    rows = conn.execute(
        "SELECT unique_key, run_at FROM pgqueue.job WHERE unique_key LIKE %s ORDER BY run_at, id",
        (f"schedule:{schedule}:%",),
    ).fetchall()
    found = []
    for key, run_at in rows:
        tick = datetime.fromisoformat(key.removeprefix(f"schedule:{schedule}:"))
        assert tick == run_at  # each job runs at its tick
        found.append(tick)
    return found


def wait_for_ticks(conn: psycopg.Connection[Any], schedule: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(set(ticks(conn, schedule))) < count:
        assert time.monotonic() < deadline, f"fewer than {count} ticks of {schedule} after {timeout}s"
        time.sleep(0.2)


def assert_each_second_once(found: list[datetime]) -> None:
    assert found, "no tick was enqueued"
    assert len(found) == len(set(found)), f"a tick was enqueued twice: {found}"
    expected = [found[0] + timedelta(seconds=n) for n in range(len(found))]
    assert found == expected, f"a tick is missing: {found}"


@pytest.mark.timeout(90)
def test_three_workers_enqueue_every_tick_of_a_one_second_schedule_exactly_once(dsn, conn, workers):
    processes = [workers() for _ in range(3)]
    wait_for_ticks(conn, "every-second", 12, timeout=60)
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
    assert_each_second_once(ticks(conn, "every-second"))
    states = dict(conn.execute("SELECT state::text, count(*) FROM pgqueue.job GROUP BY 1").fetchall())
    assert states.get("completed", 0) >= 12
    schedules = {row[0]: row[1] for row in conn.execute("SELECT name, last_tick FROM pgqueue.schedule")}
    assert set(schedules) == {"every-second", "every-second-caught-up"}
    assert schedules["every-second"] == max(ticks(conn, "every-second"))


@pytest.mark.timeout(120)
def test_a_restart_of_every_worker_loses_or_doubles_no_tick(dsn, conn, workers):
    first = [workers() for _ in range(3)]
    wait_for_ticks(conn, "every-second-caught-up", 4, timeout=60)
    # Every worker stops at once (one killed outright), and a new fleet starts a moment later.
    first[0].kill()
    for process in first[1:]:
        process.send_signal(signal.SIGTERM)
    for process in first:
        process.communicate(timeout=30)
    stopped = datetime.now(UTC)
    time.sleep(2.5)
    second = [workers() for _ in range(3)]
    before = len(ticks(conn, "every-second-caught-up"))
    wait_for_ticks(conn, "every-second-caught-up", before + 6, timeout=60)
    for process in second:
        process.send_signal(signal.SIGTERM)
    for process in second:
        process.communicate(timeout=30)
    # With catch_up, the ticks of the seconds without a worker were enqueued at the restart.
    caught_up = ticks(conn, "every-second-caught-up")
    assert_each_second_once(caught_up)
    assert caught_up[0] < stopped < caught_up[-1] - timedelta(seconds=3)
    # Without it, the missed ticks were skipped, but none was enqueued twice.
    skipping = ticks(conn, "every-second")
    assert len(skipping) == len(set(skipping))
    gaps = [b - a for a, b in zip(skipping, skipping[1:])]
    assert max(gaps) >= timedelta(seconds=2), gaps  # the seconds without a worker


def pgqueue_cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PGQUEUE_DATABASE_URL": dsn}
    return subprocess.run(
        [sys.executable, "-m", "pgqueue", "schedules", *args],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.timeout(120)
def test_the_schedules_command_adds_lists_and_removes(dsn, conn):
    added = pgqueue_cli(
        dsn,
        "add",
        "nightly",
        "tick",
        "--cron",
        "30 2 * * *",
        "--tz",
        "Europe/Berlin",
        "--data",
        '{"kind": "nightly"}',
        "--app",
        "schedule_app:app",
    )
    assert added.returncode == 0, added.stderr
    unknown = pgqueue_cli(dsn, "add", "bad", "no-such-task", "--every", "5", "--app", "schedule_app:app")
    assert unknown.returncode == 2 and "no task named 'no-such-task'" in unknown.stderr
    bad = pgqueue_cli(dsn, "add", "bad", "tick", "--cron", "99 * * * *")
    assert bad.returncode == 2 and "bad cron expression" in bad.stderr
    assert conn.execute("SELECT name, data FROM pgqueue.schedule").fetchall() == [
        ("nightly", {"kind": "nightly"})
    ]
    listed = pgqueue_cli(dsn, "list")
    assert listed.returncode == 0 and "nightly" in listed.stdout and "Europe/Berlin" in listed.stdout
    removed = pgqueue_cli(dsn, "remove", "nightly")
    assert removed.returncode == 0, removed.stderr
    assert pgqueue_cli(dsn, "remove", "nightly").returncode == 2
    assert "no schedules" in pgqueue_cli(dsn, "list").stdout
