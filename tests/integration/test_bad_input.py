"""Bad input is refused with InvalidJob before anything is written; the caller's transaction stays usable."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import pgqueue
from pgqueue import ConfigurationError, InvalidJob, PayloadTooLarge

Enqueue = Callable[[pgqueue.App, psycopg.Connection[Any]], Any]


def _circular_dict() -> dict[str, Any]:
    data: dict[str, Any] = {}
    data["self"] = data
    return data


def _circular_list() -> dict[str, Any]:
    items: list[Any] = []
    items.append({"back": items})
    return {"items": items}


def _nested(depth: int) -> dict[str, Any]:
    data: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        data = {"x": data}
    return data


BAD_DATA: dict[str, Any] = {
    "set": {"s": {1, 2}},
    "frozenset": {"s": frozenset()},
    "bytes": {"b": b"\x00\x01"},
    "datetime": {"when": datetime(2030, 1, 1, tzinfo=timezone.utc)},
    "decimal": {"d": Decimal("1.10")},
    "object": {"o": object()},
    "nan": {"x": math.nan},
    "infinity": {"x": math.inf},
    "-infinity": {"x": [-math.inf]},
    "circular dict": _circular_dict(),
    "circular list": _circular_list(),
    "int key": {1: "one"},
    "nested non-str key": {"a": {None: 1}},
    "nul in value": {"v": "a\x00b"},
    "nul in key": {"a\x00b": 1},
    "lone surrogate in value": {"v": "\ud83d"},
    "lone surrogate in key": {"\udc00": 1},
    "nesting deeper than 100": _nested(101),
    "list data": [1, 2],
    "str data": "user_id=1",
    "int data": 42,
}

BAD_NAMES: dict[str, Any] = {
    "empty": "",
    "129 characters": "n" * 129,
    "control character": "emails\x07",
    "newline": "emails\nother",
    "leading space": " emails",
    "trailing space": "emails ",
    "nul": "em\x00ails",
    "lone surrogate": "em\udfffails",
    "int": 7,
    "bytes": b"emails",
    "none": None,
}

NAIVE = datetime(2030, 1, 1, 12, 0)
AWARE = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)

BAD_OPTIONS: dict[str, dict[str, Any]] = {
    "negative delay": {"delay": -1},
    "negative timedelta": {"delay": timedelta(seconds=-5)},
    "nan delay": {"delay": math.nan},
    "delay and run_at": {"delay": 5, "run_at": AWARE},
    "naive run_at": {"run_at": NAIVE},
    "string run_at": {"run_at": "2030-01-01T12:00:00Z"},
    "bool priority": {"priority": True},
    "float priority": {"priority": 1.0},
    "huge priority": {"priority": 2**40},
    "max_attempts 0": {"max_attempts": 0},
    "bool max_attempts": {"max_attempts": True},
    "zero timeout": {"timeout": 0},
    "empty unique_key": {"unique_key": ""},
    "unknown option": {"priorty": 1},
    "unknown option with known ones": {"queue": "q", "retries": 3},
    "bad queue": {"queue": " q"},
}


@pytest.fixture(scope="module")
def module_app(module_dsn: str) -> Iterator[pgqueue.App]:
    with pgqueue.App(module_dsn) as application:
        yield application


@pytest.fixture
def caller(module_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """The caller's connection, with a table of its own for business rows."""
    with psycopg.connect(module_dsn) as connection:
        connection.execute("CREATE TEMP TABLE orders (id int)")
        connection.commit()
        yield connection
        connection.rollback()  # a failed test must not commit what it left behind into the shared database


def assert_refused_and_usable(
    app: pgqueue.App, caller: psycopg.Connection[Any], enqueue: Enqueue, error: type[Exception] = InvalidJob
) -> None:
    """``enqueue`` raises ``error``; the transaction goes on, commits, and no job was written."""
    caller.execute("DELETE FROM orders")
    caller.execute("INSERT INTO orders VALUES (1)")
    jobs_before = caller.execute("SELECT count(*) FROM pgqueue.job").fetchone()
    with pytest.raises(error):
        enqueue(app, caller)
    assert caller.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    caller.execute("INSERT INTO orders VALUES (2)")
    assert caller.execute("SELECT array_agg(id ORDER BY id) FROM orders").fetchone() == ([1, 2],)
    assert caller.execute("SELECT count(*) FROM pgqueue.job").fetchone() == jobs_before
    caller.commit()
    with psycopg.connect(caller.info.dsn, autocommit=True) as other:
        assert other.execute("SELECT count(*) FROM pgqueue.job").fetchone() == (0,)


# --- data --------------------------------------------------------------------------------


@pytest.mark.parametrize("data", BAD_DATA.values(), ids=BAD_DATA.keys())
def test_bad_data_is_refused(module_app: pgqueue.App, caller: psycopg.Connection[Any], data: Any) -> None:
    assert_refused_and_usable(module_app, caller, lambda app, conn: app.enqueue("t", data, conn=conn))


@pytest.mark.parametrize(
    "data",
    [v for v in BAD_DATA.values() if isinstance(v, dict) and all(isinstance(k, str) for k in v)],
)
def test_bad_data_through_a_task_is_refused(
    module_app: pgqueue.App, caller: psycopg.Connection[Any], data: dict[str, Any]
) -> None:
    task = module_app.tasks.get("bad-data") or module_app.task("bad-data")(lambda **kwargs: None)
    assert_refused_and_usable(module_app, caller, lambda app, conn: task.enqueue(conn=conn, **data))


def test_one_bad_item_refuses_the_whole_batch(
    module_app: pgqueue.App, caller: psycopg.Connection[Any]
) -> None:
    items: list[Any] = [("t", {"i": i}) for i in range(5000)]
    items.append(("t", {"i": math.nan}))
    assert_refused_and_usable(module_app, caller, lambda app, conn: app.enqueue_many(items, conn=conn))


def test_payload_over_the_limit(module_dsn: str, caller: psycopg.Connection[Any]) -> None:
    with pgqueue.App(module_dsn, max_payload_bytes=64) as small:
        small.enqueue("t", {"x": "a" * 50}, conn=caller)  # 58 bytes as JSON: fits
        caller.rollback()
        assert_refused_and_usable(
            small, caller, lambda app, conn: app.enqueue("t", {"x": "a" * 60}, conn=conn), PayloadTooLarge
        )


def test_default_payload_limit_is_one_mebibyte(
    module_app: pgqueue.App, caller: psycopg.Connection[Any]
) -> None:
    assert module_app.max_payload_bytes == 1024 * 1024
    assert_refused_and_usable(
        module_app,
        caller,
        lambda app, conn: app.enqueue("t", {"x": "a" * (1024 * 1024)}, conn=conn),
        PayloadTooLarge,
    )


@pytest.mark.parametrize("limit", [0, 1, -5, 1.5, "big", None])
def test_payload_limit_must_be_a_size(module_dsn: str, limit: Any) -> None:
    with pytest.raises(ConfigurationError):
        pgqueue.App(module_dsn, max_payload_bytes=limit)


# --- names -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_bad_type_names_are_refused(
    module_app: pgqueue.App, caller: psycopg.Connection[Any], name: Any
) -> None:
    assert_refused_and_usable(module_app, caller, lambda app, conn: app.enqueue(name, {}, conn=conn))
    assert_refused_and_usable(module_app, caller, lambda app, conn: app.enqueue_many([(name, {})], conn=conn))
    with pytest.raises(InvalidJob):
        module_app.task(name)


# queue=None means "not set here": the task's or the app's default queue applies.
BAD_QUEUES = {key: value for key, value in BAD_NAMES.items() if value is not None}


@pytest.mark.parametrize("name", BAD_QUEUES.values(), ids=BAD_QUEUES.keys())
def test_bad_queue_names_are_refused(
    module_app: pgqueue.App, caller: psycopg.Connection[Any], name: Any
) -> None:
    assert_refused_and_usable(
        module_app, caller, lambda app, conn: app.enqueue("t", {}, conn=conn, queue=name)
    )
    task = module_app.tasks.get("named") or module_app.task("named")(lambda: None)
    assert_refused_and_usable(module_app, caller, lambda app, conn: task.using(queue=name).enqueue(conn=conn))
    with pytest.raises(InvalidJob):
        module_app.task("queue-test", queue=name)


# --- options -----------------------------------------------------------------------------


@pytest.mark.parametrize("options", BAD_OPTIONS.values(), ids=BAD_OPTIONS.keys())
def test_bad_options_are_refused_everywhere(
    module_app: pgqueue.App, caller: psycopg.Connection[Any], options: dict[str, Any]
) -> None:
    task = module_app.tasks.get("opts") or module_app.task("opts")(lambda: None)
    assert_refused_and_usable(module_app, caller, lambda app, conn: task.using(**options).enqueue(conn=conn))
    assert_refused_and_usable(
        module_app, caller, lambda app, conn: app.enqueue("t", {}, conn=conn, **options)
    )
    assert_refused_and_usable(
        module_app, caller, lambda app, conn: app.enqueue_many([("t", {}), ("t", {}, options)], conn=conn)
    )


def test_delay_and_run_at_across_two_using_calls_is_fine(module_app: pgqueue.App) -> None:
    # Only one call giving both is an error; a later using() replaces an earlier one's time.
    task = module_app.tasks.get("opts") or module_app.task("opts")(lambda: None)
    assert task.using(delay=5).using(run_at=AWARE).options.delay is None


@pytest.mark.parametrize(
    "item",
    [
        ("t",),
        ("t", {}, {}, {}),
        {"type": "t", "data": {}},
        "t",
        None,
        ("t", {}, ["priority", 1]),
        ("t", {}, "priority=1"),
        ("t", {}, {1: 2}),
    ],
    ids=["1-tuple", "4-tuple", "dict", "str", "none", "list options", "str options", "int option name"],
)
def test_malformed_enqueue_many_items_are_refused(
    module_app: pgqueue.App, caller: psycopg.Connection[Any], item: Any
) -> None:
    assert_refused_and_usable(
        module_app, caller, lambda app, conn: app.enqueue_many([("t", {}), item], conn=conn)
    )


def test_task_enqueue_many_refuses_non_mappings(
    module_app: pgqueue.App, caller: psycopg.Connection[Any]
) -> None:
    task = module_app.tasks.get("many") or module_app.task("many")(lambda **kwargs: None)
    assert_refused_and_usable(
        module_app, caller, lambda app, conn: task.enqueue_many([{"a": 1}, [1]], conn=conn)
    )


async def test_async_bad_input_leaves_the_async_transaction_usable(module_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(module_dsn) as caller:
        app = pgqueue.App(module_dsn)
        try:
            await caller.execute("CREATE TEMP TABLE orders (id int)")
            await caller.execute("INSERT INTO orders VALUES (1)")
            with pytest.raises(InvalidJob):
                await app.aenqueue("t", {"x": {1, 2}}, conn=caller)
            with pytest.raises(InvalidJob):
                await app.aenqueue_many([("t", {}, {"delay": -1})], conn=caller)
            await caller.execute("INSERT INTO orders VALUES (2)")
            cur = await caller.execute("SELECT count(*) FROM orders")
            assert await cur.fetchone() == (2,)
            await caller.commit()
        finally:
            await app.aclose()
        cur = await caller.execute("SELECT count(*) FROM pgqueue.job")
        assert await cur.fetchone() == (0,)


# --- any data at all ---------------------------------------------------------------------

text = st.text(st.characters(exclude_characters="\x00"), max_size=12)
good_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
bad_scalars = st.text(st.characters(exclude_categories=()), min_size=1, max_size=4).filter(
    lambda s: "\x00" in s or any("\ud800" <= c <= "\udfff" for c in s)
) | st.sampled_from([math.nan, math.inf, {1, 2}, b"x", Decimal("1.5"), datetime(2030, 1, 1), object()])
# Mostly JSON, sometimes not: both outcomes of the property get explored.
scalars = st.integers(0, 9).flatmap(lambda n: bad_scalars if n == 0 else good_scalars)
keys = st.integers(0, 19).flatmap(lambda n: st.integers(0, 3) if n == 0 else text)
json_like = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(keys, children, max_size=4)
    ),
    max_leaves=12,
)


def normalized(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [normalized(item) for item in value]
    if isinstance(value, dict):
        return {key: normalized(item) for key, item in value.items()}
    return value


@settings(max_examples=50, deadline=None)
@given(data=st.dictionaries(keys, json_like, max_size=5))
def test_any_data_either_round_trips_or_is_refused_cleanly(
    module_app: pgqueue.App, module_dsn: str, data: dict[Any, Any]
) -> None:
    with psycopg.connect(module_dsn) as caller:
        caller.execute("SELECT 1")
        try:
            job_id = module_app.enqueue("t", data, conn=caller)
        except InvalidJob:
            event("refused")
            assert caller.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
            assert caller.execute("SELECT count(*) FROM pgqueue.job").fetchone() == (0,)
        else:
            event("stored")
            assert module_app.get_job(job_id, conn=caller).data == normalized(data)  # type: ignore[arg-type]
        caller.rollback()


@pytest.mark.parametrize(
    "bad", [{"x": {1, 2}}, {"x": "y" * 300}, [1]], ids=["not JSON", "too large", "not a mapping"]
)
def test_a_bad_item_deep_in_a_bulk_load_on_the_pool_writes_nothing(dsn: str, bad: Any) -> None:
    """On the App's pool a bulk load encodes each chunk while the COPY streams: a bad item
    found late must still abort the whole load, and leave the pool usable."""
    app = pgqueue.App(dsn, max_payload_bytes=200, notify=False)
    try:
        task = app.task("bulk")(lambda **kwargs: None)
        items: list[Any] = [{"n": n} for n in range(5000)]
        items[4321] = bad
        with pytest.raises(InvalidJob):
            task.enqueue_many(items)
        with pytest.raises(InvalidJob):
            app.enqueue_many([("bulk", item) for item in items])
        with psycopg.connect(dsn) as check:
            assert check.execute("SELECT count(*) FROM pgqueue.job").fetchone() == (0,)
        ids = task.enqueue_many([{"n": n} for n in range(100)])
        assert len(ids) == 100 and None not in ids
    finally:
        app.close()


async def test_a_bad_item_deep_in_an_async_bulk_load_on_the_pool_writes_nothing(dsn: str) -> None:
    app = pgqueue.App(dsn, notify=False)
    try:
        task = app.task("bulk")(lambda **kwargs: None)
        items: list[Any] = [{"n": n} for n in range(5000)]
        items[4999] = {"x": math.nan}
        with pytest.raises(InvalidJob):
            await task.aenqueue_many(items)
        async with await psycopg.AsyncConnection.connect(dsn) as check:
            cur = await check.execute("SELECT count(*) FROM pgqueue.job")
            assert await cur.fetchone() == (0,)
        assert len(await task.aenqueue_many([{"n": n} for n in range(100)])) == 100
    finally:
        await app.aclose()
