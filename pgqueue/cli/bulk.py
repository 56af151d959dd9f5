"""``pgqueue cancel``, ``retry`` and ``delete`` (one job by id, or every job a filter matches) and
``pgqueue redrive`` (dead letters back to their queues): ``--dry-run`` prints how many jobs the
action would touch; more than one asks first, unless ``--yes``."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated

import typer

from ..db.admin import count_dead_letters
from ..db.driver import run
from ..db.inspect import STATES, JobFilter, count_jobs
from .common import DatabaseUrl, Schema, session
from .jobs import _change, _ref

__all__ = ["cancel", "delete", "redrive", "retry"]

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def _seconds(text: str | None) -> float | None:
    if text is None:
        return None
    found = _DURATION.match(text)
    if not found:
        raise typer.BadParameter(
            f"{text!r}: a duration such as 90, 90s, 15m, 2h or 7d", param_hint="--older-than"
        )
    return float(found.group(1)) * _UNITS[found.group(2)]


OptionalId = Annotated[
    str | None,
    typer.Argument(metavar="ID", help="One job's id or uid; without it, the jobs the filters match."),
]
Queue = Annotated[str | None, typer.Option("--queue", help="Only jobs of this queue.")]
Type = Annotated[str | None, typer.Option("--type", help="Only jobs of this type.")]
State = Annotated[str | None, typer.Option("--state", help=f"Only jobs in this state: {', '.join(STATES)}.")]
OlderThan = Annotated[
    str | None,
    typer.Option(
        "--older-than", help="Only jobs created (dead-lettered, for redrive) longer ago: 90, 15m, 2h, 7d."
    ),
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Touch nothing: print how many jobs it would touch.")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before touching more than one job.")]

# The states each action touches (None: every state), for the counts it shows first.
_TOUCHES: dict[str, list[str] | None] = {
    "cancel": ["created", "retry", "active"],
    "retry": ["failed", "cancelled"],
    "delete": None,
}


def _bulk(
    action: str,
    job_id: str | None,
    where: dict[str, str | None],
    older_than: str | None,
    dry_run: bool,
    yes: bool,
    database_url: str | None,
    schema: str | None,
) -> None:
    filtered = any(value is not None for value in where.values()) or older_than is not None
    if job_id is not None and filtered:
        raise typer.BadParameter("give a job id or filters, not both")
    if job_id is not None:
        _one(action, job_id, dry_run, database_url, schema)
        return
    with session(database_url, schema) as (app, conn):
        jobs = JobFilter(where["queue"], where["type"], where["state"], None, _seconds(older_than))
        count = run(conn, count_jobs(app.schema, jobs, _TOUCHES[action]))
        touched = getattr(app, f"{action}_jobs")
        _confirmed_or_exit(action, count, dry_run, yes)
        done = touched(jobs.queue, jobs.type, jobs.state, jobs.older_than, conn=conn)
        typer.echo(f"{action}: {done} job(s)")


def _one(action: str, ref: str, dry_run: bool, database_url: str | None, schema: str | None) -> None:
    job = _ref(ref)
    if dry_run:
        typer.echo(f"{action}: would touch job {job} (if its state allows it)")
        return
    if action == "delete":
        with session(database_url, schema) as (app, conn):
            job_id = job if isinstance(job, int) else app.get_job(job, conn=conn).id
            if not app.delete_job(job_id, conn=conn):
                typer.echo(f"no job {job_id}", err=True)
                raise typer.Exit(1)
        typer.echo(f"job {job_id} deleted")
        return
    done, refused = {
        "cancel": ("cancelled", "is already {state}: nothing to cancel"),
        "retry": ("will run again", "is {state}: only failed or cancelled jobs can be retried"),
    }[action]
    _change(ref, database_url, schema, f"{action}_job", done, refused)


def _confirmed_or_exit(action: str, count: int, dry_run: bool, yes: bool) -> None:
    if dry_run:
        typer.echo(f"{action}: would touch {count} job(s)")
        raise typer.Exit(0)
    if count == 0:
        typer.echo(f"{action}: no job matches")
        raise typer.Exit(0)
    if count > 1 and not yes and not typer.confirm(f"{action} {count} jobs?", default=False):
        typer.echo("nothing done")
        raise typer.Exit(1)


def _action(action: str, doc: str) -> Callable[..., None]:
    """The command ``pgqueue <action>``: on one job by id, or on every job the filters match."""

    def command(
        job_id: OptionalId = None,
        queue: Queue = None,
        type_: Type = None,
        state: State = None,
        older_than: OlderThan = None,
        dry_run: DryRun = False,
        yes: Yes = False,
        database_url: DatabaseUrl = None,
        schema: Schema = None,
    ) -> None:
        where = {"queue": queue, "type": type_, "state": state}
        _bulk(action, job_id, where, older_than, dry_run, yes, database_url, schema)

    command.__name__ = command.__qualname__ = action
    command.__doc__ = doc
    return command


cancel = _action(
    "cancel", "Cancel a job, or every unfinished job the filters match (running ones are stopped)."
)
retry = _action("retry", "Run a failed or cancelled job again now, or every one the filters match.")
delete = _action("delete", "Delete a job, or every job the filters match, whatever its state.")


def redrive(
    dead_letter_queue: Annotated[str, typer.Argument(metavar="QUEUE", help="The dead-letter queue.")],
    type_: Type = None,
    older_than: OlderThan = None,
    dry_run: DryRun = False,
    yes: Yes = False,
    database_url: DatabaseUrl = None,
    schema: Schema = None,
) -> None:
    """Put the jobs waiting on a dead-letter queue back on the queues they failed on, to run now
    with fresh attempts."""
    with session(database_url, schema) as (app, conn):
        where = JobFilter(dead_letter_queue, type_, None, None, _seconds(older_than))
        count = run(conn, count_dead_letters(app.schema, where))
        _confirmed_or_exit("redrive", count, dry_run, yes)
        done = app.redrive(dead_letter_queue, type_, where.older_than, conn=conn)
        typer.echo(f"redrive: {done} job(s) back on their queues")
