"""Django's tasks framework on pgqueue vs django-tasks-db: ``python -m benchmarks.django_tasks``.

The same Django project as the tests (``tests/django``: settings ``djproject.settings``, tasks
in ``shop/tasks.py``), on a throwaway database, both backends in the same run:

- enqueue: N Django ``@task`` enqueues, each in a ``transaction.atomic()`` of its own (1 job per
  transaction), pgqueue's ``TaskBackend`` vs django-tasks-db's ``DatabaseBackend``;
- drain: N no-op tasks run by each backend's own worker command in burst mode
  (``manage.py pgqueue_work --burst`` vs ``manage.py db_worker --batch``), timed from the
  process start to its exit, and from the first task's start to the last one's end as the
  database recorded them (process start-up excluded).

Options: ``--jobs N`` (default 1000; under a minute in all on two busy cores, most of it
django-tasks-db's drain), ``--concurrency``
of the pgqueue worker (default 100), ``--dsn`` (default ``$PGQUEUE_BENCH_DSN``, else the local
server).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from .harness import describe_server, resolve_dsn, throwaway_database

PROJECT = Path(__file__).resolve().parent.parent / "tests" / "django"


def manage(dsn: str, *args: str) -> float:
    """Run ``manage.py ARGS`` on the database; return its wall time in seconds."""
    env = {**os.environ, "PGQUEUE_DJANGO_DSN": dsn, "DJANGO_SETTINGS_MODULE": "djproject.settings"}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "manage.py", *args], cwd=PROJECT, env=env, check=True, capture_output=True
    )
    return time.perf_counter() - started


def setup_django(dsn: str) -> None:
    sys.path.insert(0, str(PROJECT))
    import django
    import djproject.settings as project
    from django.conf import settings

    values = {name: getattr(project, name) for name in dir(project) if name.isupper()}
    values["DATABASES"] = {"default": project.database(dsn)}
    settings.configure(**values)
    django.setup()


def enqueue_rate(task: Any, jobs: int) -> float:
    """Jobs per second, one ``enqueue()`` per ``transaction.atomic()``."""
    from django.db import transaction

    started = time.perf_counter()
    for _ in range(jobs):
        with transaction.atomic():
            task.enqueue()
    return jobs / (time.perf_counter() - started)


def span(conn: psycopg.Connection[Any], table: str, jobs: int) -> float:
    """Jobs per second between the first start and the last finish the database recorded."""
    row = conn.execute(
        f"SELECT count(*), extract(epoch FROM max(finished_at) - min(started_at)) FROM {table} "
        "WHERE finished_at IS NOT NULL"
    ).fetchone()
    assert row is not None
    done, seconds = row
    if done != jobs:
        raise SystemExit(f"{table}: {done} of {jobs} jobs finished")
    return jobs / float(seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--dsn", default=None)
    options = parser.parse_args(argv)
    server = resolve_dsn(options.dsn)
    n = options.jobs
    print(f"# Django tasks: pgqueue vs django-tasks-db ({n} jobs each)\n", file=sys.stderr)
    with throwaway_database(server) as dsn:
        manage(dsn, "pgqueue_migrate")
        manage(dsn, "migrate", "django_tasks_database", "--verbosity", "0")
        setup_django(dsn)
        from django.db import connections
        from shop import tasks

        from pgqueue.contrib.django.djangoapp import get_app

        print("enqueue...", file=sys.stderr)
        enqueue_rate(tasks.noop_task, 50)  # warm both paths up: connections, statements
        enqueue_rate(tasks.db_noop_task, 50)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("TRUNCATE pgqueue.job; TRUNCATE django_tasks_database_dbtaskresult")
        pgq_enqueue = enqueue_rate(tasks.noop_task, n)
        db_enqueue = enqueue_rate(tasks.db_noop_task, n)
        get_app().close()
        connections.close_all()

        print("drain...", file=sys.stderr)
        pgq_wall = n / manage(
            dsn,
            "pgqueue_work",
            "--burst",
            "--concurrency",
            str(options.concurrency),
            "--log-level",
            "warning",
        )
        db_wall = n / manage(
            dsn,
            "db_worker",
            "--batch",
            "--backend",
            "db",
            "--interval",
            "0",
            "--no-startup-delay",
            "--verbosity",
            "0",
        )
        with psycopg.connect(dsn, autocommit=True) as conn:
            pgq_span = span(conn, "pgqueue.job", n)
            db_span = span(conn, "django_tasks_database_dbtaskresult", n)

    rows = [
        ("enqueue, 1 job per transaction.atomic()", pgq_enqueue, db_enqueue),
        ("drain, burst worker process (start-up included)", pgq_wall, db_wall),
        ("drain, first start to last finish", pgq_span, db_span),
    ]
    print(
        f"Server: {describe_server(server)}; {n} jobs per figure; "
        f"pgqueue_work --concurrency {options.concurrency}"
    )
    print()
    print("| jobs/s | pgqueue TaskBackend | django-tasks-db | ratio |")
    print("|---|---:|---:|---:|")
    for name, ours, theirs in rows:
        print(f"| {name} | {ours:,.0f} | {theirs:,.0f} | {ours / theirs:.1f}x |")


if __name__ == "__main__":
    main()
