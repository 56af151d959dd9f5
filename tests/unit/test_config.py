"""Database URL spellings, password redaction and where the database URL comes from."""

from __future__ import annotations

import pytest

from pgqueue import ConfigurationError
from pgqueue.config import normalize_url, redact, validate_schema
from pgqueue.settings import resolve_database_url, resolve_schema


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db:5432/app", "postgresql://u:p@db:5432/app"),
        ("postgres://u:p@db/app", "postgresql://u:p@db/app"),
        ("POSTGRES://u@db/app", "postgresql://u@db/app"),
        ("postgresql+psycopg://u:p@db/app?sslmode=require", "postgresql://u:p@db/app?sslmode=require"),
        ("postgresql+psycopg2://u@db/app", "postgresql://u@db/app"),
        ("  postgresql://u@db/app\n", "postgresql://u@db/app"),
        ("host=db dbname=app user=u", "host=db dbname=app user=u"),
        ("dbname=app", "dbname=app"),
    ],
)
def test_normalize_url_accepts_the_spellings_users_bring(given: str, expected: str) -> None:
    assert normalize_url(given) == expected


@pytest.mark.parametrize(
    "bad", ["", "   ", "mysql://u@db/app", "sqlite:///x.db", "http://db/app", "localhost", "db:5432"]
)
def test_normalize_url_refuses_what_is_not_postgresql(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        normalize_url(bad)


def test_normalize_url_refuses_non_strings() -> None:
    with pytest.raises(ConfigurationError):
        normalize_url(None)  # type: ignore[arg-type]


def test_a_refused_url_does_not_echo_its_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        normalize_url("user:hunter2@localhost")
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://alice:hunter2@db:5432/app",
        "postgres://alice:hunter2@db/app?sslmode=require",
        "postgresql://alice@db/app?password=hunter2&sslmode=require",
        "postgresql://alice@db/app?sslmode=require&password=hunter2",
        "postgresql://alice:hunter2@db/app?password=hunter2",
        "postgresql://alice:hun%40ter2@db/app",
        "postgresql://alice:hunter2:more@db/app",
        "host=db user=alice password=hunter2 dbname=app",
        "host=db password = hunter2 dbname=app",
        "host=db password='hunter2 with spaces' dbname=app",
        r"host=db password='hunter2 \' quoted' dbname=app",
    ],
)
def test_redact_never_leaks_the_password(url: str) -> None:
    shown = redact(url)
    assert "hunter2" not in shown
    assert "hun%40ter2" not in shown
    assert "***" in shown


def test_redact_keeps_everything_else_readable() -> None:
    assert redact("postgresql://alice:hunter2@db:5432/app?sslmode=require") == (
        "postgresql://alice:***@db:5432/app?sslmode=require"
    )
    assert redact("postgresql://alice@db/app") == "postgresql://alice@db/app"
    assert (
        redact("host=db user=alice password=hunter2 dbname=app")
        == "host=db user=alice password=*** dbname=app"
    )


def test_resolve_database_url_prefers_the_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGQUEUE_DATABASE_URL", "postgresql://from-pgqueue-env/app")
    monkeypatch.setenv("DATABASE_URL", "postgresql://from-database-url/app")
    assert resolve_database_url("postgres://from-argument/app") == "postgresql://from-argument/app"


def test_resolve_database_url_then_pgqueue_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGQUEUE_DATABASE_URL", "postgres://from-pgqueue-env/app")
    monkeypatch.setenv("DATABASE_URL", "postgresql://from-database-url/app")
    assert resolve_database_url() == "postgresql://from-pgqueue-env/app"


def test_resolve_database_url_then_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGQUEUE_DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://from-database-url/app")
    assert resolve_database_url() == "postgresql://from-database-url/app"


def test_resolve_database_url_checks_what_the_environment_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGQUEUE_DATABASE_URL", "mysql://from-pgqueue-env/app")
    with pytest.raises(ConfigurationError):
        resolve_database_url()


@pytest.mark.parametrize("name", ["pgqueue", "jobs_x", "_private", "a", "q1", "a" * 56])
def test_valid_schema_names(name: str) -> None:
    assert validate_schema(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "Bad", "1x", 'a"b', '"; DROP TABLE x; --', "a" * 57, "jobs-x", "jobs x", "jöbs", None, 5],
)
def test_invalid_schema_names(name: object) -> None:
    with pytest.raises(ConfigurationError):
        validate_schema(name)  # type: ignore[arg-type]


def test_resolve_schema_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGQUEUE_SCHEMA", raising=False)
    assert resolve_schema() == "pgqueue"
    monkeypatch.setenv("PGQUEUE_SCHEMA", "from_env")
    assert resolve_schema() == "from_env"
    assert resolve_schema("from_arg") == "from_arg"
    monkeypatch.setenv("PGQUEUE_SCHEMA", "Bad")
    with pytest.raises(ConfigurationError):
        resolve_schema()


def test_an_empty_schema_argument_is_refused_not_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGQUEUE_SCHEMA", raising=False)
    with pytest.raises(ConfigurationError):
        resolve_schema("")
