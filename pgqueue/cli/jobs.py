"""``pgqueue status`` and ``show``: look at jobs (and the helper that acts on one, for ``bulk``)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any

import psycopg
import typer

from ..app import App
from ..codec import error_summary
from ..config import redact
from ..db import ops
from ..db.driver import run
from ..db.listing import queue_activity
from ..job import Job
from ..settings import WorkerConfig
from .common import DatabaseUrl, Schema, session
from .listing import console, table

_STATES = ("created", "retry", "active", "completed", "cancelled", "failed")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
JobRef = Annotated[str, typer.Argument(metavar="ID", help="The job's id, or its uid.")]


def _ref(text: str) -> int | uuid.UUID:
    """A job's id (digits) or its uid, checked before anything connects."""
    stripped = text.strip()
    if stripped.isascii() and stripped.isdigit():
        return int(stripped)
    try:
        return uuid.UUID(stripped)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is neither a job id nor a uid", param_hint="ID") from None


def _when(value: datetime | None) -> str:
    return value.astimezone().isoformat(sep=" ", timespec="milliseconds") if value else "-"


def status(
    database_url: DatabaseUrl = None,
    schema: Schema = None,
    as_json: JsonFlag = False,
    lease_seconds: Annotated[
        float,
        typer.Option(
            "--lease-seconds",
            envvar="PGQUEUE_LEASE_SECONDS",
            min=1,
            help="The workers' --lease-seconds: a worker that missed 3 heartbeats (one every third "
            "of it) is shown as gone.",
        ),
    ] = WorkerConfig.lease_seconds,
) -> None:
    """Jobs per queue and state, how long the oldest waits, throughput, and the workers."""
    with session(database_url, schema) as (app, conn):
        counts = app.counts(conn=conn)
        activity = run(conn, queue_activity(app.schema))
        workers = run(conn, ops.workers(app.schema))
        url, schema = app.database_url, app.schema
    for w in workers:
        # Heartbeats come every lease/3 seconds: three missed ones mean the worker is gone.
        w["gone"] = w["seen_seconds_ago"] > lease_seconds
    if as_json:
        typer.echo(
            json.dumps({"queues": counts, "activity": activity, "workers": workers}, default=str, indent=2)
        )
        return
    out = console()
    out.print(f"database {redact(url)}, schema {schema!r}")
    if counts:
        right = (*_STATES, "total", "oldest waiting", "completed/min")
        grid = table("queue", *right, right=right)
        for queue, states in sorted(counts.items()):
            numbers = [states.get(state, 0) for state in _STATES]
            seen = activity.get(queue, {})
            oldest = seen.get("oldest_waiting")
            grid.add_row(
                queue,
                *map(str, numbers),
                str(sum(numbers)),
                "-" if oldest is None else _age(oldest),
                f"{seen.get('completed_per_minute') or 0:.1f}",
            )
        out.print(grid)
    else:
        out.print("no jobs")
    if not workers:
        out.print("no workers registered")
        return
    out.print("")
    grid = table(
        "worker", "host", "pid", "queues", "concurrency", "started", "last seen", "status", title=None
    )
    for w in workers:
        grid.add_row(
            w["id"],
            w["hostname"],
            str(w["pid"]),
            ",".join(w["queues"]),
            str(w["concurrency"]),
            _when(w["started_at"]),
            f"{w['seen_seconds_ago']:.0f} s ago",
            "gone" if w["gone"] else "alive",
        )
    out.print(f"{len(workers)} worker(s):")
    out.print(grid)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _job_text(job: Job) -> str:
    lines = [
        f"job {job.id}: {job.type} (queue {job.queue})",
        f"  uid        {job.uid}",
        f"  state      {job.state.value}",
        f"  attempts   {job.attempts} of {job.max_attempts}",
        f"  priority   {job.priority}",
        f"  created    {_when(job.created_at)}",
        f"  run at     {_when(job.run_at)}",
        f"  started    {_when(job.started_at)}",
        f"  finished   {_when(job.finished_at)}",
    ]
    if job.duration is not None:
        lines.append(f"  duration   {job.duration:.3f} s")
    if job.worker_id:
        lines.append(f"  worker     {job.worker_id}")
    if job.unique_key:
        lines.append(f"  unique key {job.unique_key}")
    if job.debounce_key:
        lines.append(f"  debounce   {job.debounce_key}")
    if job.progress:
        message = job.progress.get("message")
        shown = f"{job.progress.get('value', 0):.0%}" + (f" ({message})" if message else "")
        lines.append(f"  progress   {shown}")
    lines.append(f"  data       {json.dumps(job.data, ensure_ascii=False)}")
    lines.append(f"  output     {json.dumps(job.output, ensure_ascii=False, default=str)}")
    if job.error:
        error = job.error.rstrip().replace("\n", "\n             ")
        lines.append(f"  error      {error}")
    if len(job.errors) > 1:
        lines.append(f"  errors     {len(job.errors)} failed attempts:")
        for entry in job.errors:
            summary = error_summary(str(entry.get("error") or ""))
            lines.append(f"             attempt {entry.get('attempt')}: {summary}")
    return "\n".join(lines)


def _job_json(job: Job) -> str:
    fields = {name: getattr(job, name) for name in job.__dataclass_fields__}
    fields["state"] = job.state.value
    return json.dumps(fields, default=str, indent=2, ensure_ascii=False)


def _print_job(app: App, conn: psycopg.Connection[Any], job_id: int | uuid.UUID, as_json: bool) -> None:
    job = app.get_job(job_id, conn=conn)
    typer.echo(_job_json(job) if as_json else _job_text(job))


def show(
    job_id: JobRef, database_url: DatabaseUrl = None, schema: Schema = None, as_json: JsonFlag = False
) -> None:
    """A job's state, attempts, output and error (by its id or its uid)."""
    ref = _ref(job_id)
    with session(database_url, schema) as (app, conn):
        _print_job(app, conn, ref, as_json)


def _change(
    ref: str, database_url: str | None, schema: str | None, action: str, done: str, refused: str
) -> None:
    """Run ``App.<action>`` on one job (by id or uid); print the job, or why nothing changed (exit 1)."""
    job = _ref(ref)
    with session(database_url, schema) as (app, conn):
        job_id = job if isinstance(job, int) else app.get_job(job, conn=conn).id
        if not getattr(app, action)(job_id, conn=conn):
            state = app.get_job(job_id, conn=conn).state.value
            typer.echo(f"job {job_id} " + refused.format(state=state), err=True)
            raise typer.Exit(1)
        typer.echo(f"job {job_id} {done}")
        _print_job(app, conn, job_id, False)
