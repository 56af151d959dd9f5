"""The Django project of the tests and the benchmark: pgqueue's app, its task backend, and
django-tasks-db's backend to compare with. The database comes from ``PGQUEUE_DJANGO_DSN``."""

from __future__ import annotations

import os
from typing import Any

import psycopg


def database(dsn: str) -> dict[str, Any]:
    """``DATABASES["default"]`` for a libpq DSN or URL."""
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": info.get("dbname", "postgres"),
        "USER": info.get("user", ""),
        "PASSWORD": info.get("password", ""),
        "HOST": info.get("host", ""),
        "PORT": info.get("port", ""),
        "OPTIONS": {},
    }


SECRET_KEY = "tests-only"
USE_TZ = True
DEBUG = False
INSTALLED_APPS = ["django_tasks", "django_tasks_db", "pgqueue.contrib.django", "shop"]
DATABASES = {"default": database(os.environ.get("PGQUEUE_DJANGO_DSN", "dbname=postgres"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
PGQUEUE = {"CONCURRENCY": 4, "POLL_INTERVAL": 0.2}
TASKS = {
    "default": {"BACKEND": "pgqueue.contrib.django.TaskBackend", "QUEUES": ["default", "queue-1"]},
    "retrying": {
        "BACKEND": "pgqueue.contrib.django.TaskBackend",
        "OPTIONS": {"max_attempts": 3, "retry_delay": 0, "retry_backoff": False},
    },
    "db": {"BACKEND": "django_tasks_db.DatabaseBackend"},
}
LOGGING = {"version": 1, "disable_existing_loggers": False}
