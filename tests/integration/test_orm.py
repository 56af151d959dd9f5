"""Enqueueing inside an ORM's transaction: SQLAlchemy (sync and async) and Django share the job's fate."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import pgqueue
from pgqueue import ConfigurationError


def sqlalchemy_url(dsn: str, driver: str = "postgresql+psycopg") -> URL:
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    return URL.create(
        driver,
        username=info.get("user"),  # type: ignore[arg-type]
        password=info.get("password"),  # type: ignore[arg-type]
        host=info.get("host"),  # type: ignore[arg-type]
        port=int(info["port"]) if info.get("port") else None,
        database=info.get("dbname"),  # type: ignore[arg-type]
    )


@pytest.fixture
def orders(conn: psycopg.Connection[Any]) -> Callable[[], list[tuple[int, list[int]]]]:
    """A business table, and ``orders()``: each order with the ids of the jobs whose data names it."""
    conn.execute("CREATE TABLE orders (id int PRIMARY KEY)")

    def read() -> list[tuple[int, list[int]]]:
        rows = conn.execute(
            "SELECT coalesce(o.id, (j.data->>'order_id')::int) AS order_id, "
            "       coalesce(array_agg(j.id ORDER BY j.id) FILTER (WHERE j.id IS NOT NULL), '{}') "
            "FROM orders AS o FULL JOIN pgqueue.job AS j ON (j.data->>'order_id')::int = o.id "
            "GROUP BY 1 ORDER BY 1"
        ).fetchall()
        return [(row[0], row[1]) for row in rows]

    return read


@pytest.fixture
def engine(dsn: str) -> Iterator[Engine]:
    engine = create_engine(sqlalchemy_url(dsn))
    yield engine
    engine.dispose()


@pytest.fixture
async def async_engine(dsn: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(sqlalchemy_url(dsn))
    yield engine
    await engine.dispose()


@pytest.fixture
def place_order(app: pgqueue.App) -> pgqueue.Task[Any]:
    @app.task("confirm-order", queue="orders")
    def confirm_order(order_id: int) -> None: ...

    return confirm_order


# --- SQLAlchemy, sync --------------------------------------------------------------------


def test_sqlalchemy_session(
    engine: Engine, place_order: pgqueue.Task[Any], orders: Callable[[], Any]
) -> None:
    with Session(engine) as session:
        session.execute(text("INSERT INTO orders VALUES (1)"))
        place_order.enqueue(conn=session, order_id=1)
        session.rollback()
        assert orders() == []

        session.execute(text("INSERT INTO orders VALUES (2)"))
        job_id = place_order.enqueue(conn=session, order_id=2)
        session.commit()
    assert orders() == [(2, [job_id])]


def test_sqlalchemy_session_begin_block(engine: Engine, app: pgqueue.App, orders: Callable[[], Any]) -> None:
    with pytest.raises(RuntimeError), Session(engine) as session, session.begin():
        session.execute(text("INSERT INTO orders VALUES (1)"))
        app.enqueue("confirm-order", {"order_id": 1}, conn=session)
        raise RuntimeError("the request failed")
    assert orders() == []
    with Session(engine) as session, session.begin():
        # The job goes first this time: it opens the session's transaction.
        job_id = app.enqueue("confirm-order", {"order_id": 3}, conn=session)
        session.execute(text("INSERT INTO orders VALUES (3)"))
    assert orders() == [(3, [job_id])]


def test_sqlalchemy_connection(engine: Engine, app: pgqueue.App, orders: Callable[[], Any]) -> None:
    with engine.connect() as connection:
        connection.execute(text("INSERT INTO orders VALUES (1)"))
        app.enqueue_many(
            [("confirm-order", {"order_id": 1}), ("confirm-order", {"order_id": 1})], conn=connection
        )
        connection.rollback()
        assert orders() == []
        connection.execute(text("INSERT INTO orders VALUES (2)"))
        ids = app.enqueue_many(
            [("confirm-order", {"order_id": 2}), ("confirm-order", {"order_id": 2})], conn=connection
        )
        connection.commit()
    assert orders() == [(2, ids)]
    with pytest.raises(RuntimeError), engine.begin() as connection:
        connection.execute(text("INSERT INTO orders VALUES (4)"))
        app.enqueue("confirm-order", {"order_id": 4}, conn=connection)
        raise RuntimeError("the request failed")
    assert orders() == [(2, ids)]


def test_sqlalchemy_savepoint_rolls_back_the_job_with_it(
    engine: Engine, app: pgqueue.App, orders: Callable[[], Any]
) -> None:
    with Session(engine) as session:
        session.execute(text("INSERT INTO orders VALUES (1)"))
        kept = app.enqueue("confirm-order", {"order_id": 1}, conn=session)
        nested = session.begin_nested()
        session.execute(text("INSERT INTO orders VALUES (2)"))
        app.enqueue("confirm-order", {"order_id": 2}, conn=session)
        nested.rollback()
        session.commit()
    assert orders() == [(1, [kept])]


# --- SQLAlchemy, async -------------------------------------------------------------------


async def test_sqlalchemy_async_session(
    async_engine: AsyncEngine, place_order: pgqueue.Task[Any], orders: Callable[[], Any]
) -> None:
    async with AsyncSession(async_engine) as session:
        await session.execute(text("INSERT INTO orders VALUES (1)"))
        await place_order.aenqueue(conn=session, order_id=1)
        await session.rollback()
        assert orders() == []

        await session.execute(text("INSERT INTO orders VALUES (2)"))
        job_id = await place_order.aenqueue(conn=session, order_id=2)
        await session.commit()
    assert orders() == [(2, [job_id])]


async def test_sqlalchemy_async_connection(
    async_engine: AsyncEngine, app: pgqueue.App, orders: Callable[[], Any]
) -> None:
    async with async_engine.connect() as connection:
        await connection.execute(text("INSERT INTO orders VALUES (1)"))
        await app.aenqueue("confirm-order", {"order_id": 1}, conn=connection)
        await connection.rollback()
        assert orders() == []
    with pytest.raises(RuntimeError):
        async with async_engine.begin() as connection:
            await connection.execute(text("INSERT INTO orders VALUES (2)"))
            await app.aenqueue("confirm-order", {"order_id": 2}, conn=connection)
            raise RuntimeError("the request failed")
    assert orders() == []
    async with async_engine.begin() as connection:
        await connection.execute(text("INSERT INTO orders VALUES (3)"))
        job_id = await app.aenqueue("confirm-order", {"order_id": 3}, conn=connection)
    assert orders() == [(3, [job_id])]


# --- what is not a connection ------------------------------------------------------------


@pytest.mark.parametrize(
    "thing", [object(), 42, "postgresql://localhost/app", {"conn": 1}], ids=["object", "int", "url", "dict"]
)
async def test_not_a_connection_is_a_configuration_error(app: pgqueue.App, thing: Any) -> None:
    with pytest.raises(ConfigurationError, match="conn="):
        app.enqueue("t", {}, conn=thing)
    with pytest.raises(ConfigurationError):
        await app.aenqueue("t", {}, conn=thing)


async def test_wrong_flavour_of_connection_is_a_configuration_error(
    app: pgqueue.App, dsn: str, engine: Engine, async_engine: AsyncEngine, conn: psycopg.Connection[Any]
) -> None:
    async with await psycopg.AsyncConnection.connect(dsn) as aconn:
        with pytest.raises(ConfigurationError, match="aenqueue"):
            app.enqueue("t", {}, conn=aconn)
        with pytest.raises(ConfigurationError):
            app.enqueue_many([("t", {})], conn=aconn)
    with psycopg.connect(dsn) as sync_conn, pytest.raises(ConfigurationError):
        await app.aenqueue("t", {}, conn=sync_conn)
    async with AsyncSession(async_engine) as session:
        with pytest.raises(ConfigurationError, match="aenqueue"):
            app.enqueue("t", {}, conn=session)
    async with async_engine.connect() as aconnection:
        with pytest.raises(ConfigurationError):
            app.enqueue("t", {}, conn=aconnection)
    with Session(engine) as session, pytest.raises(ConfigurationError):
        await app.aenqueue("t", {}, conn=session)
    with engine.connect() as connection, pytest.raises(ConfigurationError):
        await app.aenqueue("t", {}, conn=connection)
    for thing in (engine, async_engine, conn.cursor()):
        with pytest.raises(ConfigurationError):
            app.enqueue("t", {}, conn=thing)
    assert conn.execute("SELECT count(*) FROM pgqueue.job").fetchone() == (0,)


# --- Django ------------------------------------------------------------------------------

# Django is configured once per process, so it runs in a child process of its own.
DJANGO_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import django
    from django.conf import settings

    dsn, = sys.argv[1:]
    import psycopg
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    settings.configure(
        DATABASES={"default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": info["dbname"], "USER": info.get("user", ""), "PASSWORD": info.get("password", ""),
            "HOST": info.get("host", ""), "PORT": info.get("port", ""),
        }},
        INSTALLED_APPS=[], USE_TZ=True,
    )
    django.setup()
    from django.db import connection, connections, transaction
    import pgqueue

    app = pgqueue.App(dsn)
    result = {}

    def insert(order_id):
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO orders VALUES (%s)", [order_id])

    try:
        with transaction.atomic():
            insert(1)
            app.enqueue("confirm-order", {"order_id": 1}, conn=connection)
            raise RuntimeError("the request failed")
    except RuntimeError:
        pass

    with transaction.atomic():
        insert(2)
        result["committed"] = app.enqueue("confirm-order", {"order_id": 2}, conn=connection)

    with transaction.atomic():
        insert(3)
        result["outer"] = app.enqueue("confirm-order", {"order_id": 3}, conn=connections["default"])
        try:
            with transaction.atomic():
                insert(4)
                app.enqueue("confirm-order", {"order_id": 4}, conn=connection)
                raise RuntimeError("the inner block failed")
        except RuntimeError:
            pass

    # Outside atomic() Django is in autocommit: the job is there at once.
    result["autocommit"] = app.enqueue("confirm-order", {"order_id": 5}, conn=connection)
    insert(5)
    result["driver"] = type(connection.connection).__module__
    app.close()
    connection.close()
    print(json.dumps(result))
    """
)


@pytest.mark.timeout(60)
def test_django_atomic(dsn: str, orders: Callable[[], Any]) -> None:
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", DJANGO_SCRIPT, dsn],
        check=False,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["driver"].startswith("psycopg")
    assert orders() == [(2, [result["committed"]]), (3, [result["outer"]]), (5, [result["autocommit"]])]
