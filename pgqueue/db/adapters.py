"""Finding the psycopg connection inside what callers pass as ``conn=``.

Accepted: a psycopg ``Connection`` or ``AsyncConnection``; a SQLAlchemy ``Session``,
``Connection``, ``AsyncSession`` or ``AsyncConnection`` on the psycopg dialect; Django's
``django.db.connection`` (or any ``connections[alias]``) with the psycopg 3 backend.
The job is written on that very connection, so it joins the caller's open transaction.
SQLAlchemy and Django are never imported here: they are recognised by shape.
"""

from __future__ import annotations

from typing import Any, TypeVar

import psycopg

from ..errors import ConfigurationError

C = TypeVar("C", psycopg.Connection[Any], psycopg.AsyncConnection[Any])


def _from_sqlalchemy(conn: Any) -> Any:
    if hasattr(conn, "get_bind") and callable(getattr(conn, "connection", None)):  # Session
        conn = conn.connection()
    pooled = getattr(conn, "connection", None)  # Connection -> PoolProxiedConnection
    return getattr(pooled, "driver_connection", None)


def _from_django(conn: Any) -> Any:
    if getattr(conn, "vendor", None) != "postgresql":
        raise ConfigurationError(f"pgqueue needs a PostgreSQL database, not Django's {conn.vendor!r} backend")
    conn.ensure_connection()
    return conn.connection


def sync_connection(conn: Any) -> psycopg.Connection[Any]:
    """The psycopg Connection behind ``conn``, or a ConfigurationError saying what to pass instead."""
    if isinstance(conn, psycopg.Connection):
        return conn
    if isinstance(conn, psycopg.AsyncConnection):
        raise ConfigurationError(
            "an AsyncConnection was passed to a sync call: use aenqueue / the a* methods"
        )
    module = type(conn).__module__
    driver = None
    if module.startswith("sqlalchemy"):
        if "asyncio" in module:
            raise ConfigurationError("a SQLAlchemy async object was passed to a sync call: use aenqueue")
        driver = _from_sqlalchemy(conn)
    elif module.startswith("django"):
        driver = _from_django(conn)
    return _checked(conn, driver, psycopg.Connection)


async def async_connection(conn: Any) -> psycopg.AsyncConnection[Any]:
    """The psycopg AsyncConnection behind ``conn`` (an AsyncConnection or SQLAlchemy async object)."""
    if isinstance(conn, psycopg.AsyncConnection):
        return conn
    if isinstance(conn, psycopg.Connection):
        raise ConfigurationError(
            "a sync Connection was passed to an async call: use enqueue, or an AsyncConnection"
        )
    driver = None
    module = type(conn).__module__
    if module.startswith("sqlalchemy"):
        if "asyncio" not in module:
            raise ConfigurationError(
                "a SQLAlchemy sync Session or Connection was passed to an async call: use enqueue, "
                "or an AsyncSession / AsyncConnection"
            )
        if hasattr(conn, "get_bind"):  # AsyncSession
            conn = await conn.connection()
        if hasattr(conn, "get_raw_connection"):  # AsyncConnection (an AsyncEngine is not one)
            driver = (await conn.get_raw_connection()).driver_connection
    return _checked(conn, driver, psycopg.AsyncConnection)


def _checked(conn: Any, driver: Any, wanted: type[C]) -> C:
    if isinstance(driver, wanted):
        return driver
    if driver is not None:
        raise ConfigurationError(
            f"conn= runs on {type(driver).__module__}.{type(driver).__name__}; pgqueue needs psycopg 3 "
            "(SQLAlchemy: a postgresql+psycopg:// URL; Django: the psycopg 3 backend)"
        )
    raise ConfigurationError(
        f"conn= must be a psycopg connection, a SQLAlchemy Session/Connection or Django's connection, "
        f"not {type(conn).__module__}.{type(conn).__name__}"
    )
