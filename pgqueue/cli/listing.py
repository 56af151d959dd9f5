"""``pgqueue jobs``: list jobs with filters and keyset paging; the rich tables ``status`` shares."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..codec import error_summary
from ..db.driver import run
from ..db.listing import list_jobs
from .common import DatabaseUrl, Schema, session

STATES = ("created", "retry", "active", "completed", "cancelled", "failed")


def console() -> Console:
    """A console for tables: no markup or highlighting of cell text; wide when not a terminal."""
    wide = None if sys.stdout.isatty() else 200
    return Console(markup=False, highlight=False, emoji=False, width=wide)


def table(*columns: str, title: str | None = None, right: tuple[str, ...] = ()) -> Table:
    grid = Table(title=title, title_justify="left", box=None, pad_edge=False, header_style="bold")
    for name in columns:
        grid.add_column(name, justify="right" if name in right else "left", overflow="fold")
    return grid


def when(value: datetime | None) -> str:
    return value.astimezone().isoformat(sep=" ", timespec="seconds") if value else "-"


def jobs(
    database_url: DatabaseUrl = None,
    schema: Schema = None,
    queue: Annotated[str | None, typer.Option("--queue", help="Only this queue.")] = None,
    type_: Annotated[str | None, typer.Option("--type", help="Only this job type.")] = None,
    state: Annotated[
        str | None, typer.Option("--state", help=f"Only this state: {', '.join(STATES)}.")
    ] = None,
    error_contains: Annotated[
        str | None, typer.Option("--error-contains", help="Only jobs whose error contains this (any case).")
    ] = None,
    after: Annotated[
        int, typer.Option("--after", min=0, help="Only ids after this one (the next page).")
    ] = 0,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="Jobs per page.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List jobs, oldest id first: filter by queue, type, state or error; page with --after."""
    if state is not None and state not in STATES:
        raise typer.BadParameter(f"must be one of {', '.join(STATES)}", param_hint="--state")
    with session(database_url, schema) as (app, conn):
        rows = run(
            conn,
            list_jobs(
                app.schema,
                queue=queue,
                type=type_,
                state=state,
                error_contains=error_contains,
                after=after,
                limit=limit,
            ),
        )
    for row in rows:
        row["error_summary"] = error_summary(row["error"]) if row["error"] else None
    next_after = rows[-1]["id"] if len(rows) == limit else None
    if as_json:
        typer.echo(json.dumps({"jobs": rows, "next_after": next_after}, default=str, indent=2))
        return
    if not rows:
        typer.echo("no jobs")
        return
    grid = table("id", "type", "queue", "state", "attempts", "created", "finished", "error", right=("id",))
    for row in rows:
        grid.add_row(
            str(row["id"]),
            row["type"],
            row["queue"],
            row["state"],
            f"{row['attempts']}/{row['max_attempts']}",
            when(row["created_at"]),
            when(row["finished_at"]),
            row["error_summary"] or "",
        )
    out = console()
    out.print(grid)
    if next_after is not None:
        out.print(f"next page: --after {next_after}")
