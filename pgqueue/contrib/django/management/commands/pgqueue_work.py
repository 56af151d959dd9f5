"""``manage.py pgqueue_work``: run a pgqueue worker for the project.

It imports every installed app's ``tasks`` module (where tasks are registered on
``pgqueue.contrib.django.app``, or defined with Django's ``@task`` for the pgqueue task backend),
then works the queues given by ``--queues``, else ``PGQUEUE["QUEUES"]``, else those of the
registered tasks and of the pgqueue task backends. The flags are those of ``pgqueue work``;
``PGQUEUE`` keys (``CONCURRENCY``...) are their defaults.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.module_loading import autodiscover_modules

from pgqueue import logs
from pgqueue.contrib.django.conf import worker_defaults
from pgqueue.contrib.django.djangoapp import TASK_BACKENDS, DjangoApp, get_app
from pgqueue.contrib.django.options import add_work_arguments, work_settings
from pgqueue.db import ops
from pgqueue.db.driver import run
from pgqueue.errors import SchemaOutOfDate
from pgqueue.settings import ProcessSettings, WorkerConfig, worker_argv


class Command(BaseCommand):  # type: ignore[misc]
    help = "Run pgqueue jobs: a worker process, or --processes N of them under a supervisor."

    def add_arguments(self, parser: CommandParser) -> None:
        add_work_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        config, process = work_settings(options, worker_defaults())
        logs.setup(process.log_level, process.log_format)
        app = get_app()
        if config.queues is None:
            config = dataclasses.replace(config, queues=app.queues or None)
        if process.processes > 1:
            raise SystemExit(_supervise(config, process))
        load_tasks(app)
        try:
            with app.connect("pgqueue-cli") as conn:
                run(conn, ops.check_schema(app.schema))
        except SchemaOutOfDate as exc:
            raise CommandError(f"{exc} (here: python manage.py pgqueue_migrate)") from None
        try:
            app.run_worker(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config)})
        finally:
            app.close()


def load_tasks(app: DjangoApp) -> None:
    """Import each installed app's ``tasks`` module, and make the project's pgqueue task backends
    (which register the handler of Django's tasks on ``app``)."""
    autodiscover_modules("tasks")
    aliases = [
        alias
        for alias, params in (getattr(settings, "TASKS", None) or {}).items()
        if isinstance(params, dict) and params.get("BACKEND") in TASK_BACKENDS
    ]
    if aliases:
        from pgqueue.contrib.django.tasks_api import task_backends

        for alias in aliases:
            task_backends[alias]


def _supervise(config: WorkerConfig, process: ProcessSettings) -> int:
    from pgqueue.supervisor import Supervisor

    one = dataclasses.replace(process, processes=1)
    script = sys.argv[0]
    # Children run this same command: through manage.py when that is how it was started.
    if script.endswith(".py") and os.path.isfile(script):
        prefix = [sys.executable, os.path.abspath(script)]
    else:
        prefix = [sys.executable, "-m", "django"]
    command = [*prefix, "pgqueue_work", *worker_argv(config, one)]
    return Supervisor(command, process.processes, burst=config.burst).run()
