"""Schema migrations: alembic, with its Config built here so users need no ``alembic.ini``."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import psycopg

from .config import validate_schema
from .errors import SchemaOutOfDate

SCHEMA_VERSION = "0001"
"""The alembic revision this pgqueue's code expects; a test keeps it equal to the migrations' head."""

VERSION_TABLE = "pgqueue_alembic_version"

# alembic keeps the running migration environment in module globals (alembic.context, alembic.op),
# so two threads of one process must not run its commands at once. Processes need no such lock:
# env.py serializes them with an advisory lock in the database.
_alembic_lock = threading.Lock()


def migrations_dir() -> Path:
    """The migrations shipped in the wheel, or the source tree's ``migrations/`` in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_migrations", here.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError(f"pgqueue's migrations are missing next to {here}")


def alembic_config(dsn: str | None, schema: str, output: io.TextIOBase | None = None) -> Any:
    from alembic.config import Config

    config = Config(output_buffer=output) if output is not None else Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["schema"] = validate_schema(schema)
    if dsn is not None:
        config.attributes["connect"] = lambda: psycopg.connect(dsn, application_name="pgqueue-migrate")
    return config


def upgrade(dsn: str, schema: str, revision: str = "head") -> None:
    """Bring the schema up to ``revision``. Idempotent; concurrent runs wait for each other."""
    from alembic import command

    config = alembic_config(dsn, schema)
    with _alembic_lock:
        command.upgrade(config, revision)


def downgrade(dsn: str, schema: str, revision: str) -> None:
    """Take the schema down to ``revision`` (``"base"`` drops pgqueue's tables)."""
    from alembic import command

    config = alembic_config(dsn, schema)
    with _alembic_lock:
        command.downgrade(config, revision)


def upgrade_sql(schema: str, revision: str = "head") -> str:
    """The DDL ``upgrade`` would run, as text, without touching any database (for DBAs)."""
    from alembic import command

    buffer = io.StringIO()
    config = alembic_config(None, schema, output=buffer)
    with _alembic_lock:
        command.upgrade(config, revision, sql=True)
    return buffer.getvalue()


def current_version(conn: psycopg.Connection[Any], schema: str) -> str | None:
    """The revision the database's schema is at, or None if pgqueue was never migrated there."""
    from .db.driver import run  # imported here: the data layer's operations check versions with this module
    from .db.ops import schema_version

    return run(conn, schema_version(validate_schema(schema)))


def check_version(version: str | None, schema: str) -> None:
    """Raise SchemaOutOfDate unless ``version`` is the one this code expects."""
    if version == SCHEMA_VERSION:
        return
    if version is None:
        raise SchemaOutOfDate(f"pgqueue's schema {schema!r} is not in this database: run `pgqueue migrate`")
    if version < SCHEMA_VERSION:
        raise SchemaOutOfDate(
            f"pgqueue's schema {schema!r} is at version {version}, this pgqueue needs {SCHEMA_VERSION}: "
            "run `pgqueue migrate`"
        )
    raise SchemaOutOfDate(
        f"pgqueue's schema {schema!r} is at version {version}, newer than this pgqueue knows "
        f"({SCHEMA_VERSION}): upgrade pgqueue here"
    )
