"""``manage.py pgqueue_migrate`` and ``manage.py pgqueue_work`` as real processes, the work flags
generated from pgqueue's settings, and the tasks API names checked against Django 6's."""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django_tasks import TaskResultStatus, default_task_backend
from djproject.testing import HERE
from shop import tasks

from pgqueue.contrib.django.djangoapp import DjangoApp
from pgqueue.contrib.django.options import work_settings
from pgqueue.settings import WorkerConfig, flag_settings


def manage(dsn: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PGQUEUE_DJANGO_DSN": dsn, "DJANGO_SETTINGS_MODULE": "djproject.settings"}
    env.pop("PGQUEUE_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.timeout(90)
def test_migrate_then_work_in_real_processes(empty_dsn: str) -> None:
    unmigrated = manage(empty_dsn, "pgqueue_work", "--burst")
    assert unmigrated.returncode == 1 and "manage.py pgqueue_migrate" in unmigrated.stderr, unmigrated.stderr
    check = manage(empty_dsn, "pgqueue_migrate", "--check")
    assert check.returncode == 1, check.stdout + check.stderr
    migrated = manage(empty_dsn, "pgqueue_migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert manage(empty_dsn, "pgqueue_migrate").returncode == 0  # idempotent
    assert manage(empty_dsn, "pgqueue_migrate", "--check").returncode == 0

    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, shipped boolean NOT NULL DEFAULT false)")
        conn.execute("INSERT INTO orders (id) VALUES (1)")
    from django.conf import settings
    from djproject.settings import database

    from pgqueue.contrib.django.djangoapp import get_app

    settings.DATABASES["default"].update(database(empty_dsn))
    app = get_app()
    app.reconfigure()
    try:
        with transaction.atomic():
            shipped = tasks.ship_order.enqueue(order_id=1)
            result = tasks.calculate_meaning_of_life.enqueue()
            failing = tasks.failing_task_value_error.using(queue_name="queue-1").enqueue()
        worker = manage(
            empty_dsn,
            "pgqueue_work",
            "--burst",
            "--processes",
            "2",
            "--concurrency",
            "3",
            "--poll-interval",
            "0.2",
        )
        assert worker.returncode == 0, worker.stderr
        assert shipped is not None and app.get_job(shipped).output == {"shipped": 1}
        assert default_task_backend.get_result(result.id).return_value == 42
        failed = default_task_backend.get_result(failing.id)
        assert failed.status == TaskResultStatus.FAILED and failed.errors[0].exception_class is ValueError
    finally:
        app.close()
        from django.db import connections

        connections.close_all()


@pytest.mark.timeout(30)
def test_work_flags_are_those_of_pgqueue_work(empty_dsn: str) -> None:
    help_text = manage(empty_dsn, "pgqueue_work", "--help").stdout
    for _, _, spec in flag_settings():
        assert spec.flag in help_text
        assert spec.off is None or spec.off in help_text
    bad = manage(empty_dsn, "pgqueue_work", "--concurrency", "0")
    assert bad.returncode != 0 and "concurrency" in bad.stderr


@pytest.mark.timeout(30)
def test_the_core_never_imports_django() -> None:
    code = (
        "import sys, pgqueue, pgqueue.cli, pgqueue.contrib\n"
        "assert not [m for m in sys.modules if 'django' in m]"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


@pytest.mark.timeout(30)
def test_work_settings_precedence() -> None:
    config, process = work_settings(
        {"concurrency": "7", "no_listen": True, "queues": "a, b"}, {"concurrency": 3}
    )
    assert (config.concurrency, config.listen, list(config.queues or [])) == (7, False, ["a", "b"])
    config, process = work_settings({}, {"concurrency": 3, "poll_interval": 0.5})
    assert (config.concurrency, config.poll_interval, process.processes) == (3, 0.5, 1)
    assert config == WorkerConfig(concurrency=3, poll_interval=0.5)
    # Claiming ahead is on unless turned off, by a flag or by PGQUEUE["CLAIM_AHEAD"].
    assert work_settings({"claim_ahead": None}, {})[0].claim_ahead is True
    assert work_settings({"claim_ahead": False}, {})[0].claim_ahead is False
    assert work_settings({"claim_ahead": None}, {"claim_ahead": False})[0].claim_ahead is False
    with pytest.raises(CommandError, match="poll_interval"):
        work_settings({"poll_interval": "-1"}, {})
    with pytest.raises(CommandError, match="concurrency"):
        call_command("pgqueue_work", concurrency=0)


@pytest.mark.timeout(30)
def test_queues_include_the_task_backends(project: DjangoApp) -> None:
    assert project.queues == ["default", "queue-1"]


def _imports(tree: ast.AST, *module_prefixes: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(module_prefixes):
            found.setdefault(node.module, set()).update(alias.name for alias in node.names)
    return found


@pytest.mark.timeout(30)
def test_tasks_api_names_exist_in_django_6_and_the_backport() -> None:
    """The names pgqueue imports from ``django.tasks`` (Django 6) are those django-tasks-db's compat
    module imports from it (that module runs on Django 6 in its CI) or documented in Django 6.0's
    reference (``InvalidTask``); each backport name exists, at the same module path under
    ``django_tasks``."""
    ours = ast.parse(Path(importlib.util.find_spec("pgqueue.contrib.django.tasks_api").origin).read_text())  # type: ignore[arg-type]
    theirs = ast.parse(Path(importlib.util.find_spec("django_tasks_db.compat").origin).read_text())  # type: ignore[arg-type]
    documented = {"django.tasks.exceptions": {"InvalidTask"}}
    django6 = _imports(ours, "django.tasks", "django.utils.json")
    known = _imports(theirs, "django.tasks", "django.utils.json")
    assert django6, "no django.tasks imports found"
    for module, names in django6.items():
        missing = names - known.get(module, set()) - documented.get(module, set())
        assert not missing, f"{module}: {missing} are neither in django-tasks-db's compat nor documented"
    backport = _imports(ours, "django_tasks")
    for module, names in backport.items():
        imported: Any = importlib.import_module(module)
        assert all(hasattr(imported, name) for name in names), (module, names)
        twin = (
            "django.utils.json"
            if module == "django_tasks.utils"
            else module.replace("django_tasks", "django.tasks", 1)
        )
        renamed = {"InvalidTaskError": "InvalidTask"}
        assert {renamed.get(n, n) for n in names} <= django6.get(twin, set()), (module, names)
