"""Scenario 14: bad input end to end, through real workers.

tests/integration/test_bad_input.py already shows that bad data, names and options are
refused at enqueue with no row written. Here the jobs that *are* accepted, and the
outcomes handlers produce, go through a real worker: each ends ``completed`` or cleanly
``failed``, the worker survives, the table stays sound.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pgqueue
import reliability_app
import scoreboard
from fleet import FAST_RESCUE, Fleet, wait_for


def table_is_sound(db: Any) -> None:
    """The job table and its indexes agree (amcheck) and every row reads back."""
    db.conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
    for (index,) in db.conn.execute(
        "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'pgqueue.job'::regclass"
    ).fetchall():
        db.conn.execute("SELECT bt_index_check(%s::regclass, true)", (index,))
    db.conn.execute("SELECT count(*), sum(length(data::text)), sum(length(coalesce(output::text, ''))) "
                    "FROM pgqueue.job").fetchone()


def one_at_a_time(db: Any, producer: pgqueue.App, fleet: Fleet, cases: list[tuple[str, str, dict[str, Any]]],
                  patience: float) -> tuple[list[int], list[str], dict[str, int]]:
    """Run each case (label, type, data) beside three plain jobs on one worker; a case that
    leaves its jobs unfinished or the worker dead is written down, its jobs cancelled, and
    the next case gets a fresh worker."""
    ids: list[int] = []
    broken: list[str] = []
    case_jobs: dict[str, int] = {}
    worker = fleet.start("--concurrency", "4", *FAST_RESCUE)
    for label, type_, data in cases:
        # queue= for types this producer has no handler of (they would go to the default queue)
        batch = [case_jobs.setdefault(label, producer.enqueue(type_, data, queue=reliability_app.QUEUE))]
        batch += producer.enqueue_many([("work", {"n": n}) for n in range(3)])
        ids += batch
        try:
            wait_for(lambda: db.scalar("SELECT count(*) FROM pgqueue.job WHERE id = ANY(%s) "
                                       "AND state IN ('completed', 'failed')", batch) == len(batch), patience,
                     label, interval=0.1)
            if not worker.alive():
                raise AssertionError("worker died")
        except AssertionError:
            states = dict(db.conn.execute("SELECT state::text, count(*) FROM pgqueue.job WHERE id = ANY(%s) "
                                          "GROUP BY 1", (batch,)).fetchall())
            tail = [line for line in worker.output().splitlines() if line.strip()][-3:]
            broken.append(f"{label}: jobs {states}, worker {'alive' if worker.alive() else 'dead'}; "
                          f"log: {' | '.join(t[:300] for t in tail)}")
            worker.process.kill()
            worker.wait(10)
            # Take the case's jobs out of the way, so they do not poison the next worker too.
            db.conn.execute("UPDATE pgqueue.job SET state = 'failed', lease_id = NULL, finished_at = now() "
                            "WHERE id = ANY(%s) AND state NOT IN ('completed', 'failed')", (batch,))
            worker = fleet.start("--concurrency", "4", *FAST_RESCUE)
    return ids, broken, case_jobs


OUTPUT_CASES = [(f"returns {kind}", "hostile_output", {"kind": kind}) for kind in reliability_app.HOSTILE_OUTPUTS]
ERROR_CASES = [(f"raises {kind} ({where})", handler, {"kind": kind})
               for kind in reliability_app.HOSTILE_ERRORS
               for where, handler in (("async", "hostile_error"), ("thread", "hostile_error_thread"))]
OTHER_CASES = [
    ("unknown job type", "no-such-type", {"x": 1}),
    ("a dotted path as the type", "os.system", {"command": "touch /tmp/pwned"}),
    ("arguments the handler does not take", "work", {"n": 1, "surprise": True}),
    ("missing arguments", "work", {}),
    ("process handler data naming a module", "echo_process", {"module": "os", "qualname": "system"}),
]


@pytest.mark.timeout(240)
def test_s14_hostile_outcomes_fail_cleanly_and_the_worker_survives(db, producer, fleet):
    started = time.monotonic()
    ids, broken, case_jobs = one_at_a_time(db, producer, fleet, OUTPUT_CASES + ERROR_CASES + OTHER_CASES, patience=5)
    codes = fleet.stop()
    table_is_sound(db)
    errors_ok = db.scalar("SELECT count(*) FROM pgqueue.job WHERE type LIKE 'hostile_error%%' AND state = 'failed' "
                          "AND error IS NOT NULL AND error LIKE '%%ValueError%%'")
    score = scoreboard.measure(db.conn, "s14 hostile outcomes", ids, started=started, recovery=None,
                               cases=len(OUTPUT_CASES + ERROR_CASES + OTHER_CASES), broke_the_worker=len(broken),
                               errors_stored_as_text=errors_ok)
    scoreboard.assert_sound(score, max_failed=len(ERROR_CASES) + len(OUTPUT_CASES) + len(OTHER_CASES) + 4 * len(broken))
    assert not broken, "cases that broke a worker:\n" + "\n".join(broken)
    assert set(codes.values()) == {0}
    outputs = dict(db.conn.execute(
        "SELECT data->>'kind', state::text FROM pgqueue.job WHERE type = 'hostile_output'").fetchall())
    assert set(outputs) == set(reliability_app.HOSTILE_OUTPUTS)
    unknown = db.job(case_jobs["unknown job type"])
    assert unknown.state.value == "failed" and unknown.attempts == 1 and "no handler" in unknown.error
    dotted = db.job(case_jobs["a dotted path as the type"])
    assert dotted.state.value == "failed" and "no handler" in dotted.error
    module_data = db.job(case_jobs["process handler data naming a module"])
    assert module_data.state.value == "completed" and module_data.output == {"keys": ["module", "qualname"]}


# --- payload sizes ----------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_s14_ten_megabyte_payloads_run_and_larger_ones_are_refused(db, fleet):
    started = time.monotonic()
    big = reliability_app.make_app(db.producer, max_payload_bytes=12 * 1024 * 1024)
    try:
        before = db.scalar("SELECT count(*) FROM pgqueue.job")
        with pytest.raises(pgqueue.PayloadTooLarge):
            big.enqueue("measure", {"blob": "x" * (13 * 1024 * 1024)})
        with pytest.raises(pgqueue.PayloadTooLarge):
            big.enqueue_many([("measure", {"blob": "y" * (13 * 1024 * 1024)})] + [("measure", {"n": 1})] * 70)
        assert db.scalar("SELECT count(*) FROM pgqueue.job") == before
        ten = 10 * 1024 * 1024
        ids = [big.enqueue("measure", {"blob": "é" * (ten // 2)})]  # 10 MiB as UTF-8, half as many characters
        ids += big.enqueue_many([("measure", {"blob": "z" * ten})] * 2 + [("measure", {"n": n}) for n in range(70)])
    finally:
        big.close()
    fleet.start("--concurrency", "2")
    scoreboard.wait_finished(db.conn, ids, timeout=90)
    codes = fleet.stop()
    sizes = [db.job(job_id).output for job_id in ids[:3]]
    score = scoreboard.measure(db.conn, "s14 10 MB payloads", ids, started=started, recovery=None,
                               largest_mib=round(max(sizes) / 2**20, 1))
    scoreboard.assert_sound(score)
    assert sizes == [len(json.dumps({"blob": "é" * (ten // 2)}, ensure_ascii=False))] + [ten + 12] * 2
    assert set(codes.values()) == {0}


# --- names ------------------------------------------------------------------------------------

HOSTILE_BUT_VALID_NAMES = [
    "'; DROP TABLE pgqueue.job; --",
    'Robert"); DROP TABLE students;--',
    "%s %(x)s {schema} $1 \\x00",
    "名前 🎉 ümlaut",
    "pgqueue_jobs",
    "q" * 128,
]


@pytest.mark.timeout(120)
def test_s14_hostile_but_valid_queue_and_type_names_are_just_names(db, producer, fleet):
    started = time.monotonic()
    ids = []
    for name in HOSTILE_BUT_VALID_NAMES:
        ids += producer.enqueue_many([("work", {"n": 1}, {"queue": name}), (name, {"n": 2}, {"queue": "rel"})])
    fleet.start("--queues", ",".join(["rel", *HOSTILE_BUT_VALID_NAMES]), "--concurrency", "4")
    scoreboard.wait_finished(db.conn, ids, timeout=30)
    codes = fleet.stop()
    table_is_sound(db)
    states = db.conn.execute("SELECT queue, type, state::text FROM pgqueue.job WHERE id = ANY(%s) ORDER BY id",
                             (ids,)).fetchall()
    score = scoreboard.measure(db.conn, "s14 hostile names", ids, started=started, recovery=None)
    scoreboard.assert_sound(score, max_failed=len(HOSTILE_BUT_VALID_NAMES))
    assert set(codes.values()) == {0}
    for name, (queue_row, type_row) in zip(HOSTILE_BUT_VALID_NAMES, zip(states[::2], states[1::2])):
        assert queue_row == (name, "work", "completed")
        assert type_row == ("rel", name, "failed")  # no handler of that name: a clean failure
    assert db.scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'pgqueue'") == 10  # job, worker, queue, schedule, job_key, flow_start, flow_cursor, dependency, subscription, version


# --- any data, property-based ------------------------------------------------------------------

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@pytest.mark.timeout(240)
def test_s14_any_accepted_data_reaches_its_handler_unchanged(db, producer, fleet):
    started = time.monotonic()
    fleet.start("--concurrency", "8")
    accepted: list[int] = []
    refused = 0

    @settings(max_examples=25, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.lists(st.dictionaries(st.text(max_size=10), JSONISH, max_size=5), min_size=1, max_size=12))
    def check(batch: list[dict[str, Any]]) -> None:
        nonlocal refused
        expected: dict[int, Any] = {}
        for data in batch:
            before = db.scalar("SELECT count(*) FROM pgqueue.job")
            try:
                job_id = producer.enqueue("echo", data)
            except pgqueue.InvalidJob:
                refused += 1
                assert db.scalar("SELECT count(*) FROM pgqueue.job") == before
                continue
            expected[job_id] = json.loads(pgqueue.codec.encode_data(data, 10**7))
        accepted.extend(expected)
        scoreboard.wait_finished(db.conn, list(expected), timeout=30)
        for job_id, want in expected.items():
            job = db.job(job_id)
            assert job.state.value == "completed", (job.state, job.error)
            assert same_json(job.output, want), (job.output, want)

    check()
    codes = fleet.stop()
    table_is_sound(db)
    score = scoreboard.measure(db.conn, "s14 any data (hypothesis)", accepted, started=started, recovery=None,
                               refused_at_enqueue=refused)
    scoreboard.assert_sound(score)
    assert set(codes.values()) == {0}


def same_json(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-15)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b))
    return a == b and type(a) is type(b)
