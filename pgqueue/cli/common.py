"""What every command shares: the connection flags and the preamble that applies them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import psycopg
import typer

from .. import logs
from ..app import App
from ..settings import export

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="PostgreSQL URL. Default: $PGQUEUE_DATABASE_URL, else $DATABASE_URL, else the embedded server.",
        show_default=False,
    ),
]
Schema = Annotated[
    str | None,
    typer.Option(
        "--schema", help="pgqueue's schema. Default: $PGQUEUE_SCHEMA, else pgqueue.", show_default=False
    ),
]


def connect(url: str) -> psycopg.Connection[Any]:
    """A connection for one command: autocommit, and a bounded wait for the server."""
    return psycopg.connect(url, autocommit=True, connect_timeout=10, application_name="pgqueue-cli")


@contextmanager
def session(database_url: str | None, schema: str | None) -> Iterator[tuple[App, psycopg.Connection[Any]]]:
    """The preamble of the commands that look at jobs: export the flags, log warnings only, and
    yield an App for them with a connection to its database."""
    export(database_url, schema)
    logs.setup("warning")
    app = App()
    try:
        with connect(app.database_url) as conn:
            yield app, conn
    finally:
        app.close()
