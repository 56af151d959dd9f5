"""Throwaway databases for tests: one migrated template per session, a fresh copy per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from .. import migrate
from ..app import App
from ..config import normalize_url

__all__ = ["bound", "create_database", "drop_database", "with_database"]


def with_database(url: str, dbname: str) -> str:
    """``url`` with its database name replaced by ``dbname``."""
    return psycopg.conninfo.make_conninfo(normalize_url(url), dbname=dbname)


def _admin(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(normalize_url(url), autocommit=True)


def create_database(server_url: str, prefix: str, template: str | None = None) -> str:
    """Create a database named ``prefix`` + a random suffix (a copy of ``template`` if given);
    its name. The role in ``server_url`` needs the CREATEDB privilege."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(template))
    with _admin(server_url) as conn:
        conn.execute(statement)
    return name


def drop_database(server_url: str, name: str) -> None:
    """Drop the database, ending the sessions still connected to it."""
    with _admin(server_url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def migrated_template(server_url: str, schema: str) -> str:
    """Create a database with pgqueue's schema migrated into ``schema``; its name."""
    name = create_database(server_url, "pgqueue_template")
    try:
        migrate.upgrade(with_database(server_url, name), schema)
    except BaseException:
        drop_database(server_url, name)
        raise
    return name


def _close_async_pool(app: App) -> None:
    """Close the App's async pool if it is still open on a loop that can run its close."""
    apool = app._apool
    loop = apool._loop
    if apool._pool is None:
        return
    if loop is not None and not loop.is_closed() and not loop.is_running():
        loop.run_until_complete(apool.close())
    else:
        # Its loop is gone (the test's loop closed first): the pool cannot be closed from here.
        # Its connections end when the test database is dropped.
        apool._pool = None
        apool._loop = None


@contextmanager
def bound(app: App, database_url: str) -> Iterator[App]:
    """Point ``app`` (and so every task registered on it) at ``database_url`` for the block,
    then back at its own database. Its pools are closed on entry and exit."""
    saved = (app._database_url, app._resolved_url)
    app.close()
    _close_async_pool(app)
    app._database_url, app._resolved_url = database_url, None
    try:
        yield app
    finally:
        app.close()
        _close_async_pool(app)
        app._database_url, app._resolved_url = saved
