"""Schema migrations: alembic, with its Config built here so users need no ``alembic.ini``."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any, TextIO

import psycopg
from psycopg import sql

from .config import validate_schema
from .db.driver import run
from .db.ops import schema_version
from .db.version import SCHEMA_VERSION, VERSION_TABLE, check_version

__all__ = [
    "SCHEMA_VERSION",
    "VERSION_TABLE",
    "check_version",
    "current_version",
    "downgrade",
    "upgrade",
    "upgrade_sql",
]


# alembic keeps the running migration environment in module globals (alembic.context, alembic.op),
# so two threads of one process must not run its commands at once. Processes need no such lock:
# env.py serializes them with an advisory lock in the database.
_alembic_lock = threading.Lock()


def migrations_dir() -> Path:
    """The alembic scripts, shipped inside the package: ``env.py`` and ``versions/`` (in a source
    checkout, ``pgqueue/migrations`` links to the top-level ``migrations/``)."""
    path = Path(__file__).resolve().parent / "migrations"
    if not (path / "env.py").is_file():
        raise FileNotFoundError(f"pgqueue's migrations are missing from {path}")
    return path


def run_revision_sql(revision_file: str, direction: str) -> None:
    """Run a revision's DDL, kept beside it as ``<revision>.<direction>.sql``, through ``op.execute``.

    ``{schema}`` in the file stands for the schema being migrated, quoted as an identifier.
    Statements are separated by a ``;`` at the end of a line (outside ``$$``-quoted function
    bodies) and executed one by one.
    """
    from alembic import op

    revision = Path(revision_file)
    script = revision.with_name(f"{revision.stem}.{direction}.sql").read_text(encoding="utf-8")
    config = op.get_context().config
    if config is None:
        raise RuntimeError("run_revision_sql runs inside an alembic migration started by pgqueue.migrate")
    schema = validate_schema(config.attributes["schema"])
    quoted = sql.Identifier(schema).as_string(None)
    for statement in _statements(script.replace("{schema}", quoted)):
        op.execute(statement)


def _statements(script: str) -> list[str]:
    """The statements of a script: split at a ``;`` that ends a line outside ``$$`` quotes."""
    statements: list[str] = []
    current = ""
    for number, part in enumerate(script.split("$$")):
        if number % 2:  # inside a $$-quoted body
            current += f"$${part}$$"
            continue
        pieces = part.split(";\n")
        current += pieces[0]
        for piece in pieces[1:]:
            statements.append(current)
            current = piece
    statements.append(current)
    return [statement for statement in statements if statement.strip()]


def alembic_config(dsn: str | None, schema: str, output: TextIO | None = None) -> Any:
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
    return run(conn, schema_version(validate_schema(schema)))
