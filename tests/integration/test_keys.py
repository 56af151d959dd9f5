"""Job identity (the uid every job gets) and enqueue-side keys: unique_for (throttle, idempotency
key) and debounce, across threads, transactions and the time their windows last."""

from __future__ import annotations

import json
import pickle
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import InvalidJob, JobId, JobNotFound
from pgqueue.cron import Spec
from pgqueue.db.driver import run
from pgqueue.db.insert import JobTemplate
from pgqueue.db.schedules import enqueue_ticks, save_schedules
from pgqueue.db.sql import queries

pytestmark = pytest.mark.timeout(120)

THREADS = 8
ENQUEUES = 1000


@pytest.fixture
def keyed_app(dsn: str) -> Iterator[pgqueue.App]:
    app = pgqueue.App(dsn, pool_size=THREADS)
    yield app
    app.close()


def rows(conn: psycopg.Connection[Any], query: str, *params: Any) -> list[tuple[Any, ...]]:
    return conn.execute(query, params).fetchall()


# --- the uid -------------------------------------------------------------------------------


def test_every_enqueue_returns_an_int_id_that_carries_the_jobs_uid(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    @app.task("t")
    def t(n: int) -> None: ...

    single = t.enqueue(n=0)
    unique = t.using(unique_key="u").enqueue(n=1)
    with psycopg.connect(dsn) as caller, caller.transaction():
        in_transaction = t.enqueue(conn=caller, n=2)
    few = t.enqueue_many([{"n": n} for n in range(3, 6)])  # INSERT ... unnest
    copied = t.enqueue_many([{"n": n} for n in range(6, 206)])  # COPY
    by_name = app.enqueue("t", {"n": 206}, delay=60)
    returned = [single, unique, in_transaction, *few, *copied, by_name]
    for job_id in returned:
        assert isinstance(job_id, JobId) and isinstance(job_id, int) and job_id.created
        assert isinstance(job_id.uid, uuid.UUID) and job_id.uid.version == 8
        assert job_id.uid.int & (1 << 63) - 1 == job_id  # made from the id, the COPY's too
    stored = dict(rows(conn, "SELECT id, uid FROM pgqueue.job"))
    assert stored == {int(job_id): job_id.uid for job_id in returned}
    assert len(set(stored.values())) == len(returned)
    # Time-ordered: a later enqueue's uid never sorts before an earlier one's millisecond.
    assert copied[0].uid.int >> 80 >= single.uid.int >> 80
    # Still the plain id everywhere an int goes.
    assert json.dumps([single]) == f"[{int(single)}]" and f"{single}" == str(int(single))
    again = pickle.loads(pickle.dumps(single))
    assert again == single and again.uid == single.uid and type(again) is JobId


def test_every_statement_that_inserts_jobs_gives_each_row_the_uid_of_its_own_id(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    """Each statement draws its rows' ids and makes their uids from them, row by row in those
    that insert many; an insert that gives neither gets them from the table's trigger."""

    @app.task("t")
    def t(n: int) -> None: ...

    returned = [
        t.using(debounce=60, unique_key="d").enqueue(n=0),  # gives its id: nextval in a CTE
        t.using(unique_for=60, unique_key="th").enqueue(n=1),  # likewise, and a job_key row
        t.using(unique_key="plain").enqueue(n=2),
        *t.using(dead_letter="dlq").enqueue_many([{"n": n} for n in range(3, 7)]),  # lifecycle: ids in a CTE
        *t.using(dead_letter="dlq").enqueue_many([{"n": n} for n in range(7, 207)]),  # no COPY for these
    ]
    returned += t.using(depends_on=[returned[2], returned[3]]).enqueue_many([{"n": 207}, {"n": 208}])
    assert all(job_id is not None for job_id in returned)
    app.subscribe("ev", "t")
    returned += app.publish("ev", {"n": 209})
    by_hand = rows(
        conn,
        "INSERT INTO pgqueue.job (type, queue, data) SELECT 't', 'q', '{}' FROM generate_series(1, 5) "
        "RETURNING id, uid",
    )
    by_hand += rows(
        conn,
        "INSERT INTO pgqueue.job (type, queue, data) VALUES ('t', 'q', '{}'), ('t', 'q', '{}') "
        "RETURNING id, uid",
    )
    # A job that fails for good with a dead-letter queue leaves a copy there (inserted by a trigger).
    conn.execute("UPDATE pgqueue.job SET state = 'failed', finished_at = now() WHERE id = %s", (returned[3],))
    [(copy_id,)] = rows(conn, "SELECT id FROM pgqueue.job WHERE origin_id = %s", returned[3])
    stored = dict(rows(conn, "SELECT id, uid FROM pgqueue.job"))
    assert len(stored) == len(returned) + len(by_hand) + 1 == 218
    assert {int(job_id): job_id.uid for job_id in returned}.items() <= stored.items()
    assert dict(by_hand).items() <= stored.items() and copy_id in stored
    for job_id, uid in stored.items():
        assert uid.version == 8 and uid.int & (1 << 63) - 1 == job_id, (job_id, uid)
    assert len(set(stored.values())) == len(stored)


def test_pgqueues_own_inserts_give_the_uid_and_never_call_the_trigger(app: pgqueue.App, dsn: str) -> None:
    """The job_uid trigger (a PL/pgSQL call per row) is there for inserts that give no uid; every
    statement of pgqueue's gives one. Counted by PostgreSQL's function statistics, in the
    transaction that runs them."""

    @app.task("t")
    def t(n: int) -> None: ...

    calls = "SELECT pg_stat_get_xact_function_calls('pgqueue.set_job_uid'::regproc)"
    with psycopg.connect(dsn) as caller, caller.transaction():
        caller.execute("SET LOCAL track_functions = 'pl'")
        t.enqueue(conn=caller, n=0)
        t.using(unique_key="u").enqueue(conn=caller, n=1)
        t.enqueue_many([{"n": n} for n in range(2, 5)], conn=caller)
        t.using(dead_letter="dlq").enqueue_many([{"n": 5}, {"n": 6}], conn=caller)
        t.using(debounce=60, unique_key="d").enqueue(conn=caller, n=7)
        t.using(unique_for=60, unique_key="th").enqueue(conn=caller, n=8)
        app.subscribe("ev", "t", conn=caller)
        assert len(app.publish("ev", {"n": 9}, conn=caller)) == 1
        assert caller.execute(calls).fetchone() in ((0,), (None,))
        caller.execute("INSERT INTO pgqueue.job (type, queue, data) VALUES ('t', 'q', '{}')")
        assert caller.execute(calls).fetchone() == (1,)  # counted when it is called


def test_jobs_inserted_by_hand_and_by_schedules_get_a_uid_too(conn: psycopg.Connection[Any]) -> None:
    conn.execute("INSERT INTO pgqueue.job (type, queue, data) VALUES ('t', 'default', '{}')")
    run(conn, save_schedules("pgqueue", [Spec.build("every-second", "t", every=1)]))
    template = JobTemplate(type="t", queue="default", priority=0, max_attempts=1)
    tick = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
    [tick_job] = run(conn, enqueue_ticks("pgqueue", "every-second", template, "{}", [tick]))
    assert isinstance(tick_job, JobId)
    stored = rows(conn, "SELECT id, uid FROM pgqueue.job ORDER BY id")
    assert len(stored) == 2 and stored[1][1] == tick_job.uid
    assert all(uid.version == 8 and uid.int & (1 << 63) - 1 == job_id for job_id, uid in stored)


def test_look_ups_and_actions_take_the_uid(app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any]) -> None:
    waiting = app.enqueue("t", {"n": 1})
    other = app.enqueue("t", {"n": 2})
    for ref in (waiting.uid, str(waiting.uid), str(waiting.uid).upper(), waiting.uid.hex, waiting):
        job = app.get_job(ref)
        assert job.id == waiting and job.uid == waiting.uid and job.data == {"n": 1}
    with psycopg.connect(dsn) as caller:
        assert app.get_job(str(other.uid), conn=caller).id == other
    assert app.cancel_job(str(waiting.uid)) is True
    assert app.get_job(waiting).state is pgqueue.JobState.CANCELLED
    assert app.get_job(other).state is pgqueue.JobState.CREATED  # only the named job
    assert app.retry_job(waiting.uid) is True
    assert app.delete_job(str(other.uid)) is True
    unknown = uuid.uuid4()
    for call in (app.get_job, app.cancel_job, app.retry_job):
        with pytest.raises(JobNotFound, match=str(unknown)):
            call(unknown)
    with psycopg.connect(dsn) as caller:  # a malformed reference never reaches the caller's transaction
        for bad in ("not-a-uuid", "12", b"x"):
            with pytest.raises(JobNotFound):
                app.get_job(bad, conn=caller)
        assert caller.execute("SELECT count(*) FROM pgqueue.job").fetchone() == (1,)


async def test_the_handler_sees_its_uid_and_waiters_take_it(app: pgqueue.App) -> None:
    seen: list[Any] = []

    @app.task("t")
    async def t() -> str:
        seen.append(pgqueue.current_job().uid)
        return str(pgqueue.current_job().uid)

    job_id = await t.aenqueue()
    await app.adrain()
    assert seen == [job_id.uid]
    assert await app.await_result(str(job_id.uid), timeout=10) == str(job_id.uid)
    assert app.wait_for(job_id.uid, timeout=10) == str(job_id.uid)


# --- unique_for: throttle, and the idempotency key that outlives the job -------------------


def test_a_thousand_concurrent_enqueues_of_one_key_make_one_job(
    keyed_app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    call = keyed_app.task("t")(lambda n: None).using(unique_key="order-7", unique_for=300)
    with ThreadPoolExecutor(THREADS) as pool:
        returned = list(pool.map(lambda n: call.enqueue(n=n), range(ENQUEUES)))
    assert rows(conn, "SELECT count(*) FROM pgqueue.job") == [(1,)]
    [(job_id, uid, data)] = rows(conn, "SELECT id, uid, data FROM pgqueue.job")
    assert {(int(r), r.uid) for r in returned} == {(job_id, uid)}
    assert sum(r.created for r in returned) == 1
    assert data == {"n": next(n for n, r in enumerate(returned) if r.created)}  # the first one's data
    assert rows(conn, "SELECT key, job_id, job_uid FROM pgqueue.job_key") == [("order-7", job_id, uid)]


def test_the_key_commits_and_rolls_back_with_the_callers_transaction(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(dsn) as caller, caller.transaction():
        first = app.enqueue("t", {"n": 1}, conn=caller, unique_key="k", unique_for=60)
        assert first.created
    # A rolled-back enqueue leaves neither the job nor the key.
    with psycopg.connect(dsn) as caller:
        try:
            with caller.transaction():
                rolled_back = app.enqueue("t", {"n": 2}, conn=caller, unique_key="r", unique_for=60)
                raise RuntimeError("the request failed")
        except RuntimeError:
            pass
    assert rows(conn, "SELECT count(*) FROM pgqueue.job_key WHERE key = 'r'") == [(0,)]
    retried = app.enqueue("t", {"n": 3}, unique_key="r", unique_for=60)
    assert retried.created and retried != rolled_back
    assert app.enqueue("t", {"n": 4}, unique_key="k", unique_for=60) == first

    # A second enqueuer waits for the first's transaction: it gets the job if that commits...
    for outcome in ("commit", "rollback"):
        key = f"held-{outcome}"
        results: list[JobId] = []
        with psycopg.connect(dsn) as holder:
            holder.execute("SELECT 1")
            held = app.enqueue("t", {"n": 5}, conn=holder, unique_key=key, unique_for=60)
            waiter = threading.Thread(
                target=lambda: results.append(app.enqueue("t", {"n": 6}, unique_key=key, unique_for=60))
            )
            waiter.start()
            waiter.join(0.5)
            assert waiter.is_alive() and not results  # blocked on the key's row
            holder.commit() if outcome == "commit" else holder.rollback()
            waiter.join(10)
        [got] = results
        if outcome == "commit":  # ... and a job of its own if it rolls back
            assert got == held and not got.created and got.uid == held.uid
        else:
            assert got.created and got != held
            assert app.get_job(got).data == {"n": 6}


def test_unique_for_refuses_within_the_window_after_the_job_finished_and_accepts_after(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    @app.task("t")
    def t(n: int) -> int:
        return n

    first = t.using(unique_key="k", unique_for=3600).enqueue(n=1)
    assert app.drain()["completed"] == 1
    app.delete_job(first)  # finished and even gone: the key still holds
    duplicate = t.using(unique_key="k", unique_for=3600).enqueue(n=2)
    assert duplicate == first and not duplicate.created and duplicate.uid == first.uid
    assert rows(conn, "SELECT count(*) FROM pgqueue.job") == [(0,)]
    # The window ends by the database's clock.
    conn.execute("UPDATE pgqueue.job_key SET expires_at = now() - interval '1 second'")
    after = t.using(unique_key="k", unique_for=3600).enqueue(n=3)
    assert after.created and after != first and after.uid != first.uid
    assert app.get_job(after).data == {"n": 3}
    assert t.using(unique_key="k", unique_for=3600).enqueue(n=4) == after
    [(expires_in,)] = rows(conn, "SELECT extract(epoch FROM expires_at - now()) FROM pgqueue.job_key")
    assert 3500 < expires_in <= 3600


def test_expired_keys_are_pruned_and_live_ones_kept(app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    for n in range(5):
        app.enqueue("t", {}, unique_key=f"old-{n}", unique_for=60)
    app.enqueue("t", {}, unique_key="live", unique_for=60)
    conn.execute("UPDATE pgqueue.job_key SET expires_at = now() - interval '1 second' WHERE key LIKE 'old-%'")
    deleted = conn.execute(queries("pgqueue").prune_keys, {"batch": 3}).rowcount
    assert deleted == 3
    conn.execute(queries("pgqueue").prune_keys, {"batch": 3})
    assert rows(conn, "SELECT key FROM pgqueue.job_key") == [("live",)]


# --- debounce ------------------------------------------------------------------------------


def test_a_thousand_concurrent_debounced_enqueues_leave_one_job_with_the_last_data(
    keyed_app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("CREATE SEQUENCE commit_order")
    call = keyed_app.task("t")(lambda n: None).using(unique_key="doc-1", debounce=60)
    order: dict[int, tuple[int, datetime]] = {}
    lock = threading.Lock()

    def enqueue_some(thread: int) -> list[JobId | None]:
        returned = []
        with psycopg.connect(dsn) as caller:
            for i in range(ENQUEUES // THREADS):
                n = thread * 1000 + i
                with caller.transaction():
                    returned.append(call.enqueue(conn=caller, n=n))
                    # Taken while the enqueue's lock on the key is held: commit order.
                    seq, now = caller.execute("SELECT nextval('commit_order'), now()").fetchone()  # type: ignore[misc]
                with lock:
                    order[n] = (seq, now)
        return returned

    with ThreadPoolExecutor(THREADS) as pool:
        returned = [r for batch in pool.map(enqueue_some, range(THREADS)) for r in batch]
    assert len(returned) == ENQUEUES
    [(job_id, data, run_at)] = rows(conn, "SELECT id, data, run_at FROM pgqueue.job")
    assert {int(r) for r in returned if r is not None} == {job_id}
    assert sum(bool(r and r.created) for r in returned) == 1
    last = max(order, key=lambda n: order[n][0])
    assert data == {"n": last}
    assert run_at == order[last][1] + timedelta(seconds=60)  # pushed by the last enqueue


def test_a_debounced_job_already_running_is_left_alone_and_a_new_one_follows(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    first = app.enqueue("t", {"n": 1}, unique_key="k", debounce=30)
    replaced = app.enqueue("t", {"n": 2}, unique_key="k", debounce=30)
    assert replaced == first and not replaced.created
    conn.execute(
        "UPDATE pgqueue.job SET state = 'active', attempts = 1, lease_id = gen_random_uuid(), "
        "lease_expires_at = now() + interval '1 minute' WHERE id = %s",
        (first,),
    )
    follow = app.enqueue("t", {"n": 3}, unique_key="k", debounce=30)
    assert follow.created and follow != first
    assert app.get_job(first).data == {"n": 2}  # the running job's data is not changed
    again = app.enqueue("t", {"n": 4}, unique_key="k", debounce=30)
    assert again == follow and app.get_job(follow).data == {"n": 4}
    assert app.get_job(follow).debounce_key == "k" and app.get_job(follow).unique_key is None
    # Another key, or a plain enqueue, is untouched by it.
    assert app.enqueue("t", {"n": 5}, unique_key="other", debounce=30) not in (first, follow)


def test_a_debounced_enqueue_follows_the_callers_transaction(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    first = app.enqueue("t", {"n": 1}, unique_key="k", debounce=30)
    [(run_at,)] = rows(conn, "SELECT run_at FROM pgqueue.job")
    with psycopg.connect(dsn) as caller:
        with caller.transaction(force_rollback=True):
            assert app.enqueue("t", {"n": 2}, conn=caller, unique_key="k", debounce=300) == first
            assert app.get_job(first).data == {"n": 1}  # not visible before commit
        assert rows(conn, "SELECT data, run_at FROM pgqueue.job") == [({"n": 1}, run_at)]
        with caller.transaction():
            app.enqueue("t", {"n": 3}, conn=caller, unique_key="k", debounce=300)
    [(data, pushed)] = rows(conn, "SELECT data, run_at FROM pgqueue.job")
    assert data == {"n": 3} and pushed > run_at + timedelta(seconds=200)


def test_keyed_jobs_in_bulk_keep_their_order_beside_copied_ones(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    items: list[Any] = [("t", {"n": n}) for n in range(100)]
    items.insert(10, ("t", {"n": "a"}, {"unique_key": "d", "debounce": 30}))
    items.insert(50, ("t", {"n": "b"}, {"unique_key": "d", "debounce": 30}))
    items.insert(70, ("t", {"n": "c"}, {"unique_key": "u", "unique_for": 30}))
    items.insert(80, ("t", {"n": "d"}, {"unique_key": "u", "unique_for": 30}))
    returned = app.enqueue_many(items)
    assert returned[10] == returned[50] and returned[70] == returned[80]
    assert returned[10].created and not returned[50].created  # type: ignore[union-attr]
    assert app.get_job(returned[10]).data == {"n": "b"} and app.get_job(returned[70]).data == {"n": "c"}
    for n, item in enumerate(items):
        job = app.get_job(returned[n])
        assert job.uid == returned[n].uid  # type: ignore[union-attr]
        if len(item) == 2:
            assert job.data == item[1]
    assert rows(conn, "SELECT count(*) FROM pgqueue.job") == [(102,)]


async def test_async_enqueues_take_keys_too(app: pgqueue.App) -> None:
    first = await app.aenqueue("t", {"n": 1}, unique_key="k", unique_for=60)
    assert await app.aenqueue("t", {"n": 2}, unique_key="k", unique_for=60) == first
    debounced = await app.aenqueue("t", {"n": 1}, unique_key="d", debounce=60)
    assert (await app.aenqueue_many([("t", {"n": 2}, {"unique_key": "d", "debounce": 60})])) == [debounced]
    assert (await app.aget_job(debounced.uid)).data == {"n": 2}


# --- options and validation ----------------------------------------------------------------


def test_task_defaults_apply_to_enqueues_that_give_a_key(app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    @app.task("throttled", unique_for=600)
    def throttled(n: int) -> None: ...

    @app.task("debounced", debounce=600)
    def debounced(n: int) -> None: ...

    first = throttled.using(unique_key="k").enqueue(n=1)
    assert throttled.using(unique_key="k").enqueue(n=2) == first
    assert throttled.enqueue(n=3) != throttled.enqueue(n=4)  # no key: no window
    d = debounced.using(unique_key="k").enqueue(n=1)
    assert debounced.using(unique_key="k").enqueue(n=2) == d
    [(run_at_in,)] = rows(conn, "SELECT extract(epoch FROM run_at - now()) FROM pgqueue.job WHERE id = %s", d)
    assert 590 < run_at_in <= 600
    # The call's own window wins over the task's.
    call = throttled.using(unique_key="short", unique_for=1)
    call.enqueue(n=5)
    [(expires_in,)] = rows(conn, "SELECT extract(epoch FROM expires_at - now()) FROM pgqueue.job_key WHERE key = 'short'")
    assert 0 < expires_in <= 1


BAD_OPTIONS: list[dict[str, Any]] = [
    {"unique_key": "k", "unique_for": 0},
    {"unique_key": "k", "unique_for": -1},
    {"unique_key": "k", "unique_for": "60"},
    {"unique_key": "k", "unique_for": float("nan")},
    {"unique_key": "k", "unique_for": True},
    {"unique_key": "k", "debounce": 0},
    {"unique_key": "k", "debounce": -5},
    {"unique_key": "k", "debounce": None, "unique_for": [1]},
    {"unique_for": 60},
    {"debounce": 60},
    {"unique_key": "k", "unique_for": 60, "debounce": 5},
    {"unique_key": "k", "debounce": 5, "delay": 10},
    {"unique_key": "k", "debounce": 5, "run_at": datetime.now(timezone.utc)},
]


@pytest.mark.parametrize("options", BAD_OPTIONS, ids=lambda o: ",".join(f"{k}={v!r}" for k, v in o.items()))
def test_bad_windows_are_refused_before_anything_is_written(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any], options: dict[str, Any]
) -> None:
    @app.task("t")
    def t() -> None: ...

    attempts: list[Callable[[], Any]] = [
        lambda: app.enqueue("t", {}, **options),
        lambda: app.enqueue_many([("t", {}), ("t", {}, options)]),
        lambda: t.using(**options).enqueue(),
    ]
    with psycopg.connect(dsn) as caller:
        attempts.append(lambda: t.using(**options).enqueue(conn=caller))
        for attempt in attempts:
            with pytest.raises(InvalidJob):
                attempt()
        assert caller.execute("SELECT count(*) FROM pgqueue.job").fetchone() == (0,)  # still usable
    assert rows(conn, "SELECT count(*) FROM pgqueue.job_key") == [(0,)]


def test_bad_task_defaults_are_refused_at_registration(app: pgqueue.App) -> None:
    for options in ({"unique_for": 0}, {"debounce": -1}, {"unique_for": "x"}):
        with pytest.raises(InvalidJob):
            app.task("t", **options)


def test_bad_data_of_a_keyed_job_in_a_batch_writes_nothing(app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    items: list[Any] = [("t", {"n": n}) for n in range(100)]  # COPY on the App's pool
    items.append(("t", {"n": object()}, {"unique_key": "k", "debounce": 5}))
    with pytest.raises(InvalidJob):
        app.enqueue_many(items)
    assert rows(conn, "SELECT count(*) FROM pgqueue.job") == [(0,)]


def test_keyed_enqueues_keep_their_concurrency_key(app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    @app.task("per-tenant", key_concurrency=1)
    def per_tenant(n: int) -> None: ...

    throttled = per_tenant.using(unique_key="a", unique_for=60, concurrency_key="tenant-1").enqueue(n=1)
    debounced = per_tenant.using(unique_key="b", debounce=60, concurrency_key="tenant-2").enqueue(n=2)
    assert throttled is not None and debounced is not None
    got = dict(rows(conn, "SELECT id, concurrency_key FROM pgqueue.job WHERE id = ANY(%s)", [throttled, debounced]))
    assert got == {throttled: "tenant-1", debounced: "tenant-2"}
