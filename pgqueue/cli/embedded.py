"""``pgqueue embedded url|stop`` and ``pgqueue demo``: the embedded server, and a tour that uses it."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import logs
from ..config import normalize_url, redact
from ..embedded import embedded_database_url, embedded_stop
from ..settings import embedded_pgdata, export_database_url, resolve_schema
from .common import DatabaseUrl

embedded_cli = typer.Typer(
    help="The embedded PostgreSQL server pgqueue uses when no database is configured.",
    no_args_is_help=True,
)


@embedded_cli.command("url")
def embedded_url() -> None:
    """Start the embedded server if needed and print its URL."""
    logs.setup("info")
    typer.echo(redact(embedded_database_url(embedded_pgdata())))


@embedded_cli.command("stop")
def embedded_stop_command() -> None:
    """Stop the embedded server (its data stays, for the next start)."""
    logs.setup("warning")
    where = embedded_pgdata()
    if embedded_stop(where):
        typer.echo(f"stopped the embedded PostgreSQL server in {where}")
    else:
        typer.echo(f"the embedded PostgreSQL server is not running (data: {where})")


def demo(
    database_url: DatabaseUrl = None,
    schema: Annotated[
        str,
        typer.Option(
            "--schema", help="Schema for the demo's users and jobs; dropped and re-created on each run."
        ),
    ] = "pgqueue_demo",
    users: Annotated[
        int, typer.Option("--users", min=1, max=100_000, help="Registrations to simulate.")
    ] = 50,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=1000, help="Jobs run at once.")
    ] = 20,
) -> None:
    """Simulate user registrations that enqueue jobs in their own transaction, then work them off."""
    from .demo import run  # only this command needs it: kept out of the library's imports

    if database_url is not None:
        export_database_url(normalize_url(database_url))
    schema = resolve_schema(schema)
    raise typer.Exit(run(schema=schema, users=users, concurrency=concurrency))
