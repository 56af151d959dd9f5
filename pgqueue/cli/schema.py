"""``pgqueue migrate`` and ``pgqueue grants``: pgqueue's tables, and who may use them."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from .. import logs
from ..config import redact
from ..errors import SchemaOutOfDate
from ..settings import export, resolve_database_url
from .common import DatabaseUrl, Schema, connect


def migrate(
    database_url: DatabaseUrl = None,
    schema: Schema = None,
    sql: Annotated[
        bool, typer.Option("--sql", help="Print the DDL instead of running it; touch no database.")
    ] = False,
    check: Annotated[
        bool,
        typer.Option("--check", help="Exit 0 if the schema is up to date, 1 if it is behind or missing."),
    ] = False,
) -> None:
    """Create or upgrade pgqueue's tables. Idempotent; safe to run from several processes at once."""
    from .. import migrate as migrations

    schema = export(database_url, schema)
    if sql and check:
        raise typer.BadParameter("--sql and --check do not go together")
    if sql:
        typer.echo(migrations.upgrade_sql(schema), nl=False)
        return
    logs.setup("info")
    url = resolve_database_url()
    started = time.perf_counter()
    if check:
        with connect(url) as conn:
            version = migrations.current_version(conn, schema)
        try:
            migrations.check_version(version, schema)
        except SchemaOutOfDate as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from None
        typer.echo(
            f"schema {schema!r} is up to date (version {version}) [{time.perf_counter() - started:.2f} s]"
        )
        return
    typer.echo(f"migrating schema {schema!r} in {redact(url)}")
    migrations.upgrade(url, schema)
    typer.echo(
        f"schema {schema!r} is at version {migrations.SCHEMA_VERSION} [{time.perf_counter() - started:.2f} s]"
    )


RoleName = Annotated[str, typer.Option(help="A role name (quoted as an identifier).")]


def grants(
    worker: RoleName,
    producer: RoleName,
    database_url: DatabaseUrl = None,
    schema: Schema = None,
    apply: Annotated[bool, typer.Option("--apply", help="Run the GRANTs instead of printing them.")] = False,
) -> None:
    """Least privilege: GRANTs for a worker role (DML on pgqueue's tables) and a producer role
    (insert jobs). Run by the schema's owner after `pgqueue migrate`; the roles must exist."""
    from ..db.sql import grants as grants_sql

    schema = export(database_url, schema)
    for flag, role in (("--worker", worker), ("--producer", producer)):
        if not role or len(role) > 63 or "\x00" in role:
            raise typer.BadParameter("must be a role name of 1-63 characters", param_hint=flag)
    text = grants_sql(schema, worker, producer)
    if not apply:
        typer.echo(text, nl=False)
        return
    url = resolve_database_url()
    with connect(url) as conn:
        conn.execute(text.encode())
    typer.echo(f"granted: {worker!r} works jobs, {producer!r} enqueues them, in schema {schema!r}")
