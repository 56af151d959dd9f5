"""The pytest plugin (entry point ``pytest11``): fixtures to test pgqueue handlers against a real
PostgreSQL, each test in a fresh database.

Settings, in ``pytest.ini``/``pyproject.toml`` (``[tool.pytest.ini_options]``) or the environment:

- ``pgqueue_app = myproject.tasks:app``: the App whose tasks the tests run. ``pgqueue_app`` is
  then that App, pointed at the test's database (every task registered on it enqueues there).
  Without it, ``pgqueue_app`` is a new, empty App (register tasks on it in the test).
- ``PGQUEUE_TEST_DATABASE_URL`` (or the ini setting ``pgqueue_test_database_url``): the server
  to create test databases on, as a role with CREATEDB; without it, the embedded server.

A template database is migrated once per session; each test gets a copy, dropped after it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..app import App
from ..embedded import embedded_database_url
from ..settings import embedded_pgdata, resolve_schema, testing_server_url
from .clock import Clock
from .database import bound, create_database, drop_database, migrated_template, with_database

SERVER_ENV = "PGQUEUE_TEST_DATABASE_URL"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("pgqueue_app", "MODULE:APP of the pgqueue App the tests run (pgqueue_app fixture)")
    parser.addini(
        "pgqueue_test_database_url",
        f"PostgreSQL server for pgqueue's test databases (${SERVER_ENV} wins); default: the embedded server",
    )


def _configured_app(config: pytest.Config) -> App | None:
    target = str(config.getini("pgqueue_app") or "").strip()
    if not target:
        return None
    from ..cli.work import load_app

    return load_app(target)


@pytest.fixture(scope="session")
def pgqueue_server_url(pytestconfig: pytest.Config) -> str:
    """The PostgreSQL server test databases are made on: ``$PGQUEUE_TEST_DATABASE_URL``, the
    ini setting ``pgqueue_test_database_url``, else the embedded server."""
    url = testing_server_url() or str(pytestconfig.getini("pgqueue_test_database_url") or "")
    return url or embedded_database_url(embedded_pgdata())


@pytest.fixture(scope="session")
def pgqueue_schema(pytestconfig: pytest.Config) -> str:
    """The schema pgqueue's tables live in: the configured App's, else ``$PGQUEUE_SCHEMA`` or ``pgqueue``."""
    app = _configured_app(pytestconfig)
    return app.schema if app is not None else resolve_schema(None)


@pytest.fixture(scope="session")
def pgqueue_template_database(pgqueue_server_url: str, pgqueue_schema: str) -> Iterator[str]:
    """The name of a database migrated once per session: the template of each test's database."""
    name = migrated_template(pgqueue_server_url, pgqueue_schema)
    yield name
    drop_database(pgqueue_server_url, name)


@pytest.fixture
def pgqueue_database_url(pgqueue_server_url: str, pgqueue_template_database: str) -> Iterator[str]:
    """The URL of a fresh database with pgqueue's schema migrated, dropped after the test."""
    name = create_database(pgqueue_server_url, "pgqueue_test", template=pgqueue_template_database)
    yield with_database(pgqueue_server_url, name)
    drop_database(pgqueue_server_url, name)


@pytest.fixture
def pgqueue_app(pytestconfig: pytest.Config, pgqueue_database_url: str, pgqueue_schema: str) -> Iterator[App]:
    """The App under test, bound to this test's database: the ``pgqueue_app`` ini setting's App
    (its tasks enqueue into the test's database during the test), else a new empty App.

    ``pgqueue_app.drain()`` (``await pgqueue_app.adrain()``) runs what was enqueued.
    """
    app = _configured_app(pytestconfig) or App(pgqueue_database_url, pgqueue_schema)
    with bound(app, pgqueue_database_url):
        yield app


@pytest.fixture
def pgqueue_clock(pgqueue_app: App) -> Clock:
    """Lets time pass for delayed jobs: ``pgqueue_clock.advance(seconds)`` (see :class:`Clock`)."""
    return Clock(pgqueue_app)
