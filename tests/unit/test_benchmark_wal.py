"""The benchmarks' WAL flush figure: which counter each server version offers, and the
per-job figure read from two snapshots of it. No server needed."""

from __future__ import annotations

import pytest

from benchmarks.harness import wal_flush_counter, wal_flushes_per_job


@pytest.mark.parametrize("version", [140000, 150020, 160004, 170006])
def test_up_to_17_flushes_come_from_pg_stat_wal(version: int) -> None:
    counter = wal_flush_counter(version)
    assert counter.sql == "SELECT wal_sync FROM pg_stat_wal"
    assert "pg_stat_wal.wal_sync" in counter.description


@pytest.mark.parametrize("version", [180000, 180006, 190000])
def test_from_18_flushes_come_from_pg_stat_io(version: int) -> None:
    counter = wal_flush_counter(version)
    assert counter.sql is not None
    assert "wal_sync" not in counter.sql  # gone from pg_stat_wal in 18
    assert "pg_stat_io" in counter.sql
    assert "object = 'wal'" in counter.sql and "context = 'normal'" in counter.sql
    assert "fsyncs" in counter.sql


def test_before_14_there_is_no_counter() -> None:
    counter = wal_flush_counter(130000)
    assert counter.sql is None
    assert counter.description.startswith("not measured")


@pytest.mark.parametrize(
    ("fsync", "method"), [("off", "fdatasync"), ("on", "open_datasync"), ("on", "open_sync")]
)
def test_counters_that_never_move_are_not_measured(fsync: str, method: str) -> None:
    for version in (150000, 180000):
        counter = wal_flush_counter(version, fsync, method)
        assert counter.sql is None
        assert counter.description.startswith("not measured")


@pytest.mark.parametrize("method", ["fsync", "fdatasync", "fsync_writethrough"])
def test_fsync_methods_are_counted(method: str) -> None:
    assert wal_flush_counter(170000, "on", method).sql is not None


def test_flushes_per_job() -> None:
    assert wal_flushes_per_job(100, 150, 100) == 0.5
    assert wal_flushes_per_job(7, 7, 10) == 0.0


@pytest.mark.parametrize(
    ("start", "end", "jobs"),
    [(None, 10, 5), (10, None, 5), (None, None, 5), (10, 3, 5), (1, 2, 0)],
)
def test_flushes_per_job_not_measured(start: int | None, end: int | None, jobs: int) -> None:
    assert wal_flushes_per_job(start, end, jobs) is None
