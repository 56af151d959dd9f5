"""Transactions at both ends of a job: scenario 8 (enqueue) and scenario 9 (completion)."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Any

import psycopg
import pytest

import scoreboard
from fleet import FAST_RESCUE, Fleet
from scoreboard import rescue_delays


class OrderProducer(threading.Thread):
    """Runs ``count`` order transactions: insert the order, enqueue its job on the same
    connection, pause, then commit or roll back (a coin toss). ``mode``: ``sync``,
    ``savepoint`` (the job alone is rolled back to a savepoint, the order commits) or ``async``."""

    def __init__(self, app: Any, dsn: str, first_order: int, count: int, mode: str) -> None:
        super().__init__(name=f"orders-{mode}-{first_order}", daemon=True)
        self.app, self.dsn, self.first, self.count, self.mode = app, dsn, first_order, count, mode
        self.committed: dict[int, int] = {}   # order id -> job id
        self.rolled_back: dict[int, int] = {}
        self.orphan_orders: list[int] = []    # committed orders whose job was rolled back to a savepoint
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            if self.mode == "async":
                asyncio.run(self._arun())
            else:
                self._run()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def _run(self) -> None:
        rng = random.Random(self.first)
        with psycopg.connect(self.dsn) as conn:
            for order_id in range(self.first, self.first + self.count):
                commit = rng.random() < 0.5
                conn.execute("INSERT INTO orders (id) VALUES (%s)", (order_id,))
                if self.mode == "savepoint":
                    with conn.transaction():  # a savepoint inside the open transaction
                        job_id = self.app.enqueue("order", {"order_id": order_id}, conn=conn)
                        time.sleep(rng.uniform(0, 0.004))
                        if not commit:
                            raise_rollback()
                else:
                    job_id = self.app.enqueue("order", {"order_id": order_id}, conn=conn)
                    time.sleep(rng.uniform(0, 0.004))  # a worker polling now must not see it
                if commit:
                    conn.commit()
                    self.committed[order_id] = job_id
                elif self.mode == "savepoint":
                    conn.commit()
                    self.orphan_orders.append(order_id)
                    self.rolled_back[order_id] = job_id
                else:
                    conn.rollback()
                    self.rolled_back[order_id] = job_id

    async def _arun(self) -> None:
        rng = random.Random(self.first)
        async with await psycopg.AsyncConnection.connect(self.dsn) as conn:
            for order_id in range(self.first, self.first + self.count):
                await conn.execute("INSERT INTO orders (id) VALUES (%s)", (order_id,))
                job_id = await self.app.aenqueue("order", {"order_id": order_id}, conn=conn)
                await asyncio.sleep(rng.uniform(0, 0.004))
                if rng.random() < 0.5:
                    await conn.commit()
                    self.committed[order_id] = job_id
                else:
                    await conn.rollback()
                    self.rolled_back[order_id] = job_id


def raise_rollback() -> None:
    raise psycopg.Rollback()


def run_transactional_enqueue(db: Any, producer: Any, fleet: Fleet, name: str, per_thread: int) -> None:
    started = time.monotonic()
    fleet.start("--concurrency", "8")
    fleet.start("--concurrency", "8")
    time.sleep(1.0)  # workers polling and listening before the first commit
    threads = [OrderProducer(producer, db.producer, 100_000 * (i + 1), per_thread, mode)
               for i, mode in enumerate(["sync", "sync", "savepoint", "async"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
        assert thread.error is None, repr(thread.error)
    committed = {o: j for t in threads for o, j in t.committed.items()}
    rolled_back = {o: j for t in threads for o, j in t.rolled_back.items()}
    orphans = [o for t in threads for o in t.orphan_orders]
    ids = sorted(committed.values())
    scoreboard.wait_finished(db.conn, ids, timeout=60)
    codes = fleet.stop()
    jobs_per_order = dict(db.conn.execute(
        "SELECT (data->>'order_id')::bigint, count(*) FROM pgqueue.job WHERE type = 'order' GROUP BY 1"
    ).fetchall())
    ghost_jobs = db.scalar("SELECT count(*) FROM pgqueue.job WHERE id = ANY(%s)", sorted(rolled_back.values()))
    invisible = db.scalar("SELECT count(*) FROM ledger WHERE note = 'invisible'")
    early = db.scalar(
        "SELECT count(*) FROM pgqueue.job AS j JOIN ledger AS l ON l.job_id = j.id "
        "WHERE j.id = ANY(%s) AND l.at < j.created_at", ids)
    score = scoreboard.measure(
        db.conn, name, ids, started=started, transactions=len(committed) + len(rolled_back),
        rolled_back=len(rolled_back), savepoint_rollbacks=len(orphans), ghost_jobs=ghost_jobs,
        started_before_commit=invisible,
    )
    scoreboard.assert_sound(score)
    assert ghost_jobs == 0, "jobs of rolled-back transactions exist"
    assert all(order not in jobs_per_order for order in rolled_back), "a rolled-back order has a job"
    assert all(jobs_per_order.get(order) == 1 for order in committed), "a committed order has not exactly one job"
    assert db.scalar("SELECT count(*) FROM orders WHERE id = ANY(%s)", orphans) == len(orphans)
    assert invisible == 0 and early == 0, "a job ran before its transaction committed"
    assert len(rolled_back) >= per_thread, "the coin never came up rollback"
    assert set(codes.values()) == {0}, fleet.outputs()


@pytest.mark.timeout(180)
def test_s08_transactional_enqueue_under_load(db, producer, fleet):
    # 4 producers x 500 transactions: about 1,000 rolled back and 1,000 committed.
    run_transactional_enqueue(db, producer, fleet, "s08 transactional enqueue", per_thread=500)


# --- scenario 9 -----------------------------------------------------------------------------


def run_effects(db: Any, producer: Any, fleet: Fleet, name: str, handler: str, crashes: int) -> dict[str, Any]:
    """``crashes`` jobs each kill their worker once, alternately with their effect written but
    not committed and with it committed but the job not completed; as many jobs again run
    plainly beside them (and die with their worker now and then)."""
    started = time.monotonic()
    points = ["before_commit", "after_commit"]
    items = [(handler, {"crash_at": points[n % 2]}) for n in range(crashes)]
    items += [(handler, {"crash_at": None}) for _ in range(crashes)]
    random.Random(9).shuffle(items)
    ids = producer.enqueue_many(items)
    # One job at a time per worker: each crash is a kill of its own.
    fleet.supervise(4, "--concurrency", "1", *FAST_RESCUE)
    scoreboard.wait_finished(db.conn, ids, timeout=30 + crashes * 3)
    fleet.stop()
    effects = db.scalar("SELECT count(*) FROM effects WHERE job_id = ANY(%s)", ids)
    completions = db.scalar("SELECT count(*) FROM pgqueue.job WHERE id = ANY(%s) AND state = 'completed'", ids)
    duplicate_attempts = db.scalar("SELECT count(*) FROM ledger WHERE job_id = ANY(%s) AND note = 'duplicate-effect'",
                                   ids)
    without_effect = db.scalar("SELECT count(*) FROM pgqueue.job AS j WHERE j.id = ANY(%s) AND j.state = 'completed' "
                               "AND NOT EXISTS (SELECT 1 FROM effects AS e WHERE e.job_id = j.id)", ids)
    deaths = {worker.pid: at for at, worker in fleet.deaths}
    delays = rescue_delays(db, deaths)
    score = scoreboard.measure(
        db.conn, name, ids, started=started, recovery=max(delays, default=None), kills=len(fleet.deaths),
        effects=effects, completions=completions, effects_prevented_twice=duplicate_attempts,
        completed_without_effect=without_effect,
    )
    scoreboard.assert_sound(score, max_re_executions=len(fleet.deaths) * 2 + crashes)
    # Every execution that went for its crash point died there, once. A crash job's first run
    # can miss it on a loaded machine: rescued while it ran (short leases), its two runs each
    # saw the other in the ledger, or it lost its claim before the effect. Most must not.
    crashing = db.scalar("SELECT count(*) FROM ledger WHERE job_id = ANY(%s) AND note = 'crashing'", ids)
    assert len(fleet.deaths) == crashing
    assert crashing >= crashes * 3 // 4, f"only {crashing} of {crashes} crash jobs reached their crash point"
    assert effects == completions == len(ids), (effects, completions)
    assert without_effect == 0
    return {"duplicates": duplicate_attempts, "kills": len(fleet.deaths)}


@pytest.mark.timeout(240)
def test_s09_effects_and_completions_under_sigkill(db, producer, fleet):
    # Today: the effect commits on its own, keyed by job id; a crash after that commit runs
    # the handler again, and only the unique key stops a second effect.
    separate = run_effects(db, producer, fleet, "s09 effect in its own transaction", "effect", crashes=12)
    assert separate["duplicates"] >= 6, "the crash window between effect and completion was not hit"


@pytest.mark.timeout(240)
def test_s09_effect_and_completion_in_one_transaction_never_runs_twice(db, producer, fleet):
    # The effect and the completion commit together (JobContext.acomplete): no crash point
    # leaves an effect without a completion, and none runs the effect twice.
    together = run_effects(db, producer, fleet, "s09 effect + completion in one transaction", "effect_tx",
                           crashes=12)
    assert together["duplicates"] == 0


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_s09_long_two_hundred_kills_with_the_effect_in_its_own_transaction(db, producer, fleet):
    separate = run_effects(db, producer, fleet, "s09 effect in its own transaction (long)", "effect", crashes=200)
    assert separate["duplicates"] >= 100


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_s09_long_two_hundred_kills_with_effect_and_completion_in_one_transaction(db, producer, fleet):
    together = run_effects(db, producer, fleet, "s09 effect + completion in one transaction (long)", "effect_tx",
                           crashes=200)
    assert together["duplicates"] == 0
