"""The ``pgqueue`` command: parse flags, call the library, print the outcome.

Every command takes ``--database-url`` and ``--schema``. They are exported as
``PGQUEUE_DATABASE_URL`` and ``PGQUEUE_SCHEMA`` before a user's app module is imported, so
``pgqueue.App()`` there, and every worker process started here, sees them. Database:
``--database-url`` > ``PGQUEUE_DATABASE_URL`` > ``DATABASE_URL`` > the embedded server.
Errors are one line on stderr (exit code 2 for bad settings, 1 for the rest); a password
is never printed.
"""

from __future__ import annotations

import enum
import importlib
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from typing import Annotated, Any, Optional

import psycopg
import typer

from . import logs
from .app import App
from .config import (
    embedded_data_dir,
    embedded_database_url,
    embedded_stop,
    normalize_url,
    redact,
    resolve_database_url,
    resolve_schema,
)
from .db import ops
from .db.driver import run
from .errors import ConfigurationError, InvalidJob, PgQueueError, SchemaOutOfDate
from .job import Job, validate_name

cli = typer.Typer(
    name="pgqueue",
    help="pgqueue: a PostgreSQL-native background job queue.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
embedded_cli = typer.Typer(
    help="The embedded PostgreSQL server pgqueue uses when no database is configured.",
    no_args_is_help=True,
)
cli.add_typer(embedded_cli, name="embedded")

DatabaseUrl = Annotated[
    Optional[str],
    typer.Option(
        "--database-url",
        help="PostgreSQL URL. Default: $PGQUEUE_DATABASE_URL, else $DATABASE_URL, else the embedded server.",
        show_default=False,
    ),
]
Schema = Annotated[
    Optional[str],
    typer.Option(
        "--schema", help="pgqueue's schema. Default: $PGQUEUE_SCHEMA, else pgqueue.", show_default=False
    ),
]


class LogLevel(str, enum.Enum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class LogFormat(str, enum.Enum):
    text = "text"
    json = "json"


def _settings(database_url: str | None, schema: str | None) -> str:
    """Validate the connection flags and export them for the app module and child processes."""
    if database_url is not None:
        os.environ["PGQUEUE_DATABASE_URL"] = normalize_url(database_url)
    resolved = resolve_schema(schema)
    os.environ["PGQUEUE_SCHEMA"] = resolved
    return resolved


def _connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True, connect_timeout=10, application_name="pgqueue-cli")


# --- migrate ------------------------------------------------------------------------------


@cli.command()
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
    from . import migrate as migrations

    schema = _settings(database_url, schema)
    if sql and check:
        raise typer.BadParameter("--sql and --check do not go together")
    if sql:
        typer.echo(migrations.upgrade_sql(schema), nl=False)
        return
    logs.setup("info")
    url = resolve_database_url()
    started = time.perf_counter()
    if check:
        with _connect(url) as conn:
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


@cli.command()
def grants(
    worker: RoleName,
    producer: RoleName,
    database_url: DatabaseUrl = None,
    schema: Schema = None,
    apply: Annotated[bool, typer.Option("--apply", help="Run the GRANTs instead of printing them.")] = False,
) -> None:
    """Least privilege: GRANTs for a worker role (DML on pgqueue's tables) and a producer role
    (insert jobs). Run by the schema's owner after `pgqueue migrate`; the roles must exist."""
    from .db.sql import grants as grants_sql

    schema = _settings(database_url, schema)
    for flag, role in (("--worker", worker), ("--producer", producer)):
        if not role or len(role) > 63 or "\x00" in role:
            raise typer.BadParameter("must be a role name of 1-63 characters", param_hint=flag)
    text = grants_sql(schema, worker, producer)
    if not apply:
        typer.echo(text, nl=False)
        return
    url = resolve_database_url()
    with _connect(url) as conn:
        conn.execute(text.encode())
    typer.echo(f"granted: {worker!r} works jobs, {producer!r} enqueues them, in schema {schema!r}")


# --- work ---------------------------------------------------------------------------------

_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def load_app(target: str) -> App:
    """Import ``MODULE:APP`` (the current directory first on the path) and return the App there."""
    module_name, _, attribute = target.partition(":")
    if not _DOTTED.match(module_name) or not _DOTTED.match(attribute):
        raise ConfigurationError(f"expected MODULE:APP, such as myproject.tasks:app, not {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ConfigurationError(
                f"cannot import {module_name!r}: no such module in the current directory or on sys.path"
            ) from None
        raise  # a module the app itself imports is missing: the traceback says which
    found: Any = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ConfigurationError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not isinstance(found, App):
        raise ConfigurationError(f"{target} is a {type(found).__name__}, not a pgqueue.App")
    return found


def _parse_queues(queues: str | None) -> list[str] | None:
    if queues is None or not queues.strip():
        return None
    names = [name.strip() for name in queues.split(",")]
    for name in names:
        try:
            validate_name("queue", name)
        except InvalidJob as exc:
            raise typer.BadParameter(str(exc), param_hint="--queues") from None
    return list(dict.fromkeys(names))


def _check_schema(url: str, schema: str) -> None:
    with _connect(url) as conn:
        run(conn, ops.check_schema(schema))


@cli.command()
def work(
    target: Annotated[
        str, typer.Argument(metavar="MODULE:APP", help="Where the App is, e.g. myproject.tasks:app")
    ],
    database_url: DatabaseUrl = None,
    schema: Schema = None,
    queues: Annotated[
        Optional[str],
        typer.Option(
            envvar="PGQUEUE_QUEUES", help="Comma-separated queues to work on. Default: all the app's queues."
        ),
    ] = None,
    concurrency: Annotated[
        int,
        typer.Option(envvar="PGQUEUE_CONCURRENCY", min=1, max=10_000, help="Jobs run at once by each worker process."),
    ] = 10,
    processes: Annotated[
        int,
        typer.Option(envvar="PGQUEUE_PROCESSES", min=1, help="Worker processes to run (uses several cores)."),
    ] = 1,
    burst: Annotated[
        bool, typer.Option("--burst", envvar="PGQUEUE_BURST", help="Exit 0 once nothing is left to run.")
    ] = False,
    poll_interval: Annotated[
        float,
        typer.Option(
            envvar="PGQUEUE_POLL_INTERVAL", help="Seconds between polls (NOTIFY only shortens them)."
        ),
    ] = 1.0,
    shutdown_grace: Annotated[
        float,
        typer.Option(
            envvar="PGQUEUE_SHUTDOWN_GRACE", min=0, help="Seconds running jobs get to finish after SIGTERM."
        ),
    ] = 30.0,
    log_level: Annotated[
        LogLevel, typer.Option(envvar="PGQUEUE_LOG_LEVEL", case_sensitive=False)
    ] = LogLevel.info,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            envvar="PGQUEUE_LOG_FORMAT", case_sensitive=False, help="text or json (one object a line)."
        ),
    ] = LogFormat.text,
    no_listen: Annotated[
        bool,
        typer.Option(
            "--no-listen", envvar="PGQUEUE_NO_LISTEN", help="Poll only: no LISTEN/NOTIFY (poolers)."
        ),
    ] = False,
    lease_seconds: Annotated[
        float,
        typer.Option(
            envvar="PGQUEUE_LEASE_SECONDS",
            min=1,
            max=86400,
            help="Seconds a claim holds a job without a heartbeat; a dead worker's jobs run again after it.",
        ),
    ] = 15.0,
    rescue_interval: Annotated[
        float,
        typer.Option(
            envvar="PGQUEUE_RESCUE_INTERVAL",
            min=0.05,
            max=3600,
            help="Seconds between sweeps for jobs whose lease expired.",
        ),
    ] = 5.0,
    completed_retention: Annotated[
        float,
        typer.Option(envvar="PGQUEUE_COMPLETED_RETENTION", min=0, max=10 * 365 * 86400,
                     help="Seconds completed jobs are kept before workers delete them."),
    ] = 3600.0,
    failed_retention: Annotated[
        float,
        typer.Option(envvar="PGQUEUE_FAILED_RETENTION", min=0, max=10 * 365 * 86400,
                     help="Seconds failed and cancelled jobs are kept before workers delete them."),
    ] = 7 * 86400.0,
    prune_interval: Annotated[
        float,
        typer.Option(envvar="PGQUEUE_PRUNE_INTERVAL", min=0.1, max=86400,
                     help="Seconds between deletions of finished jobs past their retention."),
    ] = 60.0,
    xmin_warning: Annotated[
        float,
        typer.Option(envvar="PGQUEUE_XMIN_WARNING", min=1, max=10 * 365 * 86400,
                     help="Warn when a transaction holds the xmin horizon back this many seconds."),
    ] = 300.0,
    async_commit: Annotated[
        bool,
        typer.Option(
            "--async-commit", envvar="PGQUEUE_ASYNC_COMMIT",
            help="Commit the worker's claims and outcomes without waiting for the WAL flush: about "
                 "twice the throughput; a database crash may then forget the last fraction of a "
                 "second of them, and those jobs run again (enqueues are never affected).",
        ),
    ] = False,
) -> None:
    """Run jobs: a worker process, or --processes N of them under a supervisor."""
    schema_flag = schema
    schema = _settings(database_url, schema)
    if not (poll_interval > 0 and poll_interval < 86400):
        raise typer.BadParameter("must be a positive number of seconds", param_hint="--poll-interval")
    if shutdown_grace > 86400:
        raise typer.BadParameter("must be at most a day", param_hint="--shutdown-grace")
    queue_names = _parse_queues(queues)
    logs.setup(log_level.value, log_format.value)
    app = load_app(target)
    if app.schema != schema:
        if schema_flag is not None:
            raise ConfigurationError(
                f"the app in {target} uses schema {app.schema!r}, not {schema!r}: drop its schema= argument "
                "or pass the same --schema"
            )
        schema = os.environ["PGQUEUE_SCHEMA"] = app.schema
    worker = {
        "queues": queue_names,
        "concurrency": concurrency,
        "burst": burst,
        "poll_interval": poll_interval,
        "shutdown_grace": shutdown_grace,
        "listen": not no_listen,
        "lease_seconds": lease_seconds,
        "rescue_interval": rescue_interval,
        "completed_retention": completed_retention,
        "failed_retention": failed_retention,
        "prune_interval": prune_interval,
        "xmin_warning": xmin_warning,
        "async_commit": async_commit,
    }
    if processes > 1:
        # Resolve once, so every child uses the same database (and the embedded server starts once).
        url = app.database_url
        os.environ["PGQUEUE_DATABASE_URL"] = url
        _check_schema(url, schema)
        raise typer.Exit(_supervise(target, processes, worker, log_level.value, log_format.value))
    _check_schema(app.database_url, schema)
    try:
        app.run_worker(**worker)
    finally:
        app.close()


def _supervise(target: str, processes: int, worker: dict[str, Any], log_level: str, log_format: str) -> int:
    """Run ``processes`` children of ``pgqueue work ... --processes 1`` with the same worker settings."""
    from .supervisor import Supervisor

    command = [sys.executable, "-m", "pgqueue", "work", target, "--processes", "1",
               "--log-level", log_level, "--log-format", log_format]
    for name, value in worker.items():
        if name == "queues":
            command += ["--queues", ",".join(value)] if value else []
        elif name == "listen":
            command += [] if value else ["--no-listen"]
        elif name in ("burst", "async_commit"):
            command += ["--" + name.replace("_", "-")] if value else []
        else:
            command += ["--" + name.replace("_", "-"), repr(value)]
    return Supervisor(command, processes, burst=worker["burst"]).run()


# --- inspecting jobs ------------------------------------------------------------------------

_STATES = ("created", "retry", "active", "completed", "cancelled", "failed")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _when(value: datetime | None) -> str:
    return value.astimezone().isoformat(sep=" ", timespec="milliseconds") if value else "-"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


@cli.command()
def status(database_url: DatabaseUrl = None, schema: Schema = None, as_json: JsonFlag = False) -> None:
    """Jobs per queue and state, and the worker processes registered."""
    schema = _settings(database_url, schema)
    logs.setup("warning")
    app = App()
    url = app.database_url
    with _connect(url) as conn:
        counts = app.counts(conn=conn)
        workers = run(conn, ops.workers(schema))
    if as_json:
        typer.echo(json.dumps({"queues": counts, "workers": workers}, default=str, indent=2))
        return
    typer.echo(f"database {redact(url)}, schema {schema!r}")
    if counts:
        rows = [["queue", *_STATES, "total"]]
        for queue, states in sorted(counts.items()):
            numbers = [states.get(state, 0) for state in _STATES]
            rows.append([queue, *map(str, numbers), str(sum(numbers))])
        typer.echo(_table(rows))
    else:
        typer.echo("no jobs")
    if not workers:
        typer.echo("no workers registered")
        return
    typer.echo(f"\n{len(workers)} worker(s):")
    rows = [["worker", "host", "pid", "queues", "concurrency", "started", "last seen"]]
    for w in workers:
        rows.append(
            [
                w["id"],
                w["hostname"],
                str(w["pid"]),
                ",".join(w["queues"]),
                str(w["concurrency"]),
                _when(w["started_at"]),
                f"{w['seen_seconds_ago']:.0f} s ago",
            ]
        )
    typer.echo(_table(rows))


def _job_text(job: Job) -> str:
    lines = [
        f"job {job.id}: {job.type} (queue {job.queue})",
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
    lines.append(f"  data       {json.dumps(job.data, ensure_ascii=False)}")
    lines.append(f"  output     {json.dumps(job.output, ensure_ascii=False, default=str)}")
    if job.error:
        error = job.error.rstrip().replace("\n", "\n             ")
        lines.append(f"  error      {error}")
    if len(job.errors) > 1:
        lines.append(f"  errors     {len(job.errors)} failed attempts:")
        for entry in job.errors:
            last = (str(entry.get("error") or "").strip().splitlines() or [""])[-1]
            lines.append(f"             attempt {entry.get('attempt')}: {last}")
    return "\n".join(lines)


def _job_json(job: Job) -> str:
    fields = {name: getattr(job, name) for name in job.__dataclass_fields__}
    fields["state"] = job.state.value
    return json.dumps(fields, default=str, indent=2, ensure_ascii=False)


def _print_job(app: App, conn: psycopg.Connection[Any], job_id: int, as_json: bool) -> None:
    job = app.get_job(job_id, conn=conn)
    typer.echo(_job_json(job) if as_json else _job_text(job))


JobId = Annotated[int, typer.Argument(metavar="ID", help="The job's id.")]


@cli.command()
def show(
    job_id: JobId, database_url: DatabaseUrl = None, schema: Schema = None, as_json: JsonFlag = False
) -> None:
    """A job's state, attempts, output and error."""
    _settings(database_url, schema)
    logs.setup("warning")
    app = App()
    with _connect(app.database_url) as conn:
        _print_job(app, conn, job_id, as_json)


@cli.command()
def retry(job_id: JobId, database_url: DatabaseUrl = None, schema: Schema = None) -> None:
    """Run a failed or cancelled job again, now."""
    _settings(database_url, schema)
    logs.setup("warning")
    app = App()
    with _connect(app.database_url) as conn:
        if not app.retry_job(job_id, conn=conn):
            state = app.get_job(job_id, conn=conn).state.value
            typer.echo(f"job {job_id} is {state}: only failed or cancelled jobs can be retried", err=True)
            raise typer.Exit(1)
        typer.echo(f"job {job_id} will run again")
        _print_job(app, conn, job_id, False)


@cli.command()
def cancel(job_id: JobId, database_url: DatabaseUrl = None, schema: Schema = None) -> None:
    """Cancel a job that has not finished (a running job's result will not be recorded)."""
    _settings(database_url, schema)
    logs.setup("warning")
    app = App()
    with _connect(app.database_url) as conn:
        if not app.cancel_job(job_id, conn=conn):
            state = app.get_job(job_id, conn=conn).state.value
            typer.echo(f"job {job_id} is already {state}: nothing to cancel", err=True)
            raise typer.Exit(1)
        typer.echo(f"job {job_id} cancelled")
        _print_job(app, conn, job_id, False)


# --- demo -------------------------------------------------------------------------------------


@cli.command()
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
    from . import demo as demo_module

    if database_url is not None:
        os.environ["PGQUEUE_DATABASE_URL"] = normalize_url(database_url)
    schema = resolve_schema(schema)
    raise typer.Exit(demo_module.run(schema=schema, users=users, concurrency=concurrency))


# --- embedded server -----------------------------------------------------------------------------


@embedded_cli.command("url")
def embedded_url() -> None:
    """Start the embedded server if needed and print its URL."""
    logs.setup("info")
    typer.echo(redact(embedded_database_url()))


@embedded_cli.command("stop")
def embedded_stop_command() -> None:
    """Stop the embedded server (its data stays, for the next start)."""
    logs.setup("warning")
    where = embedded_data_dir()
    if embedded_stop():
        typer.echo(f"stopped the embedded PostgreSQL server in {where}")
    else:
        typer.echo(f"the embedded PostgreSQL server is not running (data: {where})")


# --- entry point -------------------------------------------------------------------------------


def _one_line(error: BaseException) -> str:
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    text = text or type(error).__name__
    for secret in _known_passwords():
        text = text.replace(secret, "***")
    return logs.scrub(text)


def _known_passwords() -> list[str]:
    secrets = []
    for name in ("PGQUEUE_DATABASE_URL", "DATABASE_URL", "PGPASSWORD"):
        value = os.environ.get(name)
        if not value:
            continue
        if name == "PGPASSWORD":
            secrets.append(value)
            continue
        try:
            password = psycopg.conninfo.conninfo_to_dict(value).get("password")
        except Exception:
            continue
        if password:
            secrets.append(str(password))
    return secrets


def _fail(error: BaseException, code: int) -> None:
    message = _one_line(error)
    if isinstance(error, psycopg.Error) and not isinstance(error, psycopg.OperationalError):
        message = f"database error: {message}"
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    """Run the ``pgqueue`` command line."""
    try:
        cli(args=argv, prog_name="pgqueue")
    except (ConfigurationError, InvalidJob) as exc:
        _fail(exc, 2)
    except (PgQueueError, psycopg.Error) as exc:
        _fail(exc, 1)
    except subprocess.CalledProcessError as exc:  # the embedded server failed to start or stop
        _fail(exc, 1)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise SystemExit(130) from None
    except Exception as exc:
        # alembic runs on SQLAlchemy, which wraps the driver's error: report the driver's.
        original = getattr(exc, "orig", None)
        if isinstance(original, psycopg.Error):
            _fail(original, 1)
        if type(exc).__module__.startswith("alembic"):
            _fail(exc, 1)
        raise
