"""Scenario 13: workers and a producer whose clocks are ten minutes off (libfaketime).

All of pgqueue's time maths use the database's now(), so a skewed process must neither
get its jobs rescued early, nor run a scheduled job early or late, nor schedule one wrongly.
"""

from __future__ import annotations

import glob
import subprocess
import sys
import textwrap
import time

import pytest

import scoreboard
from fleet import HERE, FAST_RESCUE, wait_for


def libfaketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not found:
        raise RuntimeError("libfaketime is not installed: run tests/reliability/setup-system.sh")
    return found[0]


def skewed(offset: str) -> dict[str, str]:
    return {"LD_PRELOAD": libfaketime(), "FAKETIME": offset, "FAKETIME_DONT_RESET": "1"}


SKEWED_PRODUCER = """
import reliability_app
app = reliability_app.make_app({dsn!r})
ids = [app.enqueue("scheduled", {{"n": 0}}, delay=3)]
ids += app.enqueue_many([("scheduled", {{"n": n}}, {{"delay": 3}}) for n in range(10)])   # one INSERT
ids += app.enqueue_many([("scheduled", {{"n": n}}, {{"delay": 3}}) for n in range(100)])  # COPY
app.close()
print(",".join(map(str, ids)))
"""


@pytest.mark.timeout(120)
def test_s13_ten_minutes_of_clock_skew_changes_nothing(db, producer, fleet):
    started = time.monotonic()
    # Is the skew real? The skewed interpreter must see a clock ten minutes ahead.
    probe = subprocess.run([sys.executable, "-c", "import time; print(time.time())"], capture_output=True, text=True,
                           env={**fleet.environment(), **skewed("+10m")}, timeout=30)
    assert abs(float(probe.stdout) - time.time() - 600) < 30, probe.stdout + probe.stderr

    long_jobs = producer.enqueue_many([("hold", {"first": 5.0})] * 8)
    ahead = fleet.start("--concurrency", "4", *FAST_RESCUE, env=skewed("+10m"))
    behind = fleet.start("--concurrency", "4", *FAST_RESCUE, env=skewed("-10m"))
    wait_for(lambda: db.scalar("SELECT count(*) FROM ledger") == 8, 30, "the skewed workers to take all 8 jobs")
    # An honest worker sweeps for expired leases the whole time; it has no free slot to steal with.
    fleet.start("--concurrency", "1", "--lease-seconds", "2", "--rescue-interval", "0.3", "--queues", "elsewhere")

    made = subprocess.run([sys.executable, "-c", textwrap.dedent(SKEWED_PRODUCER.format(dsn=db.producer))],
                          cwd=HERE, capture_output=True, text=True, timeout=60,
                          env={**fleet.environment(), **skewed("-10m")})
    assert made.returncode == 0, made.stderr
    timed = [int(i) for i in made.stdout.strip().split(",")]
    ids = long_jobs + timed
    scoreboard.wait_finished(db.conn, ids, timeout=60)
    codes = fleet.stop()
    rescued = db.scalar("SELECT count(*) FROM pgqueue.job WHERE id = ANY(%s) AND errors IS NOT NULL", long_jobs)
    early, late = db.conn.execute(
        "SELECT count(*) FILTER (WHERE l.at < j.run_at), count(*) FILTER (WHERE l.at > j.run_at + interval '2 s') "
        "FROM pgqueue.job AS j JOIN ledger AS l ON l.job_id = j.id WHERE j.id = ANY(%s)", (timed,)
    ).fetchone()
    wrong_schedule = db.scalar(
        "SELECT count(*) FROM pgqueue.job WHERE id = ANY(%s) "
        "AND abs(extract(epoch FROM run_at - created_at) - 3) > 1", timed)
    by_skewed = db.scalar("SELECT count(*) FROM pgqueue.job WHERE id = ANY(%s) AND (worker_id LIKE %s OR "
                          "worker_id LIKE %s)", ids, f"%:{ahead.pid}:%", f"%:{behind.pid}:%")
    score = scoreboard.measure(db.conn, "s13 clock skew +-10 min", ids, started=started, recovery=None,
                               premature_rescues=rescued, ran_early=early, ran_late=late,
                               misscheduled=wrong_schedule, run_by_skewed_workers=by_skewed)
    scoreboard.assert_sound(score, max_re_executions=0)
    assert rescued == 0, "a skewed worker's jobs were rescued while it renewed their leases"
    assert early == 0 and late == 0, (early, late)
    assert wrong_schedule == 0, "a skewed producer's delay was counted from its own clock"
    assert by_skewed == len(ids), "the skewed workers did not run every job"
    assert set(codes.values()) == {0}, fleet.outputs()
