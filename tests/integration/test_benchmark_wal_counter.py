"""The benchmarks' WAL flush counter query runs on the suite's server, whatever its version,
and the counter moves with a committed write."""

from __future__ import annotations

import time

import psycopg

from benchmarks.harness import wal_flush_counter


def test_the_wal_flush_counter_reads_and_moves(server_dsn: str) -> None:
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        settings = conn.execute(
            "SELECT current_setting('fsync'), current_setting('wal_sync_method')"
        ).fetchone()
        assert settings is not None
        counter = wal_flush_counter(conn.info.server_version, *settings)
        if counter.sql is None:
            assert counter.description.startswith("not measured")
            return
        before = conn.execute(counter.sql).fetchone()
        assert before is not None and before[0] is not None
        start = int(before[0])
        # A commit's flush may be done, and published later, by another process (group commit,
        # the WAL writer): write and look again for a while before calling it stuck.
        deadline = time.monotonic() + 5
        while True:
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS t (x int)")
            conn.execute("DROP TABLE t")
            conn.execute("SELECT pg_stat_force_next_flush()")
            conn.execute("SELECT 1")  # this backend's counters are published as the statement before ends
            after = conn.execute(counter.sql).fetchone()
            assert after is not None and after[0] is not None
            if int(after[0]) > start or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert int(after[0]) > start, counter.description
