"""``pgqueue schedules list|add|remove``: the periodic schedules kept in the database."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from ..cron import Spec, next_tick
from ..db.driver import run
from ..db.schedules import list_schedules, remove_schedule, save_schedules
from ..errors import ConfigurationError
from ..job import validate_name
from .common import DatabaseUrl, Schema, session
from .listing import console, table, when
from .work import load_app

schedules_cli = typer.Typer(
    name="schedules",
    help="The periodic schedules: list, add and remove them.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@schedules_cli.command("list")
def list_(
    database_url: DatabaseUrl = None,
    schema: Schema = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Every schedule, its last tick enqueued and its next one."""
    with session(database_url, schema) as (app, conn):
        found, now = run(conn, list_schedules(app.schema))
    rows: list[dict[str, Any]] = [
        {
            "name": s.name,
            "task": s.task,
            "cron": s.cron,
            "every": s.every,
            "tz": s.tz,
            "catch_up": s.catch_up,
            "data": s.data,
            "last_tick": s.last_tick,
            "next_tick": next_tick(s, now),
        }
        for s in found
    ]
    if as_json:
        typer.echo(json.dumps(rows, default=str, indent=2))
        return
    out = console()
    if not rows:
        out.print("no schedules")
        return
    grid = table("name", "task", "when", "catch up", "last tick", "next tick", "data")
    for row in rows:
        every = f"every {row['every']:g}s" if row["every"] is not None else f"{row['cron']} ({row['tz']})"
        grid.add_row(
            row["name"],
            row["task"],
            every,
            "yes" if row["catch_up"] else "no",
            when(row["last_tick"]),
            when(row["next_tick"]),
            json.dumps(row["data"]),
        )
    out.print(grid)


@schedules_cli.command()
def add(
    name: Annotated[str, typer.Argument(help="The schedule's name (an existing one is replaced).")],
    task: Annotated[str, typer.Argument(help="The task to enqueue at each tick.")],
    cron: Annotated[
        str | None, typer.Option("--cron", help="A cron expression: five fields, or six with seconds first.")
    ] = None,
    every: Annotated[float | None, typer.Option("--every", help="A period in seconds.")] = None,
    tz: Annotated[str, typer.Option("--tz", help="The time zone the cron expression is read in.")] = "UTC",
    data: Annotated[
        str, typer.Option("--data", help="The job's keyword arguments, as a JSON object.")
    ] = "{}",
    catch_up: Annotated[
        bool, typer.Option("--catch-up", help="Enqueue ticks missed while no worker ran (up to 100).")
    ] = False,
    app_target: Annotated[
        str | None,
        typer.Option("--app", help="MODULE:APP whose tasks the task must be one of (checked when given)."),
    ] = None,
    database_url: DatabaseUrl = None,
    schema: Schema = None,
) -> None:
    """Add a schedule, or replace the one of that name (keeping its last tick)."""
    try:
        values: Any = json.loads(data)
    except ValueError as exc:
        raise ConfigurationError(f"--data is not JSON: {exc}") from None
    validate_name("task", task)
    spec = Spec.build(name, task, values, cron=cron, every=every, tz=tz, catch_up=catch_up)
    with session(database_url, schema) as (app, conn):
        if app_target is not None:
            load_app(app_target).schedule(
                name, task, spec.data, cron=cron, every=every, tz=tz, catch_up=catch_up, conn=conn
            )
        else:
            run(conn, save_schedules(app.schema, [spec], app.max_payload_bytes))
    typer.echo(f"schedule {name!r} saved")


@schedules_cli.command()
def remove(
    name: Annotated[str, typer.Argument(help="The schedule's name.")],
    database_url: DatabaseUrl = None,
    schema: Schema = None,
) -> None:
    """Remove a schedule (its jobs stay). One declared in code comes back when a worker starts."""
    with session(database_url, schema) as (app, conn):
        removed = run(conn, remove_schedule(app.schema, name))
    if not removed:
        raise ConfigurationError(f"no schedule named {name!r}")
    typer.echo(f"schedule {name!r} removed")
