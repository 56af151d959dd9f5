"""``pgqueue work``: run a user's App, in one worker process or several under a supervisor.

Its flags are generated from the settings in :mod:`pgqueue.settings` (see ``options.py``).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import sys
import time
from typing import Annotated, Any

import psycopg
import typer

from .. import logs
from ..app import App
from ..db import ops
from ..db.driver import run
from ..errors import ConfigurationError
from ..settings import (
    ProcessSettings,
    WorkerConfig,
    export,
    export_database_url,
    export_schema,
    worker_argv,
)
from .common import DatabaseUrl, Schema, connect
from .options import with_work_options

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


def _check_schema(url: str, schema: str, attempts: int = 3) -> None:
    """Refuse to start on an out-of-date schema. A connection lost on the way (a restart, a
    terminated backend) is tried again a few times; a database that stays out of reach is an error."""
    for attempt in range(1, attempts + 1):
        try:
            with connect(url) as conn:
                run(conn, ops.check_schema(schema))
            return
        except psycopg.OperationalError:
            if attempt == attempts:
                raise
            time.sleep(0.5 * attempt)


@with_work_options
def work(
    target: Annotated[
        str, typer.Argument(metavar="MODULE:APP", help="Where the App is, e.g. myproject.tasks:app")
    ],
    database_url: DatabaseUrl = None,
    schema: Schema = None,
    *,
    config: WorkerConfig,
    process: ProcessSettings,
) -> None:
    """Run jobs: a worker process, or --processes N of them under a supervisor."""
    schema_flag = schema
    schema = export(database_url, schema)
    logs.setup(process.log_level, process.log_format)
    app = load_app(target)
    if app.schema != schema:
        if schema_flag is not None:
            raise ConfigurationError(
                f"the app in {target} uses schema {app.schema!r}, not {schema!r}: drop its schema= argument "
                "or pass the same --schema"
            )
        schema = app.schema
        export_schema(schema)
    if process.processes > 1:
        # Resolve once, so every child uses the same database (and the embedded server starts once).
        url = app.database_url
        export_database_url(url)
        _check_schema(url, schema)
        raise typer.Exit(supervise(target, config, process))
    _check_schema(app.database_url, schema)
    if config.metrics_port is not None:
        try:
            from ..metrics import instrument
        except ImportError as exc:
            raise ConfigurationError(
                f"--metrics-port needs the metrics extra: pip install 'pgqueue[metrics]' ({exc})"
            ) from None
        instrument(app)
    try:
        app.run_worker(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config)})
    finally:
        app.close()


def child_command(target: str, config: WorkerConfig, process: ProcessSettings) -> list[str]:
    """The command line of one of the worker processes a supervisor runs for these settings."""
    one = dataclasses.replace(process, processes=1)
    return [sys.executable, "-m", "pgqueue", "work", target, *worker_argv(config, one)]


def supervise(target: str, config: WorkerConfig, process: ProcessSettings) -> int:
    """Run ``process.processes`` children of ``pgqueue work ... --processes 1`` with the same settings."""
    from ..supervisor import Supervisor

    command = child_command(target, config, process)
    return Supervisor(command, process.processes, burst=config.burst).run()
