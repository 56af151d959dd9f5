"""Workers killed, stopped and signalled: scenarios 1, 2, 10 and 12."""

from __future__ import annotations

import random
import re
import signal
import time
from typing import Any

import pytest

import scoreboard
from fleet import FAST_RESCUE, Fleet, wait_for


def rescue_delays(db: Any, kills: dict[int, float]) -> list[float]:
    """Seconds from each kill to the rescue of the last job the killed worker held."""
    rows = db.conn.execute(
        "SELECT e->>'error', extract(epoch FROM (e->>'at')::timestamptz) "
        "FROM pgqueue.job, jsonb_array_elements(coalesce(errors, '[]')) AS e "
        "WHERE e->>'error' LIKE 'lease expired%%'"
    ).fetchall()
    last: dict[int, float] = {}
    for error, at in rows:
        found = re.search(r"the worker [^ ]*:(\d+):", error)
        if found and int(found.group(1)) in kills:
            pid = int(found.group(1))
            last[pid] = max(last.get(pid, 0.0), float(at))
    return [at - kills[pid] for pid, at in last.items()]


def kill_randomly(fleet: Fleet, slots: list[Any], db: Any, job_ids: list[int], every: float,
                  timeout: float) -> dict[int, float]:
    """SIGKILL a random supervised worker every ``every`` seconds (±30 %) until the jobs are done."""
    rng = random.Random(1)
    kills: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(every * rng.uniform(0.7, 1.3))
        left = db.scalar("SELECT count(*) FROM pgqueue.job WHERE id = ANY(%s) "
                         "AND state NOT IN ('completed', 'failed')", job_ids)
        if left < 50:
            break
        victim = rng.choice(slots).current
        if victim.alive() and time.time() - victim.started > 1.0:
            victim.signal(signal.SIGKILL)
            kills[victim.pid] = time.time()
    return kills


def run_kill_scenario(db: Any, producer: Any, fleet: Fleet, name: str, jobs: int, every: float,
                      timeout: float) -> None:
    rng = random.Random(jobs)
    started = time.monotonic()
    ids = producer.enqueue_many([("work", {"n": n, "ms": rng.uniform(100, 400)}) for n in range(jobs)])
    slots = fleet.supervise(3, "--concurrency", "5", *FAST_RESCUE)
    kills = kill_randomly(fleet, slots, db, ids, every, timeout)
    scoreboard.wait_finished(db.conn, ids, timeout=60)
    fleet.stop()
    delays = rescue_delays(db, kills)
    score = scoreboard.measure(
        db.conn, name, ids, started=started, recovery=max(delays, default=None),
        kills=len(kills), rescues=len(delays),
    )
    assert len(kills) >= 3, "the run ended before the scenario could kill enough workers"
    scoreboard.assert_sound(score, max_re_executions=len(kills) * 5 * 3)
    # lease (2 s) + one sweep (0.5 s) + a loaded machine's slack
    assert score.recovery is not None and score.recovery < 6, delays


@pytest.mark.timeout(180)
def test_s01_sigkill_a_random_worker_every_few_seconds(db, producer, fleet):
    run_kill_scenario(db, producer, fleet, "s01 sigkill workers", jobs=1000, every=2.0, timeout=120)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_s01_long_sigkill_a_random_worker_every_few_seconds(db, producer, fleet):
    run_kill_scenario(db, producer, fleet, "s01 sigkill workers (long)", jobs=10_000, every=3.0, timeout=900)
