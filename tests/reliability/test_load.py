"""Load over time: scenario 7 (soak, memory) and scenario 16 (a transaction holding the xmin horizon)."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest

import scoreboard
from fleet import Fleet


def run_soak(db: Any, producer: Any, fleet: Fleet, name: str, jobs: int, max_growth_mib: float) -> None:
    started = time.monotonic()
    rng = random.Random(7)
    plan = [(n, round(rng.uniform(0, 50), 1), rng.random() < 0.01) for n in range(jobs)]
    ids: list[int] = []
    for first in range(0, jobs, 10_000):
        ids += producer.enqueue_many([("soak", {"n": n, "ms": ms, "fail": fail})
                                      for n, ms, fail in plan[first:first + 10_000]])
    meant_to_fail = sum(fail for _, _, fail in plan)
    workers = [fleet.start("--concurrency", "8") for _ in range(4)]
    samples: list[tuple[float, list[int]]] = []  # (fraction done, RSS KiB per worker)
    deadline = time.monotonic() + 60 + jobs / 100
    while time.monotonic() < deadline:
        done = db.scalar("SELECT count(*) FROM pgqueue.job WHERE state IN ('completed', 'failed')")
        samples.append((done / jobs, [w.rss_kib() for w in workers]))
        if done >= jobs:
            break
        time.sleep(1.0)
    throughput = jobs / (time.monotonic() - started)
    codes = fleet.stop()
    warm = next((rss for fraction, rss in samples if fraction >= 0.2), samples[0][1])
    last = next((rss for fraction, rss in reversed(samples) if all(rss)), warm)
    growth = max((end - begin) / 1024 for begin, end in zip(warm, last))
    score = scoreboard.measure(db.conn, name, ids, started=started, recovery=None, jobs_per_s=throughput,
                               rss_after_warmup_mib=round(max(warm) / 1024, 1), rss_end_mib=round(max(last) / 1024, 1),
                               rss_growth_mib=round(growth, 1), samples=len(samples))
    scoreboard.assert_sound(score, max_failed=meant_to_fail, max_re_executions=0)
    assert score.failed == meant_to_fail
    assert set(codes.values()) == {0}, fleet.outputs()[-3000:]
    assert growth < max_growth_mib, f"worker memory grew by {growth:.1f} MiB after warm-up"


@pytest.mark.timeout(150)
def test_s07_soak_with_one_percent_failing(db, producer, fleet):
    run_soak(db, producer, fleet, "s07 soak", 4_000, max_growth_mib=30)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_s07_long_soak_one_hundred_thousand_jobs(db, producer, fleet):
    run_soak(db, producer, fleet, "s07 soak (long)", 100_000, max_growth_mib=20)


# --- scenario 16 ----------------------------------------------------------------------------


class Churn(threading.Thread):
    """Enqueues batches of quick jobs at a steady pace until stopped."""

    def __init__(self, app: Any, per_second: int) -> None:
        super().__init__(name="churn", daemon=True)
        self.app, self.per_second = app, per_second
        self.ids: list[int] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        batch = max(1, self.per_second // 10)
        while not self.stopping.wait(0.1):
            self.ids += self.app.enqueue_many([("work", {"n": 0})] * batch)


def phase(db: Any, producer: Any, seconds: float, per_second: int) -> dict[str, float]:
    """Churn for ``seconds``; throughput, start latency (p50, p95) and the job table's dead rows."""
    churn = Churn(producer, per_second)
    began = time.time()
    churn.start()
    time.sleep(seconds)
    churn.stopping.set()
    churn.join(10)
    scoreboard.wait_finished(db.conn, churn.ids, timeout=60)
    elapsed = time.time() - began
    p50, p95 = db.conn.execute(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lat), percentile_cont(0.95) WITHIN GROUP (ORDER BY lat) "
        "FROM (SELECT extract(epoch FROM min(l.at) - j.run_at) AS lat FROM pgqueue.job AS j "
        "JOIN ledger AS l ON l.job_id = j.id WHERE j.id = ANY(%s) GROUP BY j.id, j.run_at) AS s", (churn.ids,)
    ).fetchone()
    dead = db.scalar("SELECT n_dead_tup FROM pg_stat_user_tables WHERE schemaname = 'pgqueue' AND relname = 'job'")
    return {"jobs": len(churn.ids), "per_s": len(churn.ids) / elapsed, "p50": float(p50), "p95": float(p95),
            "dead": dead, "ids": churn.ids}


def run_xmin(db: Any, producer: Any, fleet: Fleet, name: str, seconds: float) -> None:
    started = time.monotonic()
    for _ in range(2):
        # PGQUEUE_XMIN_WARNING: seconds a transaction may hold the horizon back before workers warn.
        fleet.start("--concurrency", "8", "--log-level", "info", env={"PGQUEUE_XMIN_WARNING": "3"})
    time.sleep(1.0)
    base = phase(db, producer, seconds, per_second=200)
    with db.cluster_connection("reliability-xmin-holder") as holder:
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT count(*) FROM orders")  # takes the snapshot that pins the horizon
        holder_pid = holder.info.backend_pid
        held = phase(db, producer, seconds, per_second=200)
        holder.execute("ROLLBACK")
    codes = fleet.stop()
    logs = fleet.outputs()
    warnings = [line for line in logs.splitlines()
                if ("WARNING" in line or "ERROR" in line) and ("xmin" in line.lower() or str(holder_pid) in line)]
    ids = base["ids"] + held["ids"]
    score = scoreboard.measure(
        db.conn, name, ids, started=started, recovery=None,
        base_jobs_per_s=base["per_s"], held_jobs_per_s=held["per_s"],
        base_latency_p50_ms=base["p50"] * 1000, base_latency_p95_ms=base["p95"] * 1000,
        held_latency_p50_ms=held["p50"] * 1000, held_latency_p95_ms=held["p95"] * 1000,
        dead_rows_before=base["dead"], dead_rows_held=held["dead"], warnings=len(warnings),
    )
    scoreboard.assert_sound(score)
    assert set(codes.values()) == {0}, logs[-3000:]
    assert warnings, "no worker warned about the transaction holding back the xmin horizon"


@pytest.mark.timeout(150)
def test_s16_a_transaction_holding_the_xmin_horizon_is_reported(db, producer, fleet):
    run_xmin(db, producer, fleet, "s16 xmin horizon held", seconds=8)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_s16_long_xmin_horizon_held_for_two_minutes(db, producer, fleet):
    run_xmin(db, producer, fleet, "s16 xmin horizon held (long)", seconds=120)
