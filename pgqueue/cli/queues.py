"""``pgqueue queue pause|resume|limit|show``: queue settings kept in the database."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from ..limits import UNLIMITED
from .common import DatabaseUrl, Schema, session
from .jobs import _when

queue_cli = typer.Typer(
    help="Pause, resume, limit and show queues (settings every worker reads).", no_args_is_help=True
)

QueueName = Annotated[str, typer.Argument(metavar="NAME", help="The queue's name.")]


@queue_cli.command("pause")
def pause(name: QueueName, database_url: DatabaseUrl = None, schema: Schema = None) -> None:
    """Stop every worker claiming the queue's jobs (running jobs finish); resume undoes it."""
    with session(database_url, schema) as (app, conn):
        app.configure_queue(name, paused=True, conn=conn)
    typer.echo(f"queue {name!r} paused: workers claim none of its jobs until `pgqueue queue resume {name}`")


@queue_cli.command("resume")
def resume(name: QueueName, database_url: DatabaseUrl = None, schema: Schema = None) -> None:
    """Let workers claim the queue's jobs again, and wake them."""
    with session(database_url, schema) as (app, conn):
        app.configure_queue(name, paused=False, conn=conn)
    typer.echo(f"queue {name!r} resumed")


@queue_cli.command("limit")
def limit(
    name: QueueName,
    concurrency: Annotated[
        str | None,
        typer.Option(help="Most of the queue's jobs running at once across every worker; 'none' clears it."),
    ] = None,
    rate_limit: Annotated[
        str | None,
        typer.Option(help="Most starts per window: 100/s, 600/m, 1000/h, 10/5s; 'none' clears it."),
    ] = None,
    database_url: DatabaseUrl = None,
    schema: Schema = None,
) -> None:
    """Set or clear the queue's concurrency and rate limits (workers apply them at their next claim)."""
    if concurrency is None and rate_limit is None:
        raise typer.BadParameter("give --concurrency and/or --rate-limit (a limit, or 'none' to clear it)")

    def parsed(value: str | None) -> str | int | None:
        if value is None or value.strip().lower() in ("none", UNLIMITED):
            return None if value is None else UNLIMITED
        return int(value) if value.strip().lstrip("-").isdigit() else value

    with session(database_url, schema) as (app, conn):
        settings = app.configure_queue(
            name, concurrency=parsed(concurrency), rate_limit=parsed(rate_limit), conn=conn
        )
    typer.echo(f"queue {name!r}: {_limits(settings)}")


def _limits(settings: dict[str, Any]) -> str:
    concurrency, rate = settings.get("concurrency"), settings.get("rate_limit")
    parts = [f"concurrency {concurrency}" if concurrency else "", f"rate limit {rate}" if rate else ""]
    return ", ".join(part for part in parts if part) or "no limits"


@queue_cli.command("show")
def show(
    name: Annotated[
        str | None, typer.Argument(metavar="[NAME]", help="One queue; default: every queue.")
    ] = None,
    database_url: DatabaseUrl = None,
    schema: Schema = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Each queue's settings and jobs per state."""
    with session(database_url, schema) as (app, conn):
        settings = app.queue_settings(conn=conn)
        counts = app.counts(conn=conn)
    names = [name] if name else sorted(set(settings) | set(counts))
    shown = {
        queue: {
            "paused": settings.get(queue, {}).get("paused", False),
            "concurrency": settings.get(queue, {}).get("concurrency"),
            "rate_limit": settings.get(queue, {}).get("rate_limit"),
            "changed": settings.get(queue, {}).get("updated_at"),
            "jobs": counts.get(queue, {}),
        }
        for queue in names
    }
    if as_json:
        typer.echo(json.dumps(shown, default=str, indent=2))
        return
    if not shown:
        typer.echo("no queues")
    for queue, info in shown.items():
        state = "paused" if info["paused"] else "running"
        jobs = ", ".join(f"{n} {s}" for s, n in sorted(info["jobs"].items())) or "no jobs"
        typer.echo(f"{queue}: {state}, {_limits(info)} (changed {_when(info['changed'])}); {jobs}")
