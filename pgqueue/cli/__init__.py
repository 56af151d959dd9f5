"""The ``pgqueue`` command: parse flags, call the library, print the outcome.

Every command takes ``--database-url`` and ``--schema``. They are exported as
``PGQUEUE_DATABASE_URL`` and ``PGQUEUE_SCHEMA`` before a user's app module is imported, so
``pgqueue.App()`` there, and every worker process started here, sees them. Database:
``--database-url`` > ``PGQUEUE_DATABASE_URL`` > ``DATABASE_URL`` > the embedded server.
Errors are one line on stderr (exit code 2 for bad settings, 1 for the rest); a password
is never printed.

One module per topic: ``schema`` (migrate, grants), ``work``, ``jobs`` (status, show), ``bulk``
(cancel, retry, delete, redrive), ``listing`` (jobs), ``doctor``, ``embedded`` (the embedded
server, and the demo that runs on it).
"""

from __future__ import annotations

import subprocess
import sys

import psycopg
import typer

from .. import logs
from ..errors import ConfigurationError, InvalidJob, PgQueueError
from ..settings import known_passwords
from . import bulk, dashboard, doctor, embedded, jobs, listing, queues, schema, work
from .schedules import schedules_cli
from .work import load_app

__all__ = ["cli", "load_app", "main"]

cli = typer.Typer(
    name="pgqueue",
    help="pgqueue: a PostgreSQL-native background job queue.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
for command in (
    schema.migrate,
    schema.grants,
    work.work,
    jobs.status,
    jobs.show,
    bulk.retry,
    bulk.cancel,
    bulk.delete,
    bulk.redrive,
    embedded.demo,
    dashboard.dashboard,
    doctor.doctor,
    listing.jobs,
):
    cli.command()(command)
cli.add_typer(embedded.embedded_cli, name="embedded")
cli.add_typer(queues.queue_cli, name="queue")
cli.add_typer(schedules_cli, name="schedules")


def _one_line(error: BaseException) -> str:
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    text = text or type(error).__name__
    for secret in known_passwords():
        text = text.replace(secret, "***")
    return logs.scrub(text)


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
